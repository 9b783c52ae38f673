/** Test harness: per-test databases on the real Postgres, and running real processes. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import pg from 'pg';
import { CATALOG, KONG_36_MISSING, KONG_SQL, TEARDOWN } from '../kong-standin/catalog.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The program under test: this run's private build (global setup), else dist/. */
export const CLI = process.env.KDI_CLI ?? path.join(ROOT, 'dist/cli.js');
export const STANDIN_BIN = path.join(ROOT, 'test/kong-standin/bin');
export const FIXTURES = path.join(ROOT, 'test/fixtures/kong-cli-3.7.1');

export interface PgAdmin {
  host: string;
  port: number;
  user: string;
  password: string;
}

export function admin(): PgAdmin {
  const url = process.env.KDI_TEST_PG_URL ?? process.env.TEST_DATABASE_URL;
  if (!url) throw new Error('KDI_TEST_PG_URL is not set: run the tests through vitest (global setup starts Postgres)');
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
}

export async function adminQuery<T extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
  database = 'postgres',
  target: PgAdmin = admin(),
): Promise<pg.QueryResult<T>> {
  const c = new pg.Client({ ...target, database });
  await c.connect();
  try {
    return await c.query<T>(sql, params);
  } finally {
    await c.end();
  }
}

export const KONG_PASSWORD = 'S3cr3t-kong-pw-Zq9!';

export interface TestDb {
  name: string;
  user: string;
  password: string;
  host: string;
  port: number;
  env(extra?: Record<string, string>): Record<string, string>;
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T>>;
  dir: string;
}

