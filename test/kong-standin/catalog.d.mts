export declare const CATALOG: Array<[string, string[]]>;
export declare const TEARDOWN: Set<string>;
export declare const KONG_36_MISSING: Set<string>;
export declare const CATALOGS: Record<string, { version: string; catalog: Array<[string, string[]]> }>;
export declare function selectCatalog(env: Record<string, string | undefined>): { version: string; catalog: Array<[string, string[]]> };
export declare function lit(v: unknown): string;
export declare const KONG_SQL: {
  schemaMeta: string;
  locks: string;
  insertLock(key: string, owner: string, ttlEpoch: number | string): string;
  readLock(key: string): string;
  removeLock(key: string, owner: string): string;
  record(sub: string, name: string, state: 'executed' | 'pending' | 'teardown'): string;
};
export declare function migrationUpSql(sub: string, name: string, pid: number): string[];
export declare function standinRun(sub: string, name: string, phase: string, pid: number): string;
