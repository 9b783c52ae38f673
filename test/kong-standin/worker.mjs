// The stand-in's worker: the last process of the chain (see kong.mjs), the one that migrates. It
// drives real `schema_meta` and `locks` tables in a real Postgres the way Kong 3.7.1 does (Kong's
// own SQL from catalog.mjs KONG_SQL, the same unsafe ordering in bootstrap, each migration one
// `BEGIN; ...; COMMIT;` query and its schema_meta record a separate statement), and prints what the
// recorded runs in test/fixtures/kong-cli-3.7.1 print (folders 01-38 are the contract).
//
// What it reproduces of Kong (recorded folder in brackets):
// - the `locks` row: key `migrations`, a random owner, ttl = now + --lock-timeout (default 60 s),
//   taken in one transaction that first deletes expired rows [32]; deleted when the command ends or
//   its callback fails; left behind by a killed process [37, 38]. `finish`, `bootstrap` and `reset`
//   never wait (aborted at once [31, 35]); `up` re-reads the row after 0.1, 0.3, 0.9 s, then every
//   2 s, prints `aborted: ...` (exit 0) when it is gone or expired at a poll [30], and fails with
//   `Error: [PostgreSQL error] timeout` (exit 1) when its sleeps add up to --lock-timeout [30, 33].
//   The "pending migrations" check of `up` comes before the lock [37 mid-teardown, 38 before-unlock].
// - --db-timeout N (else pg_timeout, 5000 ms): a timeout for each connect and each query on every
//   connection, not for the command [33]. A query that times out closes its connection: the
//   ROLLBACK and the lock removal after it open new ones, and each can time out again [34].
// - an error inside the lock's callback (a failed migration, pending found after the lock) comes out
//   as Kong prints it: "[PostgreSQL error] cluster_mutex callback threw an error: <file>:<line>: ..."
//   plus a Lua stack traceback, even without --v [34]. LUALIB below stands for `<lualib>` in the
//   recordings (Kong images: /usr/local/share/lua/5.1); `up`'s line numbers are recorded, the ones
//   for `bootstrap`/`finish` are derived from the 3.7.1 source layout (not recorded).
// - stdout is block-buffered in 4096-byte blocks unless it is a terminal: the first full blocks
//   reach the pipe while it runs, the rest when it exits, and a killed process loses the rest [37].
// - `reset --yes` and `bootstrap --force` (reset first, retrying without the lock when `locks` is
//   missing, with an [error] line on stderr) [37 no-locks-table repairs].
//
// Test knobs (environment; test-only: real Kong has none of them). Points are named
//   start                  before the first connection (a kill here is "killed before reaching PostgreSQL")
//   state                  before the first read of schema_meta
//   schema                 bootstrap: before creating the schema / schema_meta
//   locks-table            bootstrap: after CREATE TABLE schema_meta, before the `locks` table
//   lock                   before the INSERT into `locks` (bootstrap, up, finish, reset)
//   locked                 right after the `locks` row was inserted
//   up:SUB/NAME            before that migration's up SQL is sent
//   record:SUB/NAME        after its up SQL committed, before its schema_meta record
//   teardown:SUB/NAME      before its teardown (bootstrap: after its pending record)
//   record-teardown:SUB/NAME  after its teardown, before the teardown record
//   unlock                 everything done and recorded, before deleting the `locks` row
//   KONG_STANDIN_KILL_AT   "POINT[,POINT]": at that point SIGKILL the whole chain (the process group
//                          when the top process leads one), as `kill -9 -PGID` did in 37/38
//   KONG_STANDIN_HOLD_AT   "POINT=FILE[,POINT=FILE]": at that point wait until FILE exists (event
//                          `hold`), then go on (event `release`); at most 60 s
//   KONG_STANDIN_STALL_AT  "POINT": from that point on PostgreSQL stops answering this process: every
//                          connection (also new ones: TCP connects, the startup gets no answer) goes
//                          through an in-process relay that then forwards nothing, like the stopped
//                          relay of 34 (each stalled operation ends after --db-timeout, event `timeout`)
//   KONG_STANDIN_PG_BUSY   "up:SUB/NAME=SECONDS": that migration's transaction starts with
//                          pg_sleep(SECONDS) inside PostgreSQL (a stand-in for 34's table lock: the
//                          client times out, PostgreSQL commits later: applied but not recorded)
//   KONG_STANDIN_BARRIER   "DIR:N": the worker waits until N workers reached Kong's race window
//                          (bootstrap: before creating the schema; up/finish: before the locks row)
//   KONG_STANDIN_DELAY_MS, KONG_STANDIN_RECORD_DELAY_MS, KONG_STANDIN_FAIL, KONG_STANDIN_IGNORE_TERM,
//   KONG_STANDIN_LOG, KONG_STANDIN_CATALOG, KONG_STANDIN_PLUGIN_MIGRATIONS: see kong.mjs.
// Events (KONG_STANDIN_LOG) tests may wait for: lock-insert {acquired, owner, ttl}, lock-poll {n,
// elapsed, alive}, lock-wait-timeout, unlock, kill/hold/release/stall {point}, timeout {op}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { KONG_SQL, TEARDOWN, lit, migrationUpSql, selectCatalog, standinRun } from './catalog.mjs';
import { argv, errorExit, event, loadConf, opt } from './common.mjs';

