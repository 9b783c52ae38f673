/**
 * The Kong stand-in must behave like the real Kong 3.7.1 CLI: every recorded run in
 * test/fixtures/kong-cli-3.7.1 (copied from ../shared) is replayed against a real database in
 * the same state, and the exit status, stdout and stderr must match.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, type ExpectStatic } from 'vitest';
import { execa } from 'execa';
import pg from 'pg';
import {
  alive,
  createDb,
  FIXTURES,
  kongQuery,
  kongSnapshot,
  listCode,
  runKong,
  seed,
  seedKong,
  stallProxy,
  STANDIN_BIN,
  standinEvents,
  until,
  type TestDb,
} from './helpers/harness.js';

interface Recorded {
  name: string;
  command: string;
  exit: number;
  stdout: string;
  stderr: string;
}

function recorded(name: string): Recorded {
  const d = path.join(FIXTURES, name);
  const r = (f: string) => fs.readFileSync(path.join(d, f), 'utf8');
  return { name, command: r('command').trim(), exit: Number(r('exit').trim()), stdout: r('stdout'), stderr: r('stderr') };
}

const all = fs.readdirSync(FIXTURES).filter((n) => /^\d\d-/.test(n));
const byState: Record<string, 'empty' | 'current' | '3.6' | 'pending'> = { empty: 'empty', current: 'current', new: '3.6', pending: 'pending' };
const norm = (s: string, db: string) => s.split(`'${db}'`).join(`'kong'`).trim();
/** Kong's [warn] lines carry a local timestamp. */
const stamps = (s: string) => s.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /gm, 'TIME ');

