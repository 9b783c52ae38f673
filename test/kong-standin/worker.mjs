// The stand-in's worker: the last process of the chain (see kong.mjs), the one that migrates. It
// drives real `schema_meta` and `locks` tables in a real Postgres the way Kong 3.7.1 does (same
// SQL shapes, same unsafe ordering in bootstrap, same `locks` TTL, each migration and its
// schema_meta record committed separately), and prints what the recorded runs in
// test/fixtures/kong-cli-3.7.1 print. Its stdout is block-buffered unless it is a terminal: the
// output comes in one burst when it exits (and is lost when it is killed).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { TEARDOWN, selectCatalog } from './catalog.mjs';
import { argv, errorExit, event, loadConf, opt } from './common.mjs';

const { version: VERSION, catalog: CATALOG } = selectCatalog(process.env);
const NOT_LEADER = 'aborted: another node is performing database changes';
const NEEDS_BOOTSTRAP =
  "Database needs bootstrapping or is older than Kong 1.0.\n\n" +
  "To start a new installation from scratch, run 'kong migrations bootstrap'.\n\n" +
  'To migrate from a version older than 1.0, migrated to Kong 1.5.0 first. \n' +
  "If you still have 'apis' entities, you can convert them to Routes and Services\n" +
  "using the 'kong migrations migrate-apis' command in Kong 1.5.0.\n\n";

if (process.env.KONG_STANDIN_IGNORE_TERM) process.on('SIGTERM', () => event('worker-ignored-term'));

let buffered = '';
const out = (s = '') => {
  if (process.stdout.isTTY) process.stdout.write(s + '\n');
  else buffered += s + '\n';
};
const flush = () => {
  if (buffered) fs.writeSync(1, buffered);
  buffered = '';
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The pids of the chain from the top process down to this worker (for tests: no process survives). */
function chainPids() {
  const top = Number(process.env.KONG_STANDIN_TOP_PID);
  const pids = [process.pid];
  let p = process.ppid;
  for (let i = 0; i < 8 && p > 1; i++) {
    pids.unshift(p);
    if (p === top) break;
    try {
      p = Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]);
    } catch {
      break;
    }
  }
  return pids;
}

class KongError extends Error {}

function die(msg) {
  flush();
  errorExit(msg);
  event('exit', { code: 1, msg });
  process.exit(1);
}

const conf = loadConf();
const schema = conf.pg_schema || undefined;
const dbTimeout = Number(opt('--db-timeout', '')) * 1000 || Number(conf.pg_timeout || 5000);
const lockTtl = Number(opt('--lock-timeout', '60'));

/** KONG_STANDIN_BARRIER=DIR:N: wait until N workers arrived here (provokes Kong's races on purpose). */
async function barrier(point) {
  const spec = process.env.KONG_STANDIN_BARRIER;
  if (!spec) return;
  const i = spec.lastIndexOf(':');
  const dir = spec.slice(0, i);
  const n = Number(spec.slice(i + 1));
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${point}-${process.pid}`), '');
  const until = Date.now() + 60_000;
  for (;;) {
    const here = fs.readdirSync(dir).filter((f) => f.startsWith(`${point}-`)).length;
    if (here >= n) break;
    if (Date.now() > until) throw new KongError(`stand-in barrier ${point}: only ${here} of ${n} workers arrived within 60 s`);
    await sleep(5);
  }
  event('barrier', { point });
}

function connErr(e) {
  const c = e.code;
  if (c === '28P01' || c === '28000') return 'authentication exchange unsuccessful';
  if (c === 'ECONNREFUSED') return 'connection refused';
  if (c === 'ENOTFOUND' || c === 'EAI_AGAIN') {
    const h = conf.pg_host;
    return `[cosocket] DNS resolution failed: dns server error: 3 name error. Tried: ["(short)${h}:(na) - cache-miss","${h}:33 - cache-miss/querying/dns server error: 3 name error"]`;
  }
  if (/^[0-9A-Z]{5}$/.test(c || '')) return `FATAL: ${e.message}`;
  return e.message;
}

function sslOptions() {
  const verify = /^(on|true)$/.test(conf.pg_ssl_verify || '');
  if (!verify) return { rejectUnauthorized: false };
  const files = (conf.lua_ssl_trusted_certificate || '').split(',').map((f) => f.trim()).filter((f) => f && f !== 'system');
  return { rejectUnauthorized: true, ca: files.length ? files.map((f) => fs.readFileSync(f, 'utf8')) : undefined };
}

async function connect() {
  const client = new pg.Client({
    host: conf.pg_host || '127.0.0.1',
    port: Number(conf.pg_port || 5432),
    user: conf.pg_user || 'kong',
    password: conf.pg_password,
    database: conf.pg_database || 'kong',
    connectionTimeoutMillis: dbTimeout,
    ssl: /^(on|true)$/.test(conf.pg_ssl || '') ? sslOptions() : false,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SHOW server_version_num');
  } catch (e) {
    throw new KongError(`[PostgreSQL error] failed to retrieve PostgreSQL server_version_num: ${connErr(e)}`);
  }
  if (schema) await client.query(`SET SCHEMA '${schema.replace(/'/g, "''")}'`);
  return client;
}