const { version: VERSION, catalog: CATALOG } = selectCatalog(process.env);
const NOT_LEADER = 'aborted: another node is performing database changes';
const NEEDS_BOOTSTRAP =
  'Database needs bootstrapping or is older than Kong 1.0.\n\n' +
  "To start a new installation from scratch, run 'kong migrations bootstrap'.\n\n" +
  'To migrate from a version older than 1.0, migrated to Kong 1.5.0 first. \n' +
  "If you still have 'apis' entities, you can convert them to Routes and Services\n" +
  "using the 'kong migrations migrate-apis' command in Kong 1.5.0.\n\n";
/** pgmoon's words for a socket operation that ran into the timeout (34). */
const PG_TIMEOUT = 'receive_message: failed to get type: timeout';
/** `<lualib>` of the recordings: where Kong's images keep its Lua modules. */
const LUALIB = '/usr/local/share/lua/5.1';
const MUTEX_KEY = 'migrations';
const SQL_TABLES = 'SELECT table_name\n  FROM information_schema.tables\n WHERE table_schema = CURRENT_SCHEMA;\n';

if (process.env.KONG_STANDIN_IGNORE_TERM) process.on('SIGTERM', () => event('worker-ignored-term'));

// ---- stdout: 4096-byte blocks unless a terminal (recorded: 37-bootstrap-killed-before-unlock) ----
const BLOCK = 4096;
let buffered = Buffer.alloc(0);
const out = (s = '') => {
  const b = Buffer.from(s + '\n');
  if (process.stdout.isTTY) {
    fs.writeSync(1, b);
    return;
  }
  buffered = Buffer.concat([buffered, b]);
  while (buffered.length >= BLOCK) {
    fs.writeSync(1, buffered.subarray(0, BLOCK));
    buffered = buffered.subarray(BLOCK);
  }
};
const flush = () => {
  if (buffered.length) fs.writeSync(1, buffered);
  buffered = Buffer.alloc(0);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** nginx-style local timestamp for Kong's [warn]/[error] lines on stderr. */
function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}/${p(d.getMonth() + 1)}/${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The pids of the chain from the top process down to this worker (for tests: no process survives). */
function chainPids() {
  const top = Number(process.env.KONG_STANDIN_TOP_PID);
  const pids = [process.pid];
  let p = process.ppid;
  for (let i = 0; i < 8 && p > 1; i++) {
    pids.unshift(p);
    if (p === top) break;
    try {
      p = Number(
        fs
          .readFileSync(`/proc/${p}/stat`, 'utf8')
          .replace(/^.*\) /, '')
          .split(' ')[1],
      );
    } catch {
      break;
    }
  }
  return pids;
}

