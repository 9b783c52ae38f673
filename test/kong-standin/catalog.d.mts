export declare const CATALOG: Array<[string, string[]]>;
export declare const TEARDOWN: Set<string>;
export declare const KONG_36_MISSING: Set<string>;
export declare const CATALOGS: Record<string, { version: string; catalog: Array<[string, string[]]> }>;
export declare function selectCatalog(env: Record<string, string | undefined>): { version: string; catalog: Array<[string, string[]]> };
