export declare const CATALOG: Array<[string, string[]]>;
export declare const TEARDOWN: Set<string>;
export declare const KONG_36_MISSING: Set<string>;