async function q(client, sql, params) {
  try {
    return await client.query(sql, params);
  } catch (e) {
    throw new KongError(`[PostgreSQL error] ${e.severity || 'ERROR'}: ${e.message}`);
  }
}

/** Kong's schema state: null rows (no schema_meta table) means "needs bootstrap". */
async function schemaState(client) {
  const t = await q(client, 'SELECT table_name FROM information_schema.tables WHERE table_schema = CURRENT_SCHEMA');
  const names = new Set(t.rows.map((r) => r.table_name));
  const st = { needsBootstrap: false, executed: [], pending: [], new: [], missing: [] };
  let rows = null;
  if (names.has('schema_meta')) rows = (await q(client, "SELECT * FROM schema_meta WHERE key = 'schema_meta'")).rows;
  if (!rows) st.needsBootstrap = true;
  const byName = new Map((rows || []).map((r) => [r.subsystem, r]));
  for (const [sub, migs] of CATALOG) {
    const row = byName.get(sub);
    const s = { executed: [], pending: [], new: [], missing: [] };
    if (!row) s.new = [...migs];
    else {
      let n;
      migs.forEach((m, i) => {
        if (m === row.last_executed) n = i + 1;
        if ((row.executed || []).includes(m)) s.executed.push(m);
        else if ((row.pending || []).includes(m)) s.pending.push(m);
        else if (n === undefined || i >= n) s.new.push(m);
        else s.missing.push(m);
      });
    }
    for (const k of ['executed', 'pending', 'new', 'missing']) if (s[k].length) st[k].push([sub, s[k]]);
  }
  return st;
}

function fmt(list) {
  const w = Math.max(...list.map(([s]) => s.length));
  return list.map(([s, m]) => `${s.padStart(w)}: ${m.join(', ')}`).join('\n');
}

/** Kong's cluster mutex on the `locks` table (kong/db/init.lua + the postgres connector). */
async function clusterMutex(client, { ttl, noWait }, cb) {
  const owner = crypto.randomUUID();
  const until = (Date.now() / 1000 + ttl).toFixed(3);
  const ins = await q(
    client,
    `BEGIN;
  DELETE FROM locks WHERE ttl < CURRENT_TIMESTAMP AT TIME ZONE 'UTC';
  INSERT INTO locks (key, owner, ttl) VALUES ('migrations', '${owner}', TO_TIMESTAMP(${until}) AT TIME ZONE 'UTC') ON CONFLICT DO NOTHING;
COMMIT;`,
  );
  const acquired = Array.isArray(ins) ? ins[2].rowCount === 1 : false;
  if (!acquired) {
    if (noWait) return false;
    let step = 0.1;
    let elapsed = 0;
    while (elapsed < ttl) {
      await sleep(step * 1000);
      elapsed += step;
      if (elapsed >= ttl) break;
      const r = await q(client, "SELECT * FROM locks WHERE key = 'migrations' AND ttl >= CURRENT_TIMESTAMP AT TIME ZONE 'UTC' LIMIT 1");
      if (r.rows.length === 0) return false;
      step = Math.min(step * 3, 2);
    }
    throw new KongError('[PostgreSQL error] timeout');
  }
  try {
    await cb();
  } finally {
    await client.query('DELETE FROM locks WHERE key = $1 AND owner = $2', ['migrations', owner]).catch(() => {});
  }
  return true;
}

