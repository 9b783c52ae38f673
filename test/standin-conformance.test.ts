/**
 * The Kong stand-in must behave like the real Kong 3.7.1 CLI: every recorded run in
 * test/fixtures/kong-cli-3.7.1 (copied from ../shared) is replayed against a real database in
 * the same state, and the exit status, stdout and stderr must match.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { alive, createDb, FIXTURES, listCode, runKong, seed, STANDIN_BIN, standinEvents, until, type TestDb } from './helpers/harness.js';

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
        expect(first(r.stderr)).toMatch(/^Error: \[PostgreSQL error\] failed to retrieve PostgreSQL server_version_num: \[cosocket\] DNS resolution failed: dns server error: 3 name error/);
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
    const rows = await db.query<{ line: string }>(
      `SELECT key || ',' || subsystem || ',' || last_executed AS line FROM schema_meta ORDER BY subsystem`,
    );
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

  it("21/22: a concurrent `up` loser exits 0 with \"aborted…\" or 1 with \"pending migrations\", and the winner's work is done once", async () => {
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
    for (const name of ['24-pendingnew.list', '25-pendingnew.up', '26-pendingnew.finish', '27-new-after-finish.list', '28-new-after-finish.up', '29-after-up.list']) {
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
      execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'bootstrap'], { env: db.env({ KONG_STANDIN_DELAY_MS: '30', ...extra }), extendEnv: false, reject: false });
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
      const listenersOff = { KONG_PROXY_LISTEN: 'off', KONG_ADMIN_LISTEN: 'off', KONG_ADMIN_GUI_LISTEN: 'off', KONG_STATUS_LISTEN: 'off', KONG_STREAM_LISTEN: 'off' };
      expect((await runKong(['migrations', 'list'], db.env({ KONG_PREFIX: off, ...listenersOff }))).exitCode).toBe(3);
      expect(fs.existsSync(path.join(off, 'ssl'))).toBe(false);
    });

    it('each `up` migration and its schema_meta record are committed separately', async () => {
      const db = await createDb();
      await seed(db, '3.6');
      const child = execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'up'], { env: db.env({ KONG_STANDIN_RECORD_DELAY_MS: '3000' }), extendEnv: false, reject: false });
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
