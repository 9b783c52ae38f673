import fs from 'node:fs';
import path from 'node:path';
// Kong 3.7.1's migrations, in the order Kong runs them (from the recorded `kong migrations list`).
// Migrations with a teardown step are left "pending" by `up` and completed by `finish`.
export const CATALOG = [
  [
    'core',
    [
      '000_base',
      '003_100_to_110',
      '004_110_to_120',
      '005_120_to_130',
      '006_130_to_140',
      '007_140_to_150',
      '008_150_to_200',
      '009_200_to_210',
      '010_210_to_211',
      '011_212_to_213',
      '012_213_to_220',
      '013_220_to_230',
      '014_230_to_270',
      '015_270_to_280',
      '016_280_to_300',
      '017_300_to_310',
      '018_310_to_320',
      '019_320_to_330',
      '020_330_to_340',
      '021_340_to_350',
      '022_350_to_360',
      '023_360_to_370',
    ],
  ],
  ['acl', ['000_base_acl', '002_130_to_140', '003_200_to_210', '004_212_to_213']],
  ['acme', ['000_base_acme', '001_280_to_300', '002_320_to_330', '003_350_to_360']],
  ['ai-proxy', ['001_360_to_370']],
  ['basic-auth', ['000_base_basic_auth', '002_130_to_140', '003_200_to_210']],
  ['bot-detection', ['001_200_to_210']],
  ['hmac-auth', ['000_base_hmac_auth', '002_130_to_140', '003_200_to_210']],
  ['http-log', ['001_280_to_300']],
  ['ip-restriction', ['001_200_to_210']],
  ['jwt', ['000_base_jwt', '002_130_to_140', '003_200_to_210']],
  ['key-auth', ['000_base_key_auth', '002_130_to_140', '003_200_to_210', '004_320_to_330']],
  ['oauth2', ['000_base_oauth2', '003_130_to_140', '004_200_to_210', '005_210_to_211', '006_320_to_330', '007_320_to_330']],
  ['opentelemetry', ['001_331_to_332']],
  ['post-function', ['001_280_to_300']],
  ['pre-function', ['001_280_to_300']],
  ['rate-limiting', ['000_base_rate_limiting', '003_10_to_112', '004_200_to_210', '005_320_to_330', '006_350_to_360']],
  ['response-ratelimiting', ['000_base_response_rate_limiting', '001_350_to_360']],
  ['session', ['000_base_session', '001_add_ttl_index', '002_320_to_330']],
];

/**
 * The 22 migrations with a teardown step (recorded: 37-bootstrap-killed-000_base-unrecorded.07-up,
 * "66 migrations processed, 44 executed, 22 pending"). `up` records them as pending, `finish` runs
 * their teardown; `bootstrap` runs both steps in a row (pending record, teardown, teardown record).
 */
export const TEARDOWN = new Set([
  'core/005_120_to_130',
  'core/008_150_to_200',
  'core/009_200_to_210',
  'core/012_213_to_220',
  'core/016_280_to_300',
  'acl/003_200_to_210',
  'acl/004_212_to_213',
  'acme/003_350_to_360',
  'ai-proxy/001_360_to_370',
  'basic-auth/003_200_to_210',
  'bot-detection/001_200_to_210',
  'hmac-auth/003_200_to_210',
  'http-log/001_280_to_300',
  'ip-restriction/001_200_to_210',
  'jwt/003_200_to_210',
  'key-auth/003_200_to_210',
  'oauth2/004_200_to_210',
  'opentelemetry/001_331_to_332',
  'post-function/001_280_to_300',
  'pre-function/001_280_to_300',
  'rate-limiting/006_350_to_360',
  'response-ratelimiting/001_350_to_360',
]);

/** What Kong 3.6 leaves: everything but core 023_360_to_370 and ai-proxy 001_360_to_370. */
export const KONG_36_MISSING = new Set(['core/023_360_to_370', 'ai-proxy/001_360_to_370']);

/** The catalogs the stand-in can play (KONG_STANDIN_CATALOG), with the version `kong version` prints. */
export const CATALOGS = {
  '3.7.1': { version: '3.7.1', catalog: CATALOG },
  3.6: {
    version: '3.6.1',
    catalog: CATALOG.map(([sub, migs]) => [sub, migs.filter((m) => !KONG_36_MISSING.has(`${sub}/${m}`))]).filter(([, migs]) => migs.length > 0),
  },
};