/** One migration's own transaction (Kong: the migration's `up`/`teardown`), committed on its own. */
async function runOne(client, sub, name, phase) {
  try {
    await client.query('BEGIN');
    if (phase === 'up' && sub === 'core' && name === '000_base') {
      // like Kong's base migration: real tables (no IF NOT EXISTS, so a second run fails)
      await client.query(`CREATE TABLE services (id uuid PRIMARY KEY, name text UNIQUE, host text)`);
      await client.query(`CREATE TABLE routes (id uuid PRIMARY KEY, service_id uuid REFERENCES services (id), paths text[])`);
      await client.query(`CREATE TABLE standin_runs (id bigserial PRIMARY KEY, subsystem text, name text, phase text, pid int, at timestamptz DEFAULT now())`);
    }
    await client.query('INSERT INTO standin_runs (subsystem, name, phase, pid) VALUES ($1, $2, $3, $4)', [sub, name, phase, process.pid]);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw new KongError(`[PostgreSQL error] failed to run migration '${name}' ${phase}: ERROR: ${e.message}`);
  }
}

/** Kong's record_migration: a separate statement after the migration committed. */
async function record(client, sub, name, how) {
  const sql = {
    pending: `INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending) VALUES ('schema_meta', $1, $2, '{}', ARRAY[$2])
              ON CONFLICT (key, subsystem) DO UPDATE SET last_executed = $2, pending = array_append(COALESCE(schema_meta.pending, '{}'), $2)`,
    executed: `INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending) VALUES ('schema_meta', $1, $2, ARRAY[$2], '{}')
               ON CONFLICT (key, subsystem) DO UPDATE SET last_executed = $2, executed = array_append(COALESCE(schema_meta.executed, '{}'), $2)`,
    teardown: `UPDATE schema_meta SET pending = array_remove(pending, $2), executed = array_append(COALESCE(executed, '{}'), $2) WHERE key = 'schema_meta' AND subsystem = $1`,
  }[how];
  try {
    await client.query(sql, [sub, name]);
  } catch (e) {
    throw new KongError(`[PostgreSQL error] failed to record migration '${name}': ERROR: ${e.message}`);
  }
}

async function runMigrations(client, list, { up, teardown }) {
  let processed = 0;
  let executed = 0;
  let pending = 0;
  for (const [sub, migs] of list) {
    out(`migrating ${sub} on database '${conf.pg_database || 'kong'}'...`);
    for (const name of migs) {
      const id = `${sub}/${name}`;
      const delay = Number(process.env.KONG_STANDIN_DELAY_MS || 0);
      if (delay) await sleep(delay);
      if (process.env.KONG_STANDIN_FAIL === id) {
        throw new KongError(`[PostgreSQL error] failed to run migration '${name}' up: ERROR: column "ws_id" of relation "${sub}" already exists`);
      }
      const leavesPending = up && TEARDOWN.has(id) && !teardown;
      await runOne(client, sub, name, up ? 'up' : 'teardown');
      const recordDelay = Number(process.env.KONG_STANDIN_RECORD_DELAY_MS || 0);
      if (recordDelay) await sleep(recordDelay);
      await record(client, sub, name, leavesPending ? 'pending' : up ? 'executed' : 'teardown');
      event('migration', { id, phase: up ? 'up' : 'teardown' });
      processed++;
      if (leavesPending) pending++;
      else executed++;
      out(`${sub} migrated up to: ${name} (${leavesPending ? 'pending' : 'executed'})`);
    }
  }
  out(`${processed} migration${processed === 1 ? '' : 's'} processed`);
  out(`${executed} executed`);
  if (pending) out(`${pending} pending`);
}