describe('Kong stand-in conformance with the recorded Kong 3.7.1 CLI', () => {
  it('has every recorded case', () => {
    expect(all.length).toBeGreaterThanOrEqual(28);
  });

  const simple = all.filter((n) => /^\d\d-(empty|current|new|pending)\./.test(n));
  for (const name of simple) {
    it(`${name}: same exit status, stdout and stderr`, async () => {
      const rec = recorded(name);
      const state = byState[name.split('-')[1]!.split('.')[0]!]!;
      const db = await createDb();
      if (state !== 'empty') await seed(db, state);
      const args = rec.command.replace(/^kong /, '').split(/\s+/);
      const r = await runKong(args, db.env());
      expect(r.exitCode).toBe(rec.exit);
      expect(norm(r.stdout, db.name)).toBe(rec.stdout.trim());
      expect(r.stderr.trim()).toBe(rec.stderr.trim());
    });
  }

  it('19-version: prints the version', async () => {
    const rec = recorded('19-version');
    const db = await createDb();
    const r = await runKong(['version'], db.env());
    expect(r.exitCode).toBe(rec.exit);
    expect(r.stdout.trim()).toBe(rec.stdout.trim());
  });

  const errorCases: Array<[string, (db: TestDb) => Record<string, string>]> = [
    ['15-badpassword.list', (db) => db.env({ KONG_PG_PASSWORD: 'wrong' })],
    ['16-unreachable.list', (db) => db.env({ KONG_PG_PORT: '1' })],
    ['17-nodb.list', (db) => db.env({ KONG_PG_DATABASE: 'nosuchdb' })],
    ['18-dns.list', (db) => db.env({ KONG_PG_HOST: 'no-such-host.invalid' })],
  ];
  for (const [name, env] of errorCases) {
    it(`${name}: exit 1 with the same error line`, async () => {
      const rec = recorded(name);
      const db = await createDb();
      const r = await runKong(['migrations', 'list'], env(db));
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toBe('');
      const first = (s: string) => s.trim().split('\n')[0]!;
      if (name.startsWith('18-')) {
        expect(first(r.stderr)).toMatch(
          /^Error: \[PostgreSQL error\] failed to retrieve PostgreSQL server_version_num: \[cosocket\] DNS resolution failed: dns server error: 3 name error/,
        );
      } else {
        expect(first(r.stderr)).toBe(first(rec.stderr));
      }
      expect(r.stderr).toContain('Run with --v (verbose) or --vv (debug) for more details');
    });
  }

  it('schema tables after bootstrap match the recorded schema_meta rows and locks table', async () => {
    const db = await createDb();
    expect((await runKong(['migrations', 'bootstrap'], db.env())).exitCode).toBe(0);
    const csv = fs.readFileSync(path.join(FIXTURES, 'schema_meta-after-bootstrap.csv'), 'utf8').trim().split('\n').slice(1);
    const rows = await db.query<{ line: string }>(`SELECT key || ',' || subsystem || ',' || last_executed AS line FROM schema_meta ORDER BY subsystem`);
    expect(rows.rows.map((r) => r.line)).toEqual(csv.map((l) => l.split(',').slice(0, 3).join(',')));
    const cols = await db.query<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'locks' ORDER BY ordinal_position`,
    );
    expect(cols.rows).toEqual([
      { column_name: 'key', data_type: 'text' },
      { column_name: 'owner', data_type: 'text' },
      { column_name: 'ttl', data_type: 'timestamp with time zone' },
    ]);
  });

  it('21/22: a concurrent `up` loser exits 0 with "aborted…" or 1 with "pending migrations", and the winner\'s work is done once', async () => {
    const abortedRec = recorded('21-concurrent-up.loser');
    const exit1Rec = recorded('22-concurrent-up.loser-exit1');
    for (let trial = 0; trial < 2; trial++) {
      const db = await createDb();
      await seed(db, '3.6');
      // both reach Kong's race window (just before the locks row) before either goes on
      const env = db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_STANDIN_BARRIER: `${db.dir}/barrier:2` });
      const rs = await Promise.all([runKong(['migrations', 'up'], env), runKong(['migrations', 'up'], env)]);
      const winners = rs.filter((r) => r.stdout.includes('migrated up to'));
      expect(winners).toHaveLength(1);
      expect(winners[0]!.exitCode).toBe(0);
      const loser = rs.find((r) => r !== winners[0])!;
      if (loser.exitCode === 0) {
        expect(loser.stdout.trim()).toBe(abortedRec.stdout.trim());
      } else {
        expect(loser.exitCode).toBe(exit1Rec.exit);
        expect(loser.stderr.split('\n')[0]).toBe(exit1Rec.stderr.split('\n')[0]);
      }
      const runs = await db.query(`SELECT subsystem, name, count(*)::int AS n FROM standin_runs GROUP BY 1, 2 HAVING count(*) > 1`);
      expect(runs.rows).toEqual([]);
      expect(await listCode(db)).toBe(4);
    }
  });

  it('23: concurrent bootstraps race like Kong: the loser aborts or fails with a recorded race error; bootstrapped once', async () => {
    const rec = recorded('23-concurrent-bootstrap.loser-exit1');
    const raceErrors = /tuple concurrently updated|already exists|duplicate key value violates unique constraint "pg_type_typname_nsp_index"/;
    for (let trial = 0; trial < 2; trial++) {
      const db = await createDb();
      // both runs read "needs bootstrap" and meet right where Kong's race window opens
      const env = db.env({ KONG_STANDIN_BARRIER: `${db.dir}/barrier:2` });
      const rs = await Promise.all([runKong(['migrations', 'bootstrap'], env), runKong(['migrations', 'bootstrap'], env)]);
      const winners = rs.filter((r) => r.stdout.includes('66 executed'));
      expect(winners).toHaveLength(1);
      expect(winners[0]!.exitCode).toBe(0);
      expect(winners[0]!.stdout).toContain('Database is up-to-date');
      const loser = rs.find((r) => r !== winners[0])!;
      expect(loser.stdout.startsWith(rec.stdout.trim())).toBe(true);
      if (loser.exitCode === 0) {
        expect(loser.stdout.trim().split('\n').pop()).toBe('aborted: another node is performing database changes');
      } else {
        expect(loser.exitCode).toBe(1);
        expect(loser.stderr).toMatch(/^Error: \[PostgreSQL error\] failed to (bootstrap database|run migration)/);
        expect(loser.stderr).toMatch(raceErrors);
      }
      const once = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM standin_runs`);
      expect(once.rows[0]!.n).toBe(66);
      expect(await listCode(db)).toBe(0);
    }
  });

  it('24-29: pending + new, then finish, up: each step as recorded', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    for (const name of [
      '24-pendingnew.list',
      '25-pendingnew.up',
      '26-pendingnew.finish',
      '27-new-after-finish.list',
      '28-new-after-finish.up',
      '29-after-up.list',
    ]) {
      const rec = recorded(name);
      const r = await runKong(rec.command.replace(/^kong /, '').split(/\s+/), db.env());
      expect(r.exitCode, name).toBe(rec.exit);
      expect(norm(r.stdout, db.name), name).toBe(rec.stdout.trim());
      expect(stamps(r.stderr).trim(), name).toBe(stamps(rec.stderr).trim());
    }
  });

  it('KONG_STANDIN_CATALOG=3.6 plays Kong 3.6: its version, and a 3.6 database is up to date for it', async () => {
    const db = await createDb();
    const v = await runKong(['version'], db.env({ KONG_STANDIN_CATALOG: '3.6' }));
    expect(v.stdout.trim()).toBe('3.6.1');
    await seed(db, '3.6');
    expect((await runKong(['migrations', 'list'], db.env({ KONG_STANDIN_CATALOG: '3.6' }))).exitCode).toBe(0);
    expect((await runKong(['migrations', 'list'], db.env())).exitCode).toBe(5);
    const bad = await runKong(['migrations', 'list'], db.env({ KONG_STANDIN_CATALOG: '2.8' }));
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain('KONG_STANDIN_CATALOG=2.8');
  });

  describe('the process chain is as unkind as the real one (process-chain.md)', () => {
    const startBootstrap = (db: TestDb, extra: Record<string, string> = {}) =>
      execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'bootstrap'], {
        env: db.env({ KONG_STANDIN_DELAY_MS: '30', ...extra }),
        extendEnv: false,
        reject: false,
      });
    const workerChain = async (db: TestDb) => {
      await until(() => standinEvents(db).some((e) => e.ev === 'migration'), 60_000, 'the first migration');
      return standinEvents(db).find((e) => e.ev === 'worker')!.chain!;
    };

    it('five processes; the worker is a descendant of the spawned one, not its child', async () => {
      const db = await createDb();
      const child = startBootstrap(db);
      const chain = await workerChain(db);
      expect(chain).toHaveLength(5);
      expect(chain[0]).toBe(child.pid);
      await child;
    });

    it('SIGTERM to the spawned process is ignored until the step ends: it exits 0 with the database bootstrapped', async () => {
      const db = await createDb();
      const child = startBootstrap(db);
      await workerChain(db);
      child.kill('SIGTERM');
      const r = await child;
      expect(r.exitCode).toBe(0);
      expect(String(r.stdout)).toContain('66 executed');
      expect(await listCode(db)).toBe(0);
    });

    it('SIGKILL to the spawned process orphans the other four, which finish the migration', async () => {
      const db = await createDb();
      const child = startBootstrap(db);
      const chain = await workerChain(db);
      const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      // the orphans hold our stdout pipe open and keep migrating
      expect(chain.slice(1).filter(alive)).toHaveLength(4);
      await child;
      await until(() => !chain.some(alive), 60_000, 'the orphans to finish');
      expect(standinEvents(db).find((e) => e.ev === 'exit')?.code).toBe(0);
      expect(await listCode(db)).toBe(0);
    });

    it('stdout is block-buffered when it is not a terminal: nothing arrives while migrations run', async () => {
      const db = await createDb();
      const child = startBootstrap(db, { KONG_STANDIN_DELAY_MS: '50' });
      let seen = '';
      child.stdout!.on('data', (d: Buffer) => (seen += d.toString()));
      await until(() => standinEvents(db).filter((e) => e.ev === 'migration').length >= 5, 60_000, 'five migrations');
      expect(seen).toBe('');
      const r = await child;
      expect(String(r.stdout)).toContain('66 executed');
    });

    it('a fresh prefix: keys for every SSL listener, and the prefix line on stdout after the rest; none with the listeners off', async () => {
      const db = await createDb();
      const fresh = path.join(db.dir, 'fresh');
      const r = await runKong(['migrations', 'list'], db.env({ KONG_PREFIX: fresh }));
      expect(r.exitCode).toBe(3);
      expect(r.stdout.trim().split('\n').pop()).toBe(`prefix directory ${fresh} not found, trying to create it`);
      expect(fs.readdirSync(path.join(fresh, 'ssl')).sort()).toEqual(['admin-gui-kong-default.key', 'admin-kong-default.key', 'kong-default.key']);
      const off = path.join(db.dir, 'off');
      const listenersOff = {
        KONG_PROXY_LISTEN: 'off',
        KONG_ADMIN_LISTEN: 'off',
        KONG_ADMIN_GUI_LISTEN: 'off',
        KONG_STATUS_LISTEN: 'off',
        KONG_STREAM_LISTEN: 'off',
      };
      expect((await runKong(['migrations', 'list'], db.env({ KONG_PREFIX: off, ...listenersOff }))).exitCode).toBe(3);
      expect(fs.existsSync(path.join(off, 'ssl'))).toBe(false);
    });

    it('each `up` migration and its schema_meta record are committed separately', async () => {
      const db = await createDb();
      await seed(db, '3.6');
      const child = execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'up'], {
        env: db.env({ KONG_STANDIN_RECORD_DELAY_MS: '3000' }),
        extendEnv: false,
        reject: false,
      });
      // the first migration has committed but is not recorded yet
      await until(async () => (await db.query(`SELECT 1 FROM standin_runs WHERE name = '023_360_to_370'`)).rows.length === 1, 60_000, 'the migration commit');
      const meta = await db.query<{ executed: string[] }>(`SELECT executed FROM schema_meta WHERE subsystem = 'core'`);
      expect(meta.rows[0]!.executed).not.toContain('023_360_to_370');
      await child;
      expect(await listCode(db)).toBe(4);
    });
  });

  it("`up` waits on Kong's own lock row until its TTL, then aborts having done nothing", async () => {
    const db = await createDb();
    await seed(db, '3.6');
    await db.query(`INSERT INTO locks VALUES ('migrations', 'crashed-node', now() + interval '2 seconds')`);
    const r = await runKong(['migrations', 'up'], db.env());
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe('aborted: another node is performing database changes');
    expect(r.durationMs).toBeGreaterThan(1500);
    const again = await runKong(['migrations', 'up'], db.env());
    expect(again.stdout).toContain('core migrated up to: 023_360_to_370 (executed)');
  });

  it('`kong start` refuses "needs bootstrap" and "new", accepts "pending"', async () => {
    const db = await createDb();
    expect((await runKong(['start'], db.env())).stderr).toContain('Database needs bootstrapping');
    await seed(db, '3.6');
    const r = await runKong(['start'], db.env());
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("New migrations available; run 'kong migrations up' to proceed");
    const db2 = await createDb();
    await seed(db2, 'pending');
    expect((await runKong(['start'], db2.env())).exitCode).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Recorded runs 30-38: Kong's `locks` row, --lock-timeout and --db-timeout, PostgreSQL stalls,
// races, and `bootstrap`/`up` killed at each point. Every case compares exit status, stdout and
// stderr with the recording and the database before/after with the notes (schema_meta rows as
// executed | pending, `locks` rows: key, owner, expired or not).
//
// Kong's real waits are 60 s. Where a recording waited for a row to expire, the case lets the row
// expire as soon as the stand-in has seen it unexpired at a poll (or sets --lock-timeout small);
// each case says what it shortened.

/** The stand-in under test; KDI_STANDIN_BIN=<dir holding `kong`> runs these cases against another one. */
const BIN = process.env.KDI_STANDIN_BIN ?? STANDIN_BIN;
const NOT_LEADER = 'aborted: another node is performing database changes';
/** What the stand-in prints where the recordings have `<lualib>` (Kong images keep their Lua modules there). */
const LUALIB = '/usr/local/share/lua/5.1';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Ran {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}
interface Ev {
  ev: string;
  t: number;
  point?: string;
  n?: number;
  elapsed?: number;
  alive?: boolean;
  acquired?: boolean;
  op?: string;
}
interface Started {
  done: Promise<Ran>;
  events(): Ev[];
}

let runNo = 0;
/** Start the stand-in (exit 137 = killed by SIGKILL, as a shell reports it); its events go to a log of this run's own. */
function start(db: TestDb, args: string[], extra: Record<string, string> = {}): Started {
  const log = path.join(db.dir, `kong-run-${++runNo}.log`);
  const t = Date.now();
  const child = execa(path.join(BIN, 'kong'), args, {
    env: db.env({ KONG_STANDIN_LOG: log, ...extra }),
    extendEnv: false,
    reject: false,
    stripFinalNewline: false,
  });
  const done = child.then((r) => ({
    exitCode: r.exitCode ?? (r.signal ? 128 + os.constants.signals[r.signal as keyof typeof os.constants.signals] : -1),
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    durationMs: Date.now() - t,
  }));
  const events = (): Ev[] =>
    fs.existsSync(log)
      ? fs
          .readFileSync(log, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Ev)
      : [];
  return { done, events };
}
const kong = (db: TestDb, args: string[], extra: Record<string, string> = {}) => start(db, args, extra).done;
const polls = (s: Started) => s.events().filter((x) => x.ev === 'lock-poll');
const sawEvent = (s: Started, ev: string, what: string) => until(() => s.events().some((x) => x.ev === ev), 30_000, what);

/** Same text once the things that differ between runs are replaced (database name, <lualib>, nginx.conf line, timestamps). */
function normKong(s: string, db?: TestDb): string {
  const named = db ? s.split(`'${db.name}'`).join(`'kong'`) : s;
  return named
    .split(LUALIB)
    .join('<lualib>')
    .replace(/nginx\.conf:\d+/g, 'nginx.conf:N')
    .replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /gm, 'TIME ');
}

interface Rec extends Recorded {
  notes: string;
}
function rec(name: string): Rec {
  const notes = path.join(FIXTURES, name, 'notes');
  return { ...recorded(name), notes: fs.existsSync(notes) ? fs.readFileSync(notes, 'utf8') : '' };
}
/** `kong migrations up --lock-timeout 5   (comment)` -> ['migrations', 'up', '--lock-timeout', '5'] */
const argsOf = (r: Recorded) =>
  r.command
    .split(/\s{2,}\(/)[0]!
    .trim()
    .replace(/^kong /, '')
    .split(/\s+/);

/** Same exit status, stdout and stderr as the recording (soft: a case lists every difference). */
function expectLike(e: ExpectStatic, r: Ran, want: Recorded, db: TestDb, label: string): void {
  e.soft(r.exitCode, `${label}: exit status`).toBe(want.exit);
  if (want.exit === 137 && Buffer.byteLength(want.stdout) === 4096) {
    // a killed Kong's stdout: exactly its first 4096-byte block (the database name's length moves the cut)
    e.soft(Buffer.byteLength(r.stdout), `${label}: one 4096-byte block of stdout`).toBe(4096);
    e.soft(normKong(recorded('04-empty.bootstrap').stdout).startsWith(normKong(r.stdout, db)), `${label}: stdout is the start of the full output`).toBe(true);
  } else {
    e.soft(normKong(r.stdout, db), `${label}: stdout`).toBe(normKong(want.stdout));
  }
  e.soft(normKong(r.stderr, db), `${label}: stderr`).toBe(normKong(want.stderr));
}

interface NoteLock {
  key: string;
  owner: string;
  secs: number;
}
interface NoteDb {
  heading: string;
  schemaMeta: Array<[string, string, string]> | null;
  locks: NoteLock[] | null;
}

/** The database states in a recording's notes ("tables in schema public: N", schema_meta rows, locks rows). */
function noteDbs(notes: string): NoteDb[] {
  const lines = notes.split('\n');
  const res: NoteDb[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^tables in schema public: \d+$/.test(lines[i]!)) continue;
    let h = i - 1;
    while (h > 0 && !/^(Before|After|Right after|Database)\b/.test(lines[h]!)) h--;
    const d: NoteDb = { heading: lines[h] ?? '', schemaMeta: null, locks: null };
    let j = i + 1;
    const sm = /^schema_meta: (?:table does not exist|(\d+) rows)/.exec(lines[j++] ?? '');
    if (!sm) throw new Error(`notes: no schema_meta line after "${lines[i]}"`);
    if (sm[1] !== undefined) {
      d.schemaMeta = [];
      for (let m: RegExpExecArray | null; (m = /^ {2}schema_meta \| (\S+) \| (\S+) \| (\S+)$/.exec(lines[j] ?? '')); j++)
        d.schemaMeta.push([m[1]!, m[2]!, m[3]!]);
      if (d.schemaMeta.length !== Number(sm[1])) throw new Error(`notes: ${sm[1]} schema_meta rows announced, ${d.schemaMeta.length} listed`);
    }
    const lk = /^locks: (?:table does not exist|(\d+) rows)/.exec(lines[j++] ?? '');
    if (!lk) throw new Error(`notes: no locks line after "${lines[i]}"`);
    if (lk[1] !== undefined) {
      d.locks = [];
      for (let m: RegExpExecArray | null; (m = /^ {2}(\S+) \| (\S+) \| .+ UTC \| (-?[\d.]+)$/.exec(lines[j] ?? '')); j++)
        d.locks.push({ key: m[1]!, owner: m[2]!, secs: Number(m[3]) });
      if (d.locks.length !== Number(lk[1])) throw new Error(`notes: ${lk[1]} locks rows announced, ${d.locks.length} listed`);
    }
    res.push(d);
  }
  return res;
}
function noteDb(r: Rec, heading: RegExp): NoteDb {
  const d = noteDbs(r.notes).find((x) => heading.test(x.heading));
  if (!d) throw new Error(`${r.name}: no database state "${heading.source}" in its notes`);
  return d;
}

/**
 * The database holds what the notes say: the same schema_meta rows (executed and pending, NULL and
 * '{}' alike); the same `locks` rows: key, owner (the literal one of a hand-made row; for Kong's
 * random owners the same row as the one with that owner in an earlier state), expired or not, and
 * for a Kong-written row still more than 45 s from expiry a ttl of now + the default 60 s.
 */
async function expectDb(e: ExpectStatic, db: TestDb, want: NoteDb, owners: Map<string, string>, label: string, checkTtl = true): Promise<void> {
  const got = await kongSnapshot(db);
  e.soft(got.schemaMeta === null ? null : got.schemaMeta.map((r) => [r.subsystem, r.executed, r.pending]).sort(), `${label}: schema_meta rows`).toEqual(
    want.schemaMeta && [...want.schemaMeta].sort(),
  );
  e.soft(got.locks === null, `${label}: no locks table`).toBe(want.locks === null);
  if (!want.locks || !got.locks) return;
  const shape = (l: { key: string; owner: string; expired: boolean }) => ({
    key: l.key,
    owner: UUID.test(l.owner) ? '<Kong node id>' : l.owner,
    expired: l.expired,
  });
  e.soft(
    got.locks.map((l) => shape({ ...l, expired: l.secondsLeft < 0 })),
    `${label}: locks rows`,
  ).toEqual(want.locks.map((l) => shape({ ...l, expired: l.secs < 0 })));
  want.locks.forEach((w, i) => {
    const g = got.locks![i];
    if (!g || !UUID.test(w.owner)) return;
    const bound = owners.get(w.owner);
    if (bound) e.soft(g.owner, `${label}: the same Kong's row as before`).toBe(bound);
    else owners.set(w.owner, g.owner);
    if (checkTtl && w.secs > 45) {
      e.soft(g.secondsLeft, `${label}: ttl = now + 60 s (default --lock-timeout)`).toBeGreaterThan(45);
      e.soft(g.secondsLeft, `${label}: ttl = now + 60 s (default --lock-timeout)`).toBeLessThanOrEqual(60.5);
    }
  });
}

const expireLocks = (db: TestDb) => db.query(`UPDATE locks SET ttl = now() - interval '1 second' WHERE ttl >= now()`);

/** The folders of sequence `prefix` (`<prefix>.<NN>-<command>`), in order. */
function steps(prefix: string): string[] {
  return all.filter((n) => n.startsWith(`${prefix}.`) && /^\d\d-/.test(n.slice(prefix.length + 1))).sort();
}

/**
 * Replay a recorded sequence on one database, step by step. Where the next state's notes show a
 * stale `locks` row expired ("then waited 54.5 s until the stale row expired") it is made to expire
 * now; where `up` waited ~56 s for a dead process's row and then printed `aborted`, the row expires
 * as soon as `up` has seen it unexpired at a poll.
 */
async function replay(
  e: ExpectStatic,
  db: TestDb,
  names: string[],
  opts: { first?: Record<string, string>; owners?: Map<string, string> } = {},
): Promise<void> {
  const owners = opts.owners ?? new Map<string, string>();
  e(names.length, 'recorded steps').toBeGreaterThan(0);
  for (const [i, name] of names.entries()) {
    const r = rec(name);
    const before = noteDb(r, /^Database before/);
    const after = noteDb(r, /^Database after/);
    // the state before a step is the one after the previous step, unless time passed in between
    const stale = !!before.locks?.some((l) => l.secs < 0) && !!(await kongSnapshot(db)).locks?.some((l) => l.secondsLeft >= 0);
    if (stale) await expireLocks(db);
    if (i === 0 || stale) await expectDb(e, db, before, owners, `${name} (before)`);
    const args = argsOf(r);
    const waits = args[1] === 'up' && r.stdout === `${NOT_LEADER}\n` && !!before.locks?.some((l) => l.secs > 0) && !!after.locks?.every((l) => l.secs < 0);
    const run = start(db, args, i === 0 ? opts.first : {});
    if (waits) {
      await until(() => polls(run).some((p) => p.alive), 30_000, `${name}: a poll that sees the row`);
      await expireLocks(db);
    }
    const ran = await run.done;
    expectLike(e, ran, r, db, name);
    if (waits) {
      const seen = polls(run).map((p) => p.alive);
      e.soft(
        seen.length >= 2 && seen.slice(0, -1).every(Boolean) && seen.at(-1) === false,
        `${name}: waited, re-reading the row until it expired (${seen})`,
      ).toBe(true);
    } else if (r.stdout === `${NOT_LEADER}\n`) {
      e.soft(polls(run), `${name}: aborted at once`).toEqual([]);
    }
    if (r.exit !== 137)
      e.soft(run.events().some((x) => x.ev === 'migration') === /migrated up to/.test(r.stdout), `${name}: migrations ran iff the recording says so`).toBe(
        true,
      );
    // the default ttl is checked right after the row was written (later steps: only expired or not)
    await expectDb(e, db, after, owners, `${name} (after)`, i === 0);
  }
}

/** A session that holds a lock on a table (34-new-blocked-by-pg-lock: ACCESS SHARE via SELECT in an open transaction). */
async function holdTable(db: TestDb, table: string): Promise<pg.Client> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  await c.query('BEGIN');
  await c.query(`SELECT count(*) FROM ${table}`);
  return c;
}