/**
 * Custom plugins the way Kong finds them: a plugin named in KONG_PLUGINS whose files sit under a
 * KONG_LUA_PACKAGE_PATH root as kong/plugins/<name>/migrations/<migration>.lua (init.lua aside),
 * in file-name order (real Kong lists them in migrations/init.lua).
 */
function customPluginMigrations(env) {
  const plugins = (env.KONG_PLUGINS || 'bundled')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p && p !== 'bundled' && p !== 'off');
  const roots = (env.KONG_LUA_PACKAGE_PATH || '')
    .split(';')
    .map((e) => e.replace(/\/?\?.*$/, ''))
    .filter(Boolean);
  const out = [];
  for (const name of plugins) {
    for (const root of roots) {
      const dir = path.join(root, 'kong', 'plugins', name, 'migrations');
      if (!fs.existsSync(dir)) continue;
      const migs = fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.lua') && f !== 'init.lua')
        .sort()
        .map((f) => f.slice(0, -4));
      if (migs.length) out.push([name, migs]);
      break;
    }
  }
  return out;
}

/**
 * The catalog selected by KONG_STANDIN_CATALOG (default 3.7.1), plus custom-plugin migrations
 * (customPluginMigrations) and KONG_STANDIN_PLUGIN_MIGRATIONS ("sub/name,sub/name2", appended in
 * order), so tests can change a plugin's migration set without changing the version.
 */