/** An error Kong prints as `Error: <message>` (exit 1). */
class KongError extends Error {}
/** An error raised inside the cluster mutex's callback: Lua `assert`/`error` at a line of kong/cmd/utils/migrations.lua. */
class CallbackError extends Error {
  constructor(fn, line, message) {
    super(message);
    this.fn = fn;
    this.line = line;
  }
}
/** A socket operation that ran into --db-timeout. */
class PgTimeout extends Error {
  constructor(message = PG_TIMEOUT) {
    super(message);
  }
}

function die(msg) {
  flush();
  errorExit(msg);
  event('exit', { code: 1, msg });
  process.exit(1);
}

const conf = loadConf();
let schema = conf.pg_schema || '';
const dbName = conf.pg_database || 'kong';
const dbTimeout = Number(opt('--db-timeout', '')) * 1000 || Number(conf.pg_timeout || 5000);
const lockTtl = Number(opt('--lock-timeout', '60'));
const force = argv.includes('--force') || argv.includes('-f');
const yes = argv.includes('--yes') || argv.includes('-y');

// ---- knobs -------------------------------------------------------------------------------------
const list = (v) =>
  (v || '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const pairs = (v) => new Map(list(v).map((x) => [x.slice(0, x.lastIndexOf('=')), x.slice(x.lastIndexOf('=') + 1)]));
const KILL_AT = new Set(list(process.env.KONG_STANDIN_KILL_AT));
const HOLD_AT = pairs(process.env.KONG_STANDIN_HOLD_AT);
const STALL_AT = new Set(list(process.env.KONG_STANDIN_STALL_AT));
const PG_BUSY = pairs(process.env.KONG_STANDIN_PG_BUSY);

/** SIGKILL the whole chain at once (its process group when the top process leads one). */
function killChain() {
  // no flush(): a killed Kong loses what it had not written yet
  const top = Number(process.env.KONG_STANDIN_TOP_PID);
  try {
    const pgrp = Number(
      fs
        .readFileSync(`/proc/${top}/stat`, 'utf8')
        .replace(/^.*\) /, '')
        .split(' ')[2],
    );
    if (pgrp === top) process.kill(-top, 'SIGKILL');
  } catch {
    // not a group leader, or gone: kill the chain one by one
  }
  for (const pid of chainPids()) {
    try {
      if (pid !== process.pid) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  process.kill(process.pid, 'SIGKILL');
}

async function point(name) {
  const file = HOLD_AT.get(name);
  if (file) {
    event('hold', { point: name });
    const until = Date.now() + 60_000;
    while (!fs.existsSync(file) && Date.now() < until) await sleep(10);
    event('release', { point: name });
  }
  if (STALL_AT.has(name)) {
    event('stall', { point: name });
    relay?.freeze();
  }
  if (KILL_AT.has(name)) {
    event('kill', { point: name });
    killChain();
    await new Promise(() => {});
  }
}

/** KONG_STANDIN_BARRIER=DIR:N: wait until N workers arrived here (provokes Kong's races on purpose). */
async function barrier(name) {
  const spec = process.env.KONG_STANDIN_BARRIER;
  if (!spec) return;
  const i = spec.lastIndexOf(':');
  const dir = spec.slice(0, i);
  const n = Number(spec.slice(i + 1));
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}-${process.pid}`), '');
  const until = Date.now() + 60_000;
  for (;;) {
    const here = fs.readdirSync(dir).filter((f) => f.startsWith(`${name}-`)).length;
    if (here >= n) break;
    if (Date.now() > until) throw new KongError(`stand-in barrier ${name}: only ${here} of ${n} workers arrived within 60 s`);
    await sleep(5);
  }
  event('barrier', { point: name });
}

// ---- a relay that can stop answering (KONG_STANDIN_STALL_AT) --------------------------------------
let relay;
async function startRelay(host, port) {
  let frozen = false;
  const server = net.createServer((client) => {
    client.on('error', () => {});
    if (frozen) return; // accepted by the kernel, never answered: a stopped relay
    const upstream = net.connect(port, host);
    upstream.on('error', () => client.destroy());
    client.on('data', (d) => {
      if (!frozen) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!frozen) client.write(d);
    });
    client.on('close', () => {
      if (!frozen) upstream.destroy();
    });
    upstream.on('close', () => {
      if (!frozen) client.destroy();
    });
  });
  server.unref();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { port: server.address().port, freeze: () => (frozen = true) };
}

// ---- PostgreSQL, the way Kong's connector uses it ------------------------------------------------
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

/** pgmoon's text for an error PostgreSQL returned: "SEVERITY: message (position)\ndetail". */
function pgErr(e) {
  if (e instanceof PgTimeout || e instanceof KongError) return e.message;
  if (!e?.severity) return String(e?.message ? e.message : e);
  return `${e.severity}: ${e.message}${e.position ? ` (${e.position})` : ''}${e.detail ? `\n${e.detail}` : ''}`;
}

function sslOptions() {
  const verify = /^(on|true)$/.test(conf.pg_ssl_verify || '');
  if (!verify) return { rejectUnauthorized: false };
  const files = (conf.lua_ssl_trusted_certificate || '')
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f && f !== 'system');
  return { rejectUnauthorized: true, ca: files.length ? files.map((f) => fs.readFileSync(f, 'utf8')) : undefined };
}

function destroy(client) {
  client._dead = true;
  try {
    client.connection.stream.destroy();
  } catch {
    // already gone
  }
}

/** One socket operation with Kong's per-operation timeout (pgmoon settimeout(pg_timeout)). */
function timed(client, op, work) {
  let timer;
  work.catch(() => {});
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => {
      event('timeout', { op });
      const connected = client.connection?.stream && !client.connection.stream.connecting;
      destroy(client);
      reject(new PgTimeout(connected ? PG_TIMEOUT : 'timeout'));
    }, dbTimeout);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

/** A new connection, set up as Kong's connect() does: schema (first time: CURRENT_SCHEMA), UTC. */
async function openClient() {
  const target = relay ? { host: '127.0.0.1', port: relay.port } : { host: conf.pg_host || '127.0.0.1', port: Number(conf.pg_port || 5432) };
  const client = new pg.Client({
    ...target,
    user: conf.pg_user || 'kong',
    password: conf.pg_password,
    database: dbName,
    ssl: /^(on|true)$/.test(conf.pg_ssl || '') ? sslOptions() : false,
  });
  client.on('error', () => {});
  try {
    await timed(client, 'connect', client.connect());
  } catch (e) {
    destroy(client);
    if (e instanceof PgTimeout) throw e;
    throw new KongError(connErr(e));
  }
  try {
    if (!schema) {
      const r = await timed(client, 'query', client.query('SELECT CURRENT_SCHEMA AS schema'));
      schema = r.rows[0]?.schema || 'public';
    }
    await timed(client, 'query', client.query(`SET SCHEMA ${lit(schema)};\nSET TIME ZONE 'UTC';`));
  } catch (e) {
    destroy(client);
    throw e instanceof PgTimeout ? e : new KongError(pgErr(e));
  }
  return client;
}

function release(client) {
  if (!client || client._dead) return;
  client._dead = true;
  client.end().catch(() => {});
}

/**
 * Kong's connector: a stored connection while migrations run (connect_migrations … close), else
 * one new connection per query. A query that timed out loses its connection.
 */
const db = {
  stored: undefined,
  async connect() {
    if (!this.stored || this.stored._dead) this.stored = await openClient();
  },
  close() {
    release(this.stored);
    this.stored = undefined;
  },
  async query(sql) {
    let client = this.stored && !this.stored._dead ? this.stored : undefined;
    const temp = !client;
    if (temp) client = await openClient();
    try {
      return await timed(client, 'query', client.query(sql));
    } catch (e) {
      throw e instanceof PgTimeout ? e : new KongError(pgErr(e));
    } finally {
      if (temp) release(client);
      else if (client._dead) this.stored = undefined;
    }
  },
};

/** The connector's init(): the first query of every command. */
async function init() {
  await point('start');
  try {
    await db.query('SHOW server_version_num;');
  } catch (e) {
    throw new KongError(`[PostgreSQL error] failed to retrieve PostgreSQL server_version_num: ${pgErr(e)}`);
  }
}

/** Kong's schema state: null rows (no schema_meta table) means "needs bootstrap". */
async function readState() {
  const pe = (e) => new KongError(`[PostgreSQL error] ${pgErr(e)}`);
  const t = await db.query(SQL_TABLES).catch((e) => Promise.reject(pe(e)));
  const names = new Set(t.rows.map((r) => r.table_name));
  const st = { needsBootstrap: false, executed: [], pending: [], new: [], missing: [] };
  let rows = null;
  if (names.has('schema_meta')) rows = (await db.query("SELECT *\n  FROM schema_meta\n WHERE key = 'schema_meta';").catch((e) => Promise.reject(pe(e)))).rows;
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

/** DB:schema_state(): on a connection of its own, closed afterwards. */
async function loadState() {
  await db.connect();
  try {
    return await readState();
  } finally {
    db.close();
  }
}

function fmt(l) {
  const w = Math.max(...l.map(([s]) => s.length));
  return l.map(([s, m]) => `${s.padStart(w)}: ${m.join(', ')}`).join('\n');
}

/** Where kong/cmd/utils/migrations.lua and kong/cmd/migrations.lua call what (Kong 3.7.1). */
const TRACE = {
  up: { mutex: 70, call: 204, assert: 104 }, // recorded (34)
  bootstrap: { mutex: 43, call: 182, assert: 44 }, // derived, not recorded
  finish: { mutex: 133, call: 211, assert: 149 }, // derived, not recorded
  reset: { mutex: 237, call: 194, assert: 239 }, // derived, not recorded
};

/** What xpcall(cb, debug.traceback) makes of an error in the callback (34). */
function traceback(cmd, e) {
  const t = TRACE[cmd];
  const m = `${LUALIB}/kong/cmd/utils/migrations.lua`;
  const ngx = 'init_worker_by_lua(nginx.conf:193)';
  return [
    `${m}:${e.line}: ${e.message}`,
    'stack traceback:',
    `\t[C]: in function '${e.fn}'`,
    `\t${m}:${e.line}: in function <${m}:${t.mutex}>`,
    "\t[C]: in function 'xpcall'",
    `\t${LUALIB}/kong/db/init.lua:403: in function <${LUALIB}/kong/db/init.lua:353>`,
    "\t[C]: in function 'pcall'",
    `\t${LUALIB}/kong/concurrency.lua:59: in function 'cluster_mutex'`,
    `\t${m}:${t.mutex}: in function '${cmd}'`,
    `\t${LUALIB}/kong/cmd/migrations.lua:${t.call}: in function 'cmd_exec'`,
    `\t${LUALIB}/kong/cmd/init.lua:31: in function <${LUALIB}/kong/cmd/init.lua:31>`,
    "\t[C]: in function 'xpcall'",
    `\t${LUALIB}/kong/cmd/init.lua:31: in function <${LUALIB}/kong/cmd/init.lua:15>`,
    "\t(command line -e):7: in function 'inline_gen'",
    `\t${ngx}:44: in function <${ngx}:43>`,
    "\t[C]: in function 'xpcall'",
    `\t${ngx}:52: in function <${ngx}:50>`,
  ].join('\n');
}

/**
 * Kong's cluster mutex on the `locks` table (kong/db/init.lua DB:cluster_mutex + the postgres
 * connector). Returns { ok } (false: someone else holds it) or { err } (Kong's error text).
 */
async function clusterMutex(cmd, { ttl, noWait, noCleanup }, cb) {
  await point('lock');
  const owner = crypto.randomUUID();
  let res;
  try {
    res = await db.query(KONG_SQL.insertLock(MUTEX_KEY, owner, Date.now() / 1000 + ttl));
  } catch (e) {
    return { err: `[PostgreSQL error] failed to insert cluster lock: ${pgErr(e)}` };
  }
  if (!Array.isArray(res) || res.length !== 4) return { err: '[PostgreSQL error] failed to insert cluster lock: unexpected result' };
  const acquired = res[2].rowCount === 1;
  event('lock-insert', { acquired, owner, ttl });
  if (!acquired) {
    if (noWait) return { ok: false };
    let step = 0.1;
    let elapsed = 0;
    let n = 0;
    while (elapsed < ttl) {
      await sleep(step * 1000);
      elapsed += step;
      if (elapsed >= ttl) break;
      let r;
      try {
        r = await db.query(KONG_SQL.readLock(MUTEX_KEY));
      } catch (e) {
        return { err: `[PostgreSQL error] failed to read cluster lock: ${pgErr(e)}` };
      }
      const alive = r.rows.length > 0;
      event('lock-poll', { n: ++n, elapsed: Number(elapsed.toFixed(1)), alive });
      if (!alive) return { ok: false };
      step = Math.min(step * 3, 2);
    }
    event('lock-wait-timeout', { elapsed: Number(elapsed.toFixed(1)) });
    return { err: '[PostgreSQL error] timeout' };
  }
  await point('locked');
  try {
    await cb();
  } catch (e) {
    db.close();
    await db.query(KONG_SQL.removeLock(MUTEX_KEY, owner)).catch(() => {});
    const ce = e instanceof CallbackError ? e : e instanceof KongError ? new CallbackError('assert', TRACE[cmd].assert, e.message) : undefined;
    if (!ce) throw e;
    return { err: `[PostgreSQL error] cluster_mutex callback threw an error: ${traceback(cmd, ce)}` };
  }
  if (!noCleanup) {
    await point('unlock');
    await db.query(KONG_SQL.removeLock(MUTEX_KEY, owner)).catch(() => {});
    event('unlock');
  }
  return { ok: true };
}

/** Kong's run_up_migration: "BEGIN; <up>; COMMIT;" as one query; on failure a ROLLBACK (maybe on a new connection). */
async function runUp(sub, name) {
  const stmts = migrationUpSql(sub, name, process.pid);
  const busy = Number(PG_BUSY.get(`up:${sub}/${name}`) || 0);
  if (busy) stmts.unshift(`SELECT pg_sleep(${busy})`);
  try {
    await db.query(`BEGIN;\n${stmts.join(';\n')};\nCOMMIT;\n`);
  } catch (e) {
    await db.query('ROLLBACK;').catch(() => {});
    throw e;
  }
}

class MigrationError extends KongError {}

/** DB:run_migrations (kong/db/init.lua), with the stand-in's points between its statements. */
async function runMigrations(migrations, { up, teardown }) {
  await db.connect();
  let n = 0;
  let nPending = 0;
  const fail = (what, e) => {
    db.close();
    return new MigrationError(`[PostgreSQL error] ${what}: ${pgErr(e)}`);
  };
  for (const [sub, migs] of migrations) {
    out(`migrating ${sub} on database '${dbName}'...`);
    for (const name of migs) {
      const id = `${sub}/${name}`;
      const hasTeardown = TEARDOWN.has(id);
      const delay = Number(process.env.KONG_STANDIN_DELAY_MS || 0);
      if (delay) await sleep(delay);
      if (up) {
        await point(`up:${id}`);
        if (process.env.KONG_STANDIN_FAIL === id) {
          throw fail(`failed to run migration '${name}' up`, { severity: 'ERROR', message: `column "ws_id" of relation "${sub}" already exists` });
        }
        try {
          await runUp(sub, name);
        } catch (e) {
          throw fail(`failed to run migration '${name}' up`, e);
        }
        const state = hasTeardown ? 'pending' : 'executed';
        if (hasTeardown) nPending++;
        await point(`record:${id}`);
        const recordDelay = Number(process.env.KONG_STANDIN_RECORD_DELAY_MS || 0);
        if (recordDelay) await sleep(recordDelay);
        try {
          await db.query(KONG_SQL.record(sub, name, state));
        } catch (e) {
          throw fail(`failed to record migration '${name}'`, e);
        }
      }
      if (teardown && hasTeardown) {
        await point(`teardown:${id}`);
        try {
          // standin_runs logs `finish`'s teardowns only: a bootstrap leaves exactly its 66 up rows
          if (!up) await db.query(standinRun(sub, name, 'teardown', process.pid));
        } catch (e) {
          throw fail(`failed to run migration '${name}' teardown`, e);
        }
        await point(`record-teardown:${id}`);
        try {
          await db.query(KONG_SQL.record(sub, name, 'teardown'));
        } catch (e) {
          throw fail(`failed to record migration '${name}'`, e);
        }
        nPending = Math.max(nPending - 1, 0);
      }
      event('migration', { id, phase: up ? 'up' : 'teardown' });
      out(`${sub} migrated up to: ${name} ${hasTeardown && !teardown ? '(pending)' : '(executed)'}`);
      n++;
    }
  }
  out(`${n} migration${n > 1 ? 's' : ''} processed`);
  if (n - nPending > 0) out(`${n - nPending} executed`);
  if (nPending > 0) out(`${nPending} pending`);
  db.close();
}

/** connector:schema_bootstrap: schema, schema_meta, then (setup_locks) the locks table. Unsafe order, as Kong's. */
async function schemaBootstrap() {
  await db.connect();
  try {
    const s = schema || 'public';
    await db.query(`BEGIN;
  DO $$
  BEGIN
    CREATE SCHEMA IF NOT EXISTS "${s}" AUTHORIZATION CURRENT_USER;
    GRANT ALL ON SCHEMA "${s}" TO CURRENT_USER;
  EXCEPTION WHEN insufficient_privilege THEN
    -- Do nothing, perhaps the schema has been created already
  END;
  $$;
  SET SCHEMA ${lit(s)};
COMMIT;`);
    await db.query(KONG_SQL.schemaMeta);
    await point('locks-table');
    await db.query(KONG_SQL.locks);
  } catch (e) {
    throw new KongError(`[PostgreSQL error] failed to bootstrap database: ${pgErr(e)}`);
  } finally {
    db.close();
  }
}

/** connector:schema_reset: drop and re-create the schema (or, without the privilege, drop its tables). */
async function schemaReset() {
  await db.connect();
  try {
    const s = schema || 'public';
    const tables = (await db.query(SQL_TABLES)).rows.map((r) => `"${r.table_name.replace(/"/g, '""')}"`);
    const drop = tables.length ? `    DROP TABLE IF EXISTS ${tables.join(', ')} CASCADE;\n` : '';
    await db.query(`BEGIN;
  DO $$
  BEGIN
    DROP SCHEMA IF EXISTS "${s}" CASCADE;
    CREATE SCHEMA IF NOT EXISTS "${s}" AUTHORIZATION CURRENT_USER;
    GRANT ALL ON SCHEMA "${s}" TO CURRENT_USER;
  EXCEPTION WHEN insufficient_privilege THEN
${drop}  END;
  $$;
    SET SCHEMA ${lit(s)};
COMMIT;`);
  } catch (e) {
    throw new KongError(`[PostgreSQL error] ${pgErr(e)}`);
  } finally {
    db.close();
  }
}