/** A fresh database owned by its own role (the password is a secret the tests look for). */
export async function createDb(target: PgAdmin = admin()): Promise<TestDb> {
  const id = randomBytes(5).toString('hex');
  const name = `kong_${id}`;
  const user = `kong_${id}`;
  await adminQuery(`CREATE ROLE ${user} LOGIN PASSWORD '${KONG_PASSWORD}'`, [], 'postgres', target);
  await adminQuery(`CREATE DATABASE ${name} OWNER ${user}`, [], 'postgres', target);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kdi-${id}-`));
  // a used Kong prefix, as in the recorded runs (a missing one adds a line to Kong's stdout)
  fs.mkdirSync(path.join(dir, 'kong-prefix'));
  const db: TestDb = {
    name,
    user,
    password: KONG_PASSWORD,
    host: target.host,
    port: target.port,
    dir,
    env: (extra = {}) => ({
      PATH: `${STANDIN_BIN}:${process.env.PATH}`,
      HOME: dir,
      TMPDIR: dir,
      KONG_DATABASE: 'postgres',
      KONG_PG_HOST: target.host,
      KONG_PG_PORT: String(target.port),
      KONG_PG_USER: user,
      KONG_PG_PASSWORD: KONG_PASSWORD,
      KONG_PG_DATABASE: name,
      KONG_PREFIX: path.join(dir, 'kong-prefix'),
      KONG_STANDIN_LOG: path.join(dir, 'standin.log'),
      KONG_DB_INIT_STATUS_FILE: path.join(dir, 'status.json'),
      ...extra,
    }),
    query: (sql, params) => adminQuery(sql, params, name, target),
  };
  return db;
}

export interface Run {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export function spawnCli(args: string[], env: Record<string, string>, opts: { detached?: boolean } = {}): ResultPromise {
  return execa(process.execPath, [CLI, ...args], { env, extendEnv: false, reject: false, detached: opts.detached, stdin: 'ignore' });
}

export async function runCli(args: string[], env: Record<string, string>): Promise<Run> {
  const t = Date.now();
  const r = await spawnCli(args, env);
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), durationMs: Date.now() - t };
}

export async function runKong(args: string[], env: Record<string, string>): Promise<Run> {
  const t = Date.now();
  const r = await execa(path.join(STANDIN_BIN, 'kong'), args, { env, extendEnv: false, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), durationMs: Date.now() - t };
}

export interface StandinEvent {
  pid: number;
  cmd: string;
  ev: string;
  /** POD_NAME of the environment Kong ran in. */
  pod?: string;
  id?: string;
  code?: number;
  /** `worker` events: the pids of the whole chain, top first. */
  chain?: number[];
}

/** Whether a process is still running (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Every stand-in process (all chains) that this test database's runs started. */
export function standinPids(db: TestDb): number[] {
  return [...new Set(standinEvents(db).flatMap((e) => e.chain ?? [e.pid]))];
}

/** Poll until cond() holds or the deadline passes (for waiting on processes, not for assertions). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function standinEvents(db: TestDb): StandinEvent[] {
  const f = path.join(db.dir, 'standin.log');
  if (!fs.existsSync(f)) return [];
  return fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StandinEvent);
}

/** Put the database in a named state, the way Kong would have left it. */
export async function seed(db: TestDb, shape: 'current' | '3.6' | 'pending' | 'pending+new'): Promise<void> {
  const sqls = [
    `CREATE TABLE schema_meta (key TEXT, subsystem TEXT, last_executed TEXT, executed TEXT[], pending TEXT[], PRIMARY KEY (key, subsystem))`,
    `CREATE TABLE locks (key TEXT PRIMARY KEY, owner TEXT, ttl TIMESTAMP WITH TIME ZONE)`,
    `CREATE INDEX locks_ttl_idx ON locks (ttl)`,
    `CREATE TABLE services (id uuid PRIMARY KEY, name text UNIQUE, host text)`,
    `CREATE TABLE routes (id uuid PRIMARY KEY, service_id uuid REFERENCES services (id), paths text[])`,
    `CREATE TABLE standin_runs (id bigserial PRIMARY KEY, subsystem text, name text, phase text, pid int, at timestamptz DEFAULT now())`,
  ];
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  try {
    for (const s of sqls) await c.query(s);
    for (const [sub, migs] of CATALOG) {
      const executed: string[] = [];
      const pending: string[] = [];
      for (const m of migs) {
        const id = `${sub}/${m}`;
        if (shape !== 'current' && KONG_36_MISSING.has(id)) {
          // pending: `up` ran (core 023 executed, ai-proxy 001 waits for finish)
          if (shape === 'pending' || shape === 'pending+new') {
            if (TEARDOWN.has(id)) pending.push(m);
            else if (shape === 'pending') executed.push(m);
          }
          continue;
        }
        executed.push(m);
      }
      if (executed.length === 0 && pending.length === 0) continue;
      const last = [...migs].reverse().find((m) => executed.includes(m) || pending.includes(m))!;
      await c.query(`INSERT INTO schema_meta VALUES ('schema_meta', $1, $2, $3, $4)`, [sub, last, executed, pending]);
    }
  } finally {
    await c.end();
  }
}

export async function listCode(db: TestDb): Promise<number> {
  return (await runKong(['migrations', 'list'], db.env())).exitCode;
}

export function readStatus(db: TestDb): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(db.dir, 'status.json'), 'utf8')) as Record<string, unknown>;
}

/**
 * A TCP proxy on 127.0.0.1 for fault tests: forwards to the target until `freeze()`, after which
 * it keeps every connection open but forwards nothing (a stalled server or network, as seen from
 * the client); new connections are still forwarded unless `freezeNew` is set.
 */
export interface StallProxy {
  port: number;
  /** Local ports of the proxy's connections to the target (a backend's client_port when it came through us). */
  upstreamPorts(): number[];
  freeze(opts?: { freezeNew?: boolean }): void;
  close(): Promise<void>;
}

export async function stallProxy(target: { host: string; port: number }): Promise<StallProxy> {
  const net = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  const frozen = new Set<import('node:net').Socket>();
  let freezeNew = false;
  const ports: number[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    upstream.on('connect', () => ports.push(upstream.localPort!));
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    const pipe = (from: import('node:net').Socket, to: import('node:net').Socket) =>
      from.on('data', (d) => {
        if (!frozen.has(from) && !freezeNew) to.write(d);
      });
    pipe(client, upstream);
    pipe(upstream, client);
    // a stalled network does not carry a close either: frozen connections stay open on the server
    client.on('close', () => {
      if (!frozen.has(client)) upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as import('node:net').AddressInfo).port,
    upstreamPorts: () => [...ports],
    freeze(opts = {}) {
      for (const s of sockets) frozen.add(s);
      if (opts.freezeNew) freezeNew = true;
    },
    async close() {
      frozen.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** SIGKILL a whole pod: our process group and every Kong stand-in process it started. */
export function killPod(db: TestDb, cliPid: number): void {
  try {
    process.kill(-cliPid, 'SIGKILL');
  } catch {
    // gone
  }
  // each Kong runs in a process group of its own, led by the spawned (top) process
  for (const e of standinEvents(db).filter((x) => x.ev === 'start')) {
    try {
      process.kill(-e.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** The database's owner role (Kong's role): what Kong itself may do, unlike `db.query` (superuser). */
export async function kongQuery<T extends pg.QueryResultRow = pg.QueryResultRow>(db: TestDb, sql: string, params?: unknown[]): Promise<pg.QueryResult<T>> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  try {
    return await c.query<T>(sql, params);
  } finally {
    await c.end();
  }
}

/**
 * Put the database in a named state exactly as Kong 3.7.1 leaves it (unlike `seed`, which writes
 * the rows directly): Kong's own CREATE TABLE statements for `schema_meta` and `locks`, and the
 * schema_meta rows made by replaying Kong's record_migration SQL in Kong's order, so that executed
 * and pending are NULL or '{}' where Kong leaves them so (e.g. `session | {…} | NULL`,
 * `ai-proxy | NULL | {001_360_to_370}`). Shapes, as in the recorded runs:
 * - `new`: a Kong 3.6 bootstrap (core 023_360_to_370 and ai-proxy 001_360_to_370 not run)
 * - `pending`: `new`, then 3.7.1's `up` (core 023 executed, ai-proxy 001 pending)
 * - `pending+new`: `new` with only ai-proxy 001 run by `up` (core 023 still new)
 * - `current`: a 3.7.1 bootstrap
 * Also creates the stand-in's own tables (standin_runs, and the few Kong tables its migrations touch).
 */
export async function seedKong(db: TestDb, shape: 'new' | 'pending' | 'pending+new' | 'current'): Promise<void> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  try {
    await c.query(KONG_SQL.schemaMeta);
    await c.query(KONG_SQL.locks);
    await c.query(`CREATE TABLE services (id uuid PRIMARY KEY, name text UNIQUE, host text)`);
    await c.query(`CREATE TABLE routes (id uuid PRIMARY KEY, service_id uuid REFERENCES services (id), paths text[])`);
    await c.query(`CREATE TABLE standin_runs (id bigserial PRIMARY KEY, subsystem text, name text, phase text, pid int, at timestamptz DEFAULT now())`);
    await c.query(`CREATE TABLE clustering_data_planes (id uuid PRIMARY KEY, hostname text, ip text, last_seen timestamptz, config_hash text)`);
    const later: Array<[string, string]> = [];
    for (const [sub, migs] of CATALOG) {
      for (const m of migs) {
        const id = `${sub}/${m}`;
        if (shape !== 'current' && KONG_36_MISSING.has(id)) {
          later.push([sub, m]);
          continue;
        }
        // bootstrap: a migration with a teardown is recorded pending, torn down, recorded again
        if (TEARDOWN.has(id)) {
          await c.query(KONG_SQL.record(sub, m, 'pending'));
          await c.query(KONG_SQL.record(sub, m, 'teardown'));
        } else {
          await c.query(KONG_SQL.record(sub, m, 'executed'));
        }
      }
    }
    if (shape === 'pending' || shape === 'pending+new') {
      for (const [sub, m] of later) {
        if (shape === 'pending+new' && !TEARDOWN.has(`${sub}/${m}`)) continue;
        await c.query(KONG_SQL.record(sub, m, TEARDOWN.has(`${sub}/${m}`) ? 'pending' : 'executed'));
      }
    }
    if (shape === 'pending' || shape === 'current') {
      await c.query(
        `CREATE TABLE clustering_rpc_requests (id bigserial PRIMARY KEY, node_id uuid NOT NULL, reply_to uuid NOT NULL, ttl timestamptz NOT NULL, payload json NOT NULL)`,
      );
      await c.query(`ALTER TABLE clustering_data_planes ADD rpc_capabilities text[]`);
    }
  } finally {
    await c.end();
  }
}

export interface KongSnapshot {
  /** null: no schema_meta table. executed/pending as PostgreSQL prints them ('{a,b}', '{}') or 'NULL'. */
  schemaMeta: Array<{ subsystem: string; executed: string; pending: string }> | null;
  /** null: no locks table. secondsLeft: ttl - now (negative: expired). */
  locks: Array<{ key: string; owner: string; secondsLeft: number }> | null;
}

/** Kong's `schema_meta` rows and `locks` rows, in the form the recorded notes give them (read as Kong's role, one connection). */
export async function kongSnapshot(db: TestDb): Promise<KongSnapshot> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  try {
    const t = (
      await c.query<{ sm: boolean; lk: boolean }>(`SELECT to_regclass('public.schema_meta') IS NOT NULL AS sm, to_regclass('public.locks') IS NOT NULL AS lk`)
    ).rows[0]!;
    const schemaMeta = t.sm
      ? (
          await c.query<{ subsystem: string; executed: string; pending: string }>(
            `SELECT subsystem, COALESCE(executed::text, 'NULL') AS executed, COALESCE(pending::text, 'NULL') AS pending
               FROM public.schema_meta WHERE key = 'schema_meta' ORDER BY subsystem COLLATE "C"`,
          )
        ).rows
      : null;
    const locks = t.lk
      ? (
          await c.query<{ key: string; owner: string; secondsLeft: number }>(
            `SELECT key, owner, EXTRACT(EPOCH FROM ttl - now())::float8 AS "secondsLeft" FROM public.locks ORDER BY key`,
          )
        ).rows
      : null;
    return { schemaMeta, locks };
  } finally {
    await c.end();
  }
}