export function selectCatalog(env) {
  const name = env.KONG_STANDIN_CATALOG || '3.7.1';
  const sel = CATALOGS[name];
  if (!sel) throw new Error(`KONG_STANDIN_CATALOG=${name}: use one of ${Object.keys(CATALOGS).join(', ')}`);
  const catalog = sel.catalog.map(([s, m]) => [s, [...m]]);
  catalog.push(...customPluginMigrations(env));
  for (const id of (env.KONG_STANDIN_PLUGIN_MIGRATIONS || '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [sub, mig] = id.split('/');
    const entry = catalog.find(([s]) => s === sub);
    if (entry) entry[1].push(mig);
    else catalog.push([sub, [mig]]);
  }
  return { version: sel.version, catalog };
}

/** A SQL string literal (Kong: pgmoon's escape_literal for strings). */
export const lit = (v) => `'${String(v).replace(/'/g, "''")}'`;

/**
 * Kong 3.7.1's own SQL for its tables (kong/db/strategies/postgres/connector.lua), byte for byte
 * where PostgreSQL's answer depends on it (an error position such as "(22)" in
 * `relation "locks" does not exist (22)` counts characters of the statement).
 */
export const KONG_SQL = {
  schemaMeta: `CREATE TABLE IF NOT EXISTS schema_meta (
      key            TEXT,
      subsystem      TEXT,
      last_executed  TEXT,
      executed       TEXT[],
      pending        TEXT[],

      PRIMARY KEY (key, subsystem)
    );`,
  locks: `BEGIN;
  CREATE TABLE IF NOT EXISTS locks (
    key    TEXT PRIMARY KEY,
    owner  TEXT,
    ttl    TIMESTAMP WITH TIME ZONE
  );
  CREATE INDEX IF NOT EXISTS locks_ttl_idx ON locks (ttl);
COMMIT;`,
  /** insert_lock: one transaction; the INSERT (result 3 of 4) affects 1 row when the lock was taken. */
  insertLock: (key, owner, ttlEpoch) => `BEGIN;
  DELETE FROM locks
        WHERE ttl < CURRENT_TIMESTAMP AT TIME ZONE 'UTC';
  INSERT INTO locks (key, owner, ttl)
       VALUES (${lit(key)}, ${lit(owner)}, TO_TIMESTAMP(${Number(Number(ttlEpoch).toFixed(3))}) AT TIME ZONE 'UTC')
  ON CONFLICT DO NOTHING;
COMMIT;`,
  readLock: (key) => `SELECT *
  FROM locks
 WHERE key = ${lit(key)}
   AND ttl >= CURRENT_TIMESTAMP AT TIME ZONE 'UTC'
 LIMIT 1;`,
  removeLock: (key, owner) => `DELETE
  FROM "locks"
 WHERE "key"   = ${lit(key)}
   AND "owner" = ${lit(owner)};`,
  /** record_migration(subsystem, name, state): state is executed, pending or teardown. */
  record: (sub, name, state) => {
    const n = lit(name);
    const arr = `'{${name}}'`;
    if (state === 'executed') {
      return `INSERT INTO schema_meta (key, subsystem, last_executed, executed)
     VALUES ('schema_meta', ${lit(sub)}, ${n}, ${arr})
ON CONFLICT (key, subsystem) DO UPDATE
        SET last_executed = EXCLUDED.last_executed,
            executed = ARRAY_APPEND(COALESCE(schema_meta.executed, ARRAY[]::TEXT[]), ${n});`;
    }
    if (state === 'pending') {
      return `INSERT INTO schema_meta (key, subsystem, pending)
     VALUES ('schema_meta', ${lit(sub)}, ${arr})
ON CONFLICT (key, subsystem) DO UPDATE
        SET pending = ARRAY_APPEND(schema_meta.pending, ${n});`;
    }
    if (state === 'teardown') {
      return `INSERT INTO schema_meta (key, subsystem, last_executed, executed)
     VALUES ('schema_meta', ${lit(sub)}, ${n}, ${arr})
ON CONFLICT (key, subsystem) DO UPDATE
        SET last_executed = EXCLUDED.last_executed,
            executed = ARRAY_APPEND(COALESCE(schema_meta.executed, ARRAY[]::TEXT[]), ${n}),
            pending  = ARRAY_REMOVE(COALESCE(schema_meta.pending,  ARRAY[]::TEXT[]), ${n});`;
    }
    throw new Error(`unknown 'state' argument: ${state}`);
  },
};

/** The tables of the stand-in's own migrations (real Kong creates 30 more; the stand-in only what tests touch). */
const RUNS = `CREATE TABLE IF NOT EXISTS standin_runs (id bigserial PRIMARY KEY, subsystem text, name text, phase text, pid int, at timestamptz DEFAULT now())`;
const MIGRATION_SQL = {
  // idempotent like Kong's (CREATE ... IF NOT EXISTS): 37-bootstrap-killed-000_base-unrecorded re-runs it without error
  'core/000_base': [
    `CREATE TABLE IF NOT EXISTS services (id uuid PRIMARY KEY, name text UNIQUE, host text)`,
    `CREATE TABLE IF NOT EXISTS routes (id uuid PRIMARY KEY, service_id uuid REFERENCES services (id), paths text[])`,
    RUNS,
  ],
  'core/012_213_to_220': [
    `CREATE TABLE IF NOT EXISTS "clustering_data_planes" (id uuid PRIMARY KEY, hostname text, ip text, last_seen timestamptz, config_hash text)`,
  ],
  // as Kong's 023 (34-new-blocked-by-pg-lock): waits for a lock on clustering_data_planes, idempotent
  'core/023_360_to_370': [
    `CREATE TABLE IF NOT EXISTS "clustering_rpc_requests" ("id" BIGSERIAL PRIMARY KEY, "node_id" UUID NOT NULL, "reply_to" UUID NOT NULL, "ttl" TIMESTAMP WITH TIME ZONE NOT NULL, "payload" JSON NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS "clustering_rpc_requests_node_id_idx" ON "clustering_rpc_requests" ("node_id")`,
    `DO $$
BEGIN
  ALTER TABLE IF EXISTS ONLY "clustering_data_planes" ADD "rpc_capabilities" TEXT[];
EXCEPTION WHEN DUPLICATE_COLUMN THEN
  -- Do nothing, accept existing state
END;
$$`,
  ],
};

/** The SQL statements of migration `sub/name`'s up step (each also logs itself in standin_runs). */
export function migrationUpSql(sub, name, pid) {
  return [...(MIGRATION_SQL[`${sub}/${name}`] || []), standinRun(sub, name, 'up', pid)];
}

/** One row in standin_runs: which migration step ran, in which process (tests count them). */
export function standinRun(sub, name, phase, pid) {
  return `INSERT INTO standin_runs (subsystem, name, phase, pid) VALUES (${lit(sub)}, ${lit(name)}, ${lit(phase)}, ${Number(pid)})`;
}