async function reset(st) {
  if (st.needsBootstrap) {
    out('Database not bootstrapped, nothing to reset');
    return false;
  }
  const run = async () => {
    out('Resetting database...');
    await schemaReset();
    out('Database successfully reset');
  };
  const r = await clusterMutex('reset', { ttl: lockTtl, noWait: true, noCleanup: true }, run);
  if (r.err) {
    // "failed to acquire locks - maybe locks table was dropped?" (migrations_utils.reset)
    process.stderr.write(`${stamp()} [error] ${r.err} - retrying without cluster lock\n`);
    await run();
    return true;
  }
  if (!r.ok) {
    out(NOT_LEADER);
    return false;
  }
  return true;
}

async function bootstrap(st) {
  if (!st.needsBootstrap) {
    out('Database already bootstrapped');
    return 0;
  }
  out('Bootstrapping database...');
  await barrier('bootstrap');
  await point('schema');
  await schemaBootstrap();
  const r = await clusterMutex('bootstrap', { ttl: lockTtl, noWait: true }, async () => {
    event('bootstrap');
    await runMigrations(st.new, { up: true, teardown: true });
    out('Database is up-to-date');
  });
  if (r.err) throw new KongError(r.err);
  if (!r.ok) out(NOT_LEADER);
  return 0;
}