describe('Kong stand-in conformance, recorded runs 30-38: locks, timeouts, interruption', () => {
  it('has the folders 30-38', () => {
    for (const n of ['30', '31', '32', '33', '34', '35', '36', '37', '38']) expect(all.filter((x) => x.startsWith(`${n}-`)).length, n).toBeGreaterThan(0);
  });

  it('30-new-foreignlock.up: `up` waits for a foreign unexpired row, re-reading it after 0.1, 0.3, 0.9, 2 s, and prints `aborted` (exit 0, nothing migrated) once it is expired', async ({
    expect: e,
  }) => {
    const r = rec('30-new-foreignlock.up');
    const db = await createDb();
    await seedKong(db, 'new');
    await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() + interval '60 seconds')`);
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    const run = start(db, argsOf(r));
    // recorded: the row expired after 59.7 s; here right after the third re-read (1.3 s of sleeps)
    await until(() => polls(run).length >= 3, 30_000, 'three re-reads');
    await expireLocks(db);
    const ran = await run.done;
    expectLike(e, ran, r, db, r.name);
    const ev = run.events();
    const insert = ev.find((x) => x.ev === 'lock-insert');
    e.soft(insert?.acquired, 'its INSERT into locks did nothing').toBe(false);
    const seen = polls(run).map((p) => p.alive);
    e.soft(seen.length >= 4 && seen.slice(0, -1).every(Boolean) && seen.at(-1) === false, `re-read until expired (${seen})`).toBe(true);
    const ts = [insert?.t ?? 0, ...polls(run).map((p) => p.t)];
    const gaps = ts.slice(1).map((t, i) => t - ts[i]!);
    [100, 300, 900, 2000].slice(0, gaps.length).forEach((s, i) => {
      e.soft(gaps[i], `re-read ${i + 1} after a ${s} ms sleep`).toBeGreaterThanOrEqual(s - 5);
      e.soft(gaps[i], `re-read ${i + 1} after a ${s} ms sleep`).toBeLessThan(s + 1500);
    });
    e.soft(
      ev.some((x) => x.ev === 'migration'),
      'no migration ran',
    ).toBe(false);
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
  });

  it('30-new-foreignlock.up-exit1: when the sleeps add up to --lock-timeout before the row expires: `Error: [PostgreSQL error] timeout`, exit 1, nothing migrated', async ({
    expect: e,
  }) => {
    const r = rec('30-new-foreignlock.up-exit1');
    const db = await createDb();
    await seedKong(db, 'new');
    await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() + interval '90 seconds')`);
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    // recorded with the default --lock-timeout 60 (sleeps 0.1+0.3+0.9+2*30 = 61.3 s); here 2: sleeps 0.1+0.3+0.9+2 = 3.3 s
    const run = start(db, [...argsOf(r), '--lock-timeout', '2']);
    const ran = await run.done;
    expectLike(e, ran, r, db, r.name);
    e.soft(
      polls(run).map((p) => p.alive),
      're-reads after 0.1, 0.4, 1.3 s; none after the last sleep',
    ).toEqual([true, true, true]);
    e.soft(run.events().find((x) => x.ev === 'lock-wait-timeout')?.elapsed, 'gave up when the sleeps reached 3.3 s').toBe(3.3);
    e.soft(ran.durationMs).toBeGreaterThanOrEqual(3300);
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
    e.soft(await listCode(db), '`list` right afterwards (the row still unexpired)').toBe(5);
  });

  it('31-pending-foreignlock.finish: `finish` meets a foreign row: `aborted` at once, exit 0, the pending migration stays', async ({ expect: e }) => {
    const r = rec('31-pending-foreignlock.finish');
    const db = await createDb();
    await seedKong(db, 'pending');
    await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() + interval '60 seconds')`);
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    const run = start(db, argsOf(r));
    const ran = await run.done;
    expectLike(e, ran, r, db, r.name);
    e.soft(polls(run), 'no waiting').toEqual([]);
    e.soft(run.events().find((x) => x.ev === 'lock-insert')?.acquired, 'its INSERT into locks did nothing').toBe(false);
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
    e.soft(await listCode(db)).toBe(4);
  });

  it("32-new-expiredlock.up: an expired foreign row is deleted in Kong's own lock transaction; `up` runs as 10-new.up and removes its row", async ({
    expect: e,
  }) => {
    const r = rec('32-new-expiredlock.up');
    const db = await createDb();
    await seedKong(db, 'new');
    await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() - interval '60 seconds')`);
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    const run = start(db, argsOf(r));
    const ran = await run.done;
    expectLike(e, ran, r, db, r.name);
    e.soft(normKong(ran.stdout, db)).toBe(recorded('10-new.up').stdout);
    e.soft(run.events().find((x) => x.ev === 'lock-insert')?.acquired, 'took the lock at once').toBe(true);
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
  });

  it("33-new-foreignlock.up-lock-timeout-5: waits 0.1+0.3+0.9+2+2 s and fails with `timeout`; --lock-timeout is also the ttl of Kong's own row; --db-timeout does not bound the wait", async ({
    expect: e,
  }) => {
    const r = rec('33-new-foreignlock.up-lock-timeout-5');
    const recorded10 = recorded('10-new.up');
    const main = async () => {
      const db = await createDb();
      await seedKong(db, 'new');
      await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() + interval '60 seconds')`);
      const owners = new Map<string, string>();
      await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
      const run = start(db, argsOf(r));
      const ran = await run.done;
      expectLike(e, ran, r, db, r.name);
      e.soft(
        polls(run).map((p) => [p.elapsed, p.alive]),
        're-reads after 0.1, 0.4, 1.3, 3.3 s of sleeps',
      ).toEqual([
        [0.1, true],
        [0.4, true],
        [1.3, true],
        [3.3, true],
      ]);
      e.soft(run.events().find((x) => x.ev === 'lock-wait-timeout')?.elapsed, 'the sleeps reached 5.3 s >= 5').toBe(5.3);
      e.soft(ran.durationMs, 'recorded: 6.17 s').toBeGreaterThanOrEqual(5300);
      await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
    };
    /** Kong's own row while it holds the lock: ttl = now + --lock-timeout (measured: now + 5.0 s; default now + 60 s). */
    const ownTtl = async (extra: string[], want: number) => {
      const db = await createDb();
      await seedKong(db, 'new');
      const go = path.join(db.dir, 'go');
      const run = start(db, ['migrations', 'up', ...extra], { KONG_STANDIN_HOLD_AT: `locked=${go}` });
      await sawEvent(run, 'hold', 'the lock to be taken');
      const locks = (await kongSnapshot(db)).locks ?? [];
      e.soft(
        locks.map((l) => UUID.test(l.owner)),
        `one row of Kong's (${extra.join(' ') || 'default'})`,
      ).toEqual([true]);
      e.soft(locks[0]?.secondsLeft, `ttl = now + ${want} s`).toBeGreaterThan(want - 3);
      e.soft(locks[0]?.secondsLeft, `ttl = now + ${want} s`).toBeLessThanOrEqual(want + 0.05);
      fs.writeFileSync(go, '');
      const ran = await run.done;
      e.soft([ran.exitCode, normKong(ran.stdout, db)]).toEqual([0, recorded10.stdout]);
    };
    /** The related runs without folders: a foreign row that expires during the wait (here: counted from Kong's INSERT attempt). */
    const expiresAfter = async (extra: string[], seconds: number) => {
      const db = await createDb();
      await seedKong(db, 'new');
      const go = path.join(db.dir, 'go');
      const run = start(db, ['migrations', 'up', ...extra], { KONG_STANDIN_HOLD_AT: `lock=${go}` });
      await sawEvent(run, 'hold', 'Kong about to take the lock');
      await db.query(`INSERT INTO locks (key, owner, ttl) VALUES ('migrations', 'foreign-by-hand', now() + make_interval(secs => $1))`, [seconds]);
      fs.writeFileSync(go, '');
      const ran = await run.done;
      e.soft([ran.exitCode, ran.stdout, ran.stderr], `${extra.join(' ')}: aborted once the row expired`).toEqual([0, `${NOT_LEADER}\n`, '']);
      e.soft(
        polls(run).map((p) => [p.elapsed, p.alive]),
        `${extra.join(' ')}: waited past --db-timeout`,
      ).toEqual([
        [0.1, true],
        [0.4, true],
        [1.3, true],
        [3.3, false],
      ]);
      e.soft(
        run.events().some((x) => x.ev === 'timeout'),
        'no socket timeout',
      ).toBe(false);
      const locks = (await kongSnapshot(db)).locks ?? [];
      e.soft(
        locks.map((l) => [l.owner, l.secondsLeft < 0]),
        'the expired foreign row is still there',
      ).toEqual([['foreign-by-hand', true]]);
      e.soft(
        (await kongSnapshot(db)).schemaMeta?.some((m) => m.subsystem === 'ai-proxy'),
        'nothing migrated',
      ).toBe(false);
    };
    await Promise.all([
      main(),
      ownTtl(['--lock-timeout', '5'], 5),
      ownTtl([], 60),
      // recorded: row expiring 3 s after the start, exit 0 after 4.00 s
      expiresAfter(['--lock-timeout', '5'], 3),
      // recorded: --db-timeout 3 and a row expiring after 10 s: exit 0 after 11.82 s; here 1 and 2.8 s
      expiresAfter(['--db-timeout', '1'], 2.8),
    ]);
  });

  it("34-new-stalled-at-connect.list: PostgreSQL never answers: `list` exits 1 after --db-timeout with pgmoon's `receive_message: failed to get type: timeout`", async ({
    expect: e,
  }) => {
    const r = rec('34-new-stalled-at-connect.list');
    const db = await createDb();
    await seedKong(db, 'new');
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    const proxy = await stallProxy({ host: db.host, port: db.port });
    try {
      // a real stall between the stand-in and PostgreSQL: TCP connects, the startup gets no answer
      proxy.freeze({ freezeNew: true });
      const run = start(db, argsOf(r), { KONG_PG_PORT: String(proxy.port) });
      const ran = await run.done;
      expectLike(e, ran, r, db, r.name);
      e.soft(ran.durationMs, 'one 3 s timeout (recorded: 3.55 s)').toBeGreaterThanOrEqual(3000);
      e.soft(ran.durationMs, 'one 3 s timeout (recorded: 3.55 s)').toBeLessThan(8000);
    } finally {
      await proxy.close();
    }
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
  });

  it('34-new-stalled-mid-migration.up: stalled from core 023 on: three timeouts (query, ROLLBACK, lock removal), a Lua traceback, its `locks` row left behind', async ({
    expect: e,
  }) => {
    const r = rec('34-new-stalled-mid-migration.up');
    const db = await createDb();
    await seedKong(db, 'new');
    const owners = new Map<string, string>();
    await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
    // recorded with --db-timeout 3 (9.68 s); here 1
    const args = argsOf(r).map((a, i, l) => (l[i - 1] === '--db-timeout' ? '1' : a));
    const run = start(db, args, { KONG_STANDIN_STALL_AT: 'up:core/023_360_to_370' });
    const ran = await run.done;
    expectLike(e, ran, r, db, r.name);
    e.soft(run.events().filter((x) => x.ev === 'timeout').length, 'three timeouts').toBe(3);
    e.soft(ran.durationMs, 'three 1 s timeouts').toBeGreaterThanOrEqual(3000);
    await expectDb(e, db, noteDb(r, /^After/), owners, 'after');
    e.soft(await listCode(db), '`list` right afterwards').toBe(5);
  });

  it("34-new-blocked-by-pg-lock.up: core 023 blocked by another session's table lock: exit 1 after one timeout, but PostgreSQL commits it later (applied, not recorded); the next `up` runs it again", async ({
    expect: e,
  }) => {
    const r = rec('34-new-blocked-by-pg-lock.up');
    const args = argsOf(r).map((a, i, l) => (l[i - 1] === '--db-timeout' ? '1' : a)); // recorded: 3 (4.40 s)
    const lockTable = async () => {
      const db = await createDb();
      await seedKong(db, 'new');
      const owners = new Map<string, string>();
      await expectDb(e, db, noteDb(r, /^Before/), owners, 'before');
      const holder = await holdTable(db, 'clustering_data_planes');
      try {
        const run = start(db, args);
        const ran = await run.done;
        expectLike(e, ran, r, db, r.name);
        e.soft(run.events().filter((x) => x.ev === 'timeout').length, 'one timeout: the ROLLBACK and the lock removal used new connections').toBe(1);
        await expectDb(e, db, noteDb(r, /^Right after Kong exited/), owners, 'right after Kong exited');
        const waiting = await db.query<{ w: string }>(
          `SELECT wait_event_type AS w FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'BEGIN;%clustering_rpc_requests%'`,
          [db.name],
        );
        e.soft(
          waiting.rows.map((x) => x.w),
          "the backend of Kong's closed connection still waits for the lock",
        ).toEqual(['Lock']);
      } finally {
        await holder.query('COMMIT');
        await holder.end();
      }
      await until(
        async () => (await db.query(`SELECT to_regclass('public.clustering_rpc_requests') AS t`)).rows[0]!.t !== null,
        30_000,
        'the migration to commit',
      );
      const col = await db.query(`SELECT 1 FROM information_schema.columns WHERE table_name = 'clustering_data_planes' AND column_name = 'rpc_capabilities'`);
      e.soft(col.rows.length, 'clustering_data_planes.rpc_capabilities exists').toBe(1);
      await expectDb(e, db, noteDb(r, /^After the other session committed/), owners, 'after the other session committed');
      const list5 = await kong(db, ['migrations', 'list']);
      e.soft([list5.exitCode, normKong(list5.stdout, db)], 'still lists core 023 as new').toEqual([5, recorded('09-new.list').stdout]);
      const up = await kong(db, ['migrations', 'up']);
      e.soft([up.exitCode, normKong(up.stdout, db), up.stderr], '023 runs again without error').toEqual([0, recorded('10-new.up').stdout, '']);
      const runs = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM standin_runs WHERE name = '023_360_to_370' AND phase = 'up'`);
      e.soft(runs.rows[0]!.n, 'core 023 applied twice').toBe(2);
      e.soft(await listCode(db)).toBe(4);
    };
    /** The same with the KONG_STANDIN_PG_BUSY knob (PostgreSQL busy in the migration's own transaction). */
    const busyKnob = async () => {
      const db = await createDb();
      await seedKong(db, 'new');
      const run = start(db, args, { KONG_STANDIN_PG_BUSY: 'up:core/023_360_to_370=2' });
      const ran = await run.done;
      expectLike(e, ran, r, db, `${r.name} (KONG_STANDIN_PG_BUSY)`);
      e.soft((await kongSnapshot(db)).locks, 'lock row removed').toEqual([]);
      await until(
        async () => (await db.query(`SELECT 1 FROM standin_runs WHERE name = '023_360_to_370'`)).rows.length === 1,
        30_000,
        'the busy migration to commit',
      );
      const core = (await kongSnapshot(db)).schemaMeta?.find((m) => m.subsystem === 'core');
      e.soft(core?.executed.includes('023_360_to_370'), 'applied but not recorded').toBe(false);
    };
    await Promise.all([lockTable(), busyKnob()]);
  });

  it("35-concurrent-finish: two `finish` at once: exactly one runs the teardown; the other prints `aborted` (it met the winner's row) or `No pending migrations to finish` (it came after); all exit 0", async ({
    expect: e,
  }) => {
    const winner = rec('35-concurrent-finish.winner');
    const aborted = rec('35-concurrent-finish.loser-aborted');
    const nopending = rec('35-concurrent-finish.loser-nopending');
    const pair = async (how: 'meet' | 'after' | 'natural') => {
      const db = await createDb();
      await seedKong(db, 'pending');
      const owners = new Map<string, string>();
      await expectDb(e, db, noteDb(winner, /^Database before each repetition/), owners, `${how}: before`);
      const go = path.join(db.dir, 'go');
      // meet: both reach the INSERT into locks together, the winner holds its row for 600 ms+; after: B's INSERT waits until A exited
      const envA: Record<string, string> = how === 'meet' ? { KONG_STANDIN_BARRIER: `${db.dir}/barrier:2`, KONG_STANDIN_DELAY_MS: '600' } : {};
      const envB: Record<string, string> = how === 'meet' ? envA : how === 'after' ? { KONG_STANDIN_HOLD_AT: `lock=${go}` } : {};
      const a = start(db, argsOf(winner), envA);
      const b = start(db, argsOf(winner), envB);
      const ra = await a.done;
      fs.writeFileSync(go, '');
      const rb = await b.done;
      const [w, l] = /migrated up to/.test(ra.stdout) ? [ra, rb] : [rb, ra];
      expectLike(e, w, winner, db, `${how}: winner`);
      if (how === 'meet') expectLike(e, l, aborted, db, `${how}: loser`);
      else if (how === 'after') expectLike(e, l, nopending, db, `${how}: loser`);
      else
        e.soft([l.exitCode, l.stdout, l.stderr], `${how}: loser`).toSatisfy(
          ([c, o, x]: [number, string, string]) => c === 0 && x === '' && [aborted.stdout, nopending.stdout].includes(o),
        );
      const teardowns = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM standin_runs WHERE phase = 'teardown'`);
      e.soft(teardowns.rows[0]!.n, `${how}: one teardown`).toBe(1);
      await expectDb(e, db, noteDb(winner, /^Database after repetition 1/), owners, `${how}: after`);
      e.soft(await listCode(db), `${how}: list afterwards`).toBe(0);
    };
    await Promise.all([pair('meet'), pair('after'), pair('natural')]);
  });

  it('36-list-during-up: `list` reports what schema_meta holds at its one read; nothing says a migration is running', async ({ expect: e }) => {
    const upOut = recorded('10-new.up').stdout;
    const before = async () => {
      const r = rec('36-list-during-up.read-before-up-recorded');
      const db = await createDb();
      await seedKong(db, 'new');
      const go = path.join(db.dir, 'go');
      const up = start(db, ['migrations', 'up'], { KONG_STANDIN_HOLD_AT: `locked=${go}` });
      await sawEvent(up, 'hold', '`up` to hold the lock');
      e.soft((await kongSnapshot(db)).locks?.length, "`up`'s row is there while `list` runs").toBe(1);
      expectLike(e, await kong(db, argsOf(r)), r, db, r.name);
      fs.writeFileSync(go, '');
      const u = await up.done;
      e.soft([u.exitCode, normKong(u.stdout, db)]).toEqual([0, upOut]);
      await expectDb(e, db, noteDb(r, /^Database after every pair/), new Map(), `${r.name}: after`);
    };
    const between = async () => {
      const r = rec('36-list-during-up.read-between-records');
      const db = await createDb();
      await seedKong(db, 'new');
      const go = path.join(db.dir, 'go');
      const up = start(db, ['migrations', 'up'], { KONG_STANDIN_HOLD_AT: `record:ai-proxy/001_360_to_370=${go}` });
      await sawEvent(up, 'hold', '`up` to pause between its two records');
      const owners = new Map<string, string>();
      await expectDb(e, db, noteDb(r, /^Database while `up` was paused/), owners, `${r.name}: while paused`);
      expectLike(e, await kong(db, argsOf(r)), r, db, r.name);
      fs.writeFileSync(go, '');
      const u = await up.done;
      e.soft([u.exitCode, normKong(u.stdout, db)]).toEqual([0, upOut]);
      await expectDb(e, db, noteDb(r, /^Database after every pair/), owners, `${r.name}: after`);
    };
    const afterUp = async () => {
      const r = rec('36-list-during-up.read-after-up-finished');
      const db = await createDb();
      await seedKong(db, 'new');
      const go = path.join(db.dir, 'go');
      const list = start(db, argsOf(r), { KONG_STANDIN_HOLD_AT: `state=${go}` });
      const up = await kong(db, ['migrations', 'up']);
      e.soft([up.exitCode, normKong(up.stdout, db)]).toEqual([0, upOut]);
      fs.writeFileSync(go, '');
      expectLike(e, await list.done, r, db, r.name);
      await expectDb(e, db, noteDb(r, /^Database after every pair/), new Map(), `${r.name}: after`);
    };
    await Promise.all([before(), between(), afterUp()]);
  });

  // 37/38: one database per sequence; the sequences run side by side
  const killed: Array<[string, 'empty' | 'new', Record<string, string>]> = [
    ['37-bootstrap-killed-200ms', 'empty', { KONG_STANDIN_KILL_AT: 'start' }],
    ['37-bootstrap-killed-400ms', 'empty', { KONG_STANDIN_KILL_AT: 'start' }],
    ['37-bootstrap-killed-000_base-unrecorded', 'empty', { KONG_STANDIN_KILL_AT: 'record:core/000_base' }],
    ['37-bootstrap-killed-700ms', 'empty', { KONG_STANDIN_KILL_AT: 'up:core/018_310_to_320' }],
    ['37-bootstrap-killed-mid-teardown', 'empty', { KONG_STANDIN_KILL_AT: 'teardown:core/009_200_to_210' }],
    ['37-bootstrap-killed-before-unlock', 'empty', { KONG_STANDIN_KILL_AT: 'unlock' }],
    ['38-up-killed-200ms', 'new', { KONG_STANDIN_KILL_AT: 'start' }],
    ['38-up-killed-400ms', 'new', { KONG_STANDIN_KILL_AT: 'locked' }],
    ['38-up-killed-after-lock', 'new', { KONG_STANDIN_KILL_AT: 'locked' }],
    ['38-up-killed-023-applied-unrecorded', 'new', { KONG_STANDIN_KILL_AT: 'record:core/023_360_to_370' }],
    ['38-up-killed-after-core-recorded', 'new', { KONG_STANDIN_KILL_AT: 'up:ai-proxy/001_360_to_370' }],
    ['38-up-killed-before-unlock', 'new', { KONG_STANDIN_KILL_AT: 'unlock' }],
    // it had finished by itself before the kill came
    ['38-up-killed-700ms', 'new', {}],
  ];
  describe.concurrent('37/38: `bootstrap` and `up` killed (SIGKILL to the whole chain), then what `list` asks for', () => {
    for (const [seq, shape, first] of killed) {
      it(`${seq}: every step as recorded`, async ({ expect: e }) => {
        const db = await createDb();
        if (shape === 'new') await seedKong(db, 'new');
        await replay(e, db, steps(seq), { first });
      });
    }

    it('37-bootstrap-killed-no-locks-table: schema_meta without `locks`; `up`/`finish` fail until repaired (bootstrap --force; reset --yes + bootstrap; CREATE TABLE locks + up + finish; DROP TABLE schema_meta + bootstrap)', async ({
      expect: e,
    }) => {
      const seq = '37-bootstrap-killed-no-locks-table';
      const first = { KONG_STANDIN_KILL_AT: 'locks-table' };
      const fromNewCopy = async () => {
        const db = await createDb();
        await replay(e, db, [steps(seq)[0]!], { first });
        return db;
      };
      /** The repairs without folders: "  NN  psql: SQL   exit 0   0.00 s" and "  NN  kong migrations X   exit N   T s". */
      const repairLines = (name: string) => {
        const notes = rec(steps(seq)[0]!).notes;
        const at = notes.indexOf(`${name} (from a new copy of the state; no folders):`);
        e(at, name).toBeGreaterThan(0);
        return notes
          .slice(at)
          .split('\n\n')[0]!
          .split('\n')
          .slice(1)
          .map((l) => /^\s+\d\d\s+(?:psql: (.+?)|kong (migrations \S+))\s+exit (\d+)\s/.exec(l)!)
          .map((m) => ({ sql: m[1], args: m[2]?.split(' '), exit: Number(m[3]) }));
      };
      const byHand = async (name: string) => {
        const db = await fromNewCopy();
        for (const s of repairLines(name)) {
          if (s.sql) await kongQuery(db, s.sql);
          else e.soft((await kong(db, s.args!)).exitCode, `${name}: kong ${s.args!.join(' ')}`).toBe(s.exit);
        }
      };
      await Promise.all([
        (async () => replay(e, await createDb(), steps(seq), { first }))(),
        (async () => replay(e, await fromNewCopy(), steps(`${seq}.repair-force`)))(),
        (async () => replay(e, await fromNewCopy(), steps(`${seq}.repair-reset`)))(),
        byHand('repair-create-locks'),
        byHand('repair-drop-schema_meta'),
      ]);
    });
  });
});
