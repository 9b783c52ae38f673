// A stand-in for the Kong 3.7.1 CLI (`kong version`, `kong migrations list|bootstrap|up|finish`,
// `kong start`), for tests only. It drives real `schema_meta` and `locks` tables in a real
// Postgres the way Kong 3.7.1 does (same SQL shapes, same unsafe ordering in bootstrap, same
// `locks` TTL), and prints what the recorded runs in test/fixtures/kong-cli-3.7.1 print.
//
// Test knobs (environment):
//   KONG_STANDIN_LOG       append one JSON line per event (start, migration run, exit) to this file
//   KONG_STANDIN_DELAY_MS  sleep this long before each migration (to be killed mid-way)
//   KONG_STANDIN_FAIL      "subsystem/name": that migration fails with a Postgres error
//   KONG_STANDIN_IGNORE_TERM  ignore SIGTERM (a Kong that hangs on shutdown)
import fs from 'node:fs';
import crypto from 'node:crypto';
import pg from 'pg';
import { CATALOG, TEARDOWN } from './catalog.mjs';

const VERSION = '3.7.1';
const NOT_LEADER = 'aborted: another node is performing database changes';
const NEEDS_BOOTSTRAP =
  "Database needs bootstrapping or is older than Kong 1.0.\n\n" +
  "To start a new installation from scratch, run 'kong migrations bootstrap'.\n\n" +
  'To migrate from a version older than 1.0, migrated to Kong 1.5.0 first. \n' +
  "If you still have 'apis' entities, you can convert them to Routes and Services\n" +
  "using the 'kong migrations migrate-apis' command in Kong 1.5.0.\n\n";

const argv = process.argv.slice(2);
if (process.env.KONG_STANDIN_IGNORE_TERM) process.on('SIGTERM', () => {});
const out = (s = '') => process.stdout.write(s + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function event(ev, extra = {}) {
  const f = process.env.KONG_STANDIN_LOG;
  if (f) fs.appendFileSync(f, JSON.stringify({ pid: process.pid, cmd: argv.slice(0, 2).join(' '), ev, t: Date.now(), ...extra }) + '\n');
}

class KongError extends Error {}

function die(msg) {
  process.stderr.write(`Error: ${msg}\n\n  Run with --v (verbose) or --vv (debug) for more details\n`);
  event('exit', { code: 1, msg });
  process.exit(1);
}

function opt(name, def) {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def;
}

function loadConf() {
  const conf = {};
  const c = opt('-c', opt('--conf'));
  if (c) {
    for (const line of fs.readFileSync(c, 'utf8').split('\n')) {
      const l = line.replace(/#.*/, '').trim();
      const eq = l.indexOf('=');
      if (eq > 0) conf[l.slice(0, eq).trim()] = l.slice(eq + 1).trim();
    }
  }
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('KONG_')) conf[k.slice(5).toLowerCase()] = v;
  return conf;
}

const conf = loadConf();
const schema = conf.pg_schema || undefined;
const dbTimeout = Number(opt('--db-timeout', '')) * 1000 || Number(conf.pg_timeout || 5000);
const lockTtl = Number(opt('--lock-timeout', '60'));

function prepPrefix() {
  const prefix = opt('-p', opt('--prefix', conf.prefix || '/usr/local/kong'));
  try {
    fs.mkdirSync(prefix, { recursive: true });
    fs.accessSync(prefix, fs.constants.W_OK);
  } catch (e) {
    die(`could not prepare Kong prefix at ${prefix}: ${e.code}`);
  }
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
      const finishes = teardown && (!up || TEARDOWN.has(id));
      const leavesPending = up && TEARDOWN.has(id) && !teardown;
      try {
        await client.query('BEGIN');
        if (up && id === 'core/000_base') {
          // like Kong's base migration: real tables (no IF NOT EXISTS, so a second run fails)
          await client.query(`CREATE TABLE services (id uuid PRIMARY KEY, name text UNIQUE, host text)`);
          await client.query(`CREATE TABLE routes (id uuid PRIMARY KEY, service_id uuid REFERENCES services (id), paths text[])`);
          await client.query(`CREATE TABLE standin_runs (id bigserial PRIMARY KEY, subsystem text, name text, phase text, pid int, at timestamptz DEFAULT now())`);
        }
        await client.query('INSERT INTO standin_runs (subsystem, name, phase, pid) VALUES ($1, $2, $3, $4)', [sub, name, up ? 'up' : 'teardown', process.pid]);
        if (leavesPending) {
          await client.query(
            `INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending) VALUES ('schema_meta', $1, $2, '{}', ARRAY[$2])
             ON CONFLICT (key, subsystem) DO UPDATE SET last_executed = $2, pending = array_append(COALESCE(schema_meta.pending, '{}'), $2)`,
            [sub, name],
          );
        } else if (up) {
          await client.query(
            `INSERT INTO schema_meta (key, subsystem, last_executed, executed, pending) VALUES ('schema_meta', $1, $2, ARRAY[$2], '{}')
             ON CONFLICT (key, subsystem) DO UPDATE SET last_executed = $2, executed = array_append(COALESCE(schema_meta.executed, '{}'), $2)`,
            [sub, name],
          );
        } else {
          await client.query(
            `UPDATE schema_meta SET pending = array_remove(pending, $2), executed = array_append(COALESCE(executed, '{}'), $2) WHERE key = 'schema_meta' AND subsystem = $1`,
            [sub, name],
          );
        }
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {});
        throw new KongError(`[PostgreSQL error] failed to run migration '${name}' ${up ? 'up' : 'teardown'}: ERROR: ${e.message}`);
      }
      event('migration', { id, phase: up ? 'up' : 'teardown' });
      processed++;
      if (leavesPending) pending++;
      else executed++;
      out(`${sub} migrated up to: ${name} (${leavesPending ? 'pending' : 'executed'})`);
      void finishes;
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

async function migrations(cmd) {
  prepPrefix();
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
        out('');
        out(`Database has pending migrations from a previous upgrade, and new migrations from this upgrade (version ${VERSION})`);
        out("\nRun 'kong migrations finish' when ready to complete pending migrations (postgres 'kong' will be incompatible with the previous Kong version)");
        return 4;
      }
      if (st.pending.length) { out("\nRun 'kong migrations finish' when ready"); return 4; }
      if (st.new.length) { out("\nRun 'kong migrations up' to proceed"); return 5; }
      return 0;
    }
    if (cmd === 'bootstrap') {
      if (!st.needsBootstrap) { out('Database already bootstrapped'); return 0; }
      out('Bootstrapping database...');
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
  prepPrefix();
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
  event('start');
  const [cmd, sub] = argv;
  if (cmd === 'version') { out(VERSION); return 0; }
  if (cmd === 'migrations' && ['list', 'bootstrap', 'up', 'finish'].includes(sub)) return migrations(sub);
  if (cmd === 'start') return start();
  throw new KongError(`unknown command: ${argv.join(' ')}`);
}

main().then(
  (code) => {
    event('exit', { code });
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof KongError) die(e.message);
    die(String(e && e.stack ? e.stack : e));
  },
);