function listState(st) {
  if (st.needsBootstrap) {
    out(NEEDS_BOOTSTRAP);
    return 3;
  }
  let r = '';
  if (st.executed.length) {
    out(`Executed migrations:\n${fmt(st.executed)}`);
    r = '\n';
  }
  if (st.pending.length) {
    out(`${r}Pending migrations:\n${fmt(st.pending)}`);
    r = '\n';
  }
  if (st.new.length) {
    out(`${r}New migrations available:\n${fmt(st.new)}`);
    r = '\n';
  }
  if (st.pending.length && st.new.length) {
    process.stderr.write(
      `${stamp()} [warn] Database has pending migrations from a previous upgrade, and new migrations from this upgrade (version ${VERSION})\n`,
    );
    out('');
    out("\nRun 'kong migrations finish' when ready to complete pending migrations (postgres database will be incompatible with the previous Kong version)");
    return 4;
  }
  if (st.pending.length) {
    out("\nRun 'kong migrations finish' when ready");
    return 4;
  }
  if (st.new.length) {
    out("\nRun 'kong migrations up' to proceed");
    return 5;
  }
  return 0;
}

async function migrations(cmd) {
  await init();
  await point('state');
  let st = await loadState();
  if (cmd === 'list') return listState(st);
  if (cmd === 'bootstrap') {
    if (force) {
      await reset(st);
      st = await loadState();
    }
    return bootstrap(st);
  }
  if (cmd === 'reset') {
    if (!yes && !process.stdin.isTTY) throw new KongError("not a tty: invoke 'reset' non-interactively with the --yes flag");
    return (await reset(st)) ? 0 : 1;
  }
  if (st.needsBootstrap) throw new KongError(`Cannot run migrations: ${NEEDS_BOOTSTRAP}`);
  if (cmd === 'up') {
    // checked before the lock (a dead process's row does not delay it: 38-up-killed-before-unlock.03)
    if (st.pending.length) throw new KongError("Database has pending migrations; run 'kong migrations finish'");
    await barrier('up');
    const r = await clusterMutex('up', { ttl: lockTtl, noWait: false }, async () => {
      st = await loadState();
      if (st.pending.length) throw new CallbackError('error', 74, "Database has pending migrations; run 'kong migrations finish'");
      if (!st.new.length) {
        out('Database is already up-to-date');
        return;
      }
      event('up');
      await runMigrations(st.new, { up: true, teardown: false });
      st = await loadState();
      if (st.pending.length) out("\nDatabase has pending migrations; run 'kong migrations finish' when ready");
    });
    if (r.err) throw new KongError(r.err);
    if (!r.ok) out(NOT_LEADER);
    return 0;
  }
  if (cmd === 'finish') {
    await barrier('finish');
    const r = await clusterMutex('finish', { ttl: lockTtl, noWait: true }, async () => {
      st = await loadState();
      if (st.pending.length) {
        event('finish');
        await runMigrations(st.pending, { up: false, teardown: true });
        st = await loadState();
      }
      if (st.new.length) {
        out("\nNew migrations available; run 'kong migrations up' to proceed");
        return;
      }
      if (!st.pending.length) out('No pending migrations to finish');
    });
    if (r.err) throw new KongError(r.err);
    if (!r.ok) out(NOT_LEADER);
    return 0;
  }
  throw new KongError(`unknown command '${cmd}'`);
}

async function start() {
  await init();
  const st = await loadState();
  if (st.needsBootstrap) throw new KongError(NEEDS_BOOTSTRAP);
  if (st.new.length) throw new KongError("New migrations available; run 'kong migrations up' to proceed");
  out('Kong started');
  return 0;
}

async function main() {
  event('worker', { chain: chainPids() });
  if (STALL_AT.size) relay = await startRelay(conf.pg_host || '127.0.0.1', Number(conf.pg_port || 5432));
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
    die(String(e?.stack ? e.stack : e));
  },
);