async function schemaBootstrap(client) {
  try {
    const s = schema || 'public';
    await client.query(`BEGIN;
  DO $$
  BEGIN
    CREATE SCHEMA IF NOT EXISTS "${s}" AUTHORIZATION CURRENT_USER;
    GRANT ALL ON SCHEMA "${s}" TO CURRENT_USER;
  EXCEPTION WHEN insufficient_privilege THEN
  END;
  $$;
  SET SCHEMA '${s}';
COMMIT;`);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_meta (
      key TEXT, subsystem TEXT, last_executed TEXT, executed TEXT[], pending TEXT[], PRIMARY KEY (key, subsystem))`);
    await client.query(`BEGIN;
  CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, owner TEXT, ttl TIMESTAMP WITH TIME ZONE);
  CREATE INDEX IF NOT EXISTS locks_ttl_idx ON locks (ttl);
COMMIT;`);
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw new KongError(`[PostgreSQL error] failed to bootstrap database: ERROR: ${e.message}`);
  }
}

/** nginx-style local timestamp for Kong's [warn] lines on stderr. */
function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}/${p(d.getMonth() + 1)}/${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function migrations(cmd) {
  const client = await connect();
  try {
    let st = await schemaState(client);
    if (cmd === 'list') {
      if (st.needsBootstrap) {
        out(NEEDS_BOOTSTRAP);
        return 3;
      }
      let r = '';
      if (st.executed.length) { out(`Executed migrations:\n${fmt(st.executed)}`); r = '\n'; }
      if (st.pending.length) { out(`${r}Pending migrations:\n${fmt(st.pending)}`); r = '\n'; }
      if (st.new.length) { out(`${r}New migrations available:\n${fmt(st.new)}`); r = '\n'; }
      if (st.pending.length && st.new.length) {
        process.stderr.write(`${stamp()} [warn] Database has pending migrations from a previous upgrade, and new migrations from this upgrade (version ${VERSION})\n`);
        out('');
        out("\nRun 'kong migrations finish' when ready to complete pending migrations (postgres database will be incompatible with the previous Kong version)");
        return 4;
      }
      if (st.pending.length) { out("\nRun 'kong migrations finish' when ready"); return 4; }
      if (st.new.length) { out("\nRun 'kong migrations up' to proceed"); return 5; }
      return 0;
    }
    if (cmd === 'bootstrap') {
      if (!st.needsBootstrap) { out('Database already bootstrapped'); return 0; }
      out('Bootstrapping database...');
      await barrier('bootstrap');
      await schemaBootstrap(client);
      const ok = await clusterMutex(client, { ttl: lockTtl, noWait: true }, async () => {
        event('bootstrap');
        await runMigrations(client, st.new, { up: true, teardown: true });
        out('Database is up-to-date');
      });
      if (!ok) out(NOT_LEADER);
      return 0;
    }
    if (st.needsBootstrap) throw new KongError(`Cannot run migrations: ${NEEDS_BOOTSTRAP}`);
    if (cmd === 'up') {
      if (st.pending.length) throw new KongError("Database has pending migrations; run 'kong migrations finish'");
      await barrier('up');
      const ok = await clusterMutex(client, { ttl: lockTtl, noWait: false }, async () => {
        st = await schemaState(client);
        if (st.pending.length) throw new KongError("Database has pending migrations; run 'kong migrations finish'");
        if (!st.new.length) { out('Database is already up-to-date'); return; }
        event('up');
        await runMigrations(client, st.new, { up: true, teardown: false });
        st = await schemaState(client);
        if (st.pending.length) out("\nDatabase has pending migrations; run 'kong migrations finish' when ready");
      });
      if (!ok) out(NOT_LEADER);
      return 0;
    }
    if (cmd === 'finish') {
      await barrier('finish');
      const ok = await clusterMutex(client, { ttl: lockTtl, noWait: true }, async () => {
        st = await schemaState(client);
        if (st.pending.length) {
          event('finish');
          await runMigrations(client, st.pending, { up: false, teardown: true });
          st = await schemaState(client);
        }
        if (st.new.length) { out("\nNew migrations available; run 'kong migrations up' to proceed"); return; }
        if (!st.pending.length) out('No pending migrations to finish');
      });
      if (!ok) out(NOT_LEADER);
      return 0;
    }
    throw new KongError(`unknown command '${cmd}'`);
  } finally {
    await client.end().catch(() => {});
  }
}

async function start() {
  const client = await connect();
  try {
    const st = await schemaState(client);
    if (st.needsBootstrap) throw new KongError(NEEDS_BOOTSTRAP);
    if (st.new.length) throw new KongError("New migrations available; run 'kong migrations up' to proceed");
    out('Kong started');
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}

async function main() {
  event('worker', { chain: chainPids() });
  const [cmd, sub] = argv;
  if (cmd === 'migrations') return migrations(sub);
  if (cmd === 'start') return start();
  throw new KongError(`unknown command: ${argv.join(' ')}`);
}

main().then(
  (code) => {
    flush();
    event('exit', { code });
    process.exit(code);
  },
  (e) => {
    if (e instanceof KongError) die(e.message);
    die(String(e && e.stack ? e.stack : e));
  },
);
