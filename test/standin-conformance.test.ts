/**
 * The Kong stand-in must behave like the real Kong 3.7.1 CLI: every recorded run in
 * test/fixtures/kong-cli-3.7.1 (copied from ../shared) is replayed against a real database in
 * the same state, and the exit status, stdout and stderr must match.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createDb, FIXTURES, runKong, seed, type TestDb } from './helpers/harness.js';

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

describe('Kong stand-in conformance with the recorded Kong 3.7.1 CLI', () => {
  it('has every recorded case', () => {
    expect(all.length).toBeGreaterThanOrEqual(22);
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
    const seen = new Set<string>();
    for (let trial = 0; trial < 6 && seen.size < 1; trial++) {
      const db = await createDb();
      await seed(db, '3.6');
      const env = db.env({ KONG_STANDIN_DELAY_MS: '40' });
      const [a, b] = await Promise.all([runKong(['migrations', 'up'], env), runKong(['migrations', 'up'], env)]);
      const loser = [a, b].find((r) => !r.stdout.includes('migrated up to'));
      const winner = [a, b].find((r) => r.stdout.includes('migrated up to'));
      expect(winner?.exitCode).toBe(0);
      if (loser) {
        if (loser.exitCode === 0) {
          expect(loser.stdout.trim()).toBe(abortedRec.stdout.trim());
          seen.add('aborted');
        } else {
          expect(loser.exitCode).toBe(exit1Rec.exit);
          expect(loser.stderr.split('\n')[0]).toBe(exit1Rec.stderr.split('\n')[0]);
          seen.add('exit1');
        }
      }
      const runs = await db.query(`SELECT subsystem, name, count(*)::int AS n FROM standin_runs GROUP BY 1, 2 HAVING count(*) > 1`);
      expect(runs.rows).toEqual([]);
    }
    expect(seen.size).toBeGreaterThan(0);
  });

  it('23: concurrent bootstraps race like Kong (a loser aborts or fails with a Postgres race error)', async () => {
    const rec = recorded('23-concurrent-bootstrap.loser-exit1');
    const raceErrors = /tuple concurrently updated|already exists|duplicate key value violates unique constraint/;
    let losers = 0;
    for (let trial = 0; trial < 8 && losers < 2; trial++) {
      const db = await createDb();
      // ~0.7 s of migrations, like the real bootstrap, so that two runs overlap on a busy machine
      const env = db.env({ KONG_STANDIN_DELAY_MS: '10' });
      const rs = await Promise.all([runKong(['migrations', 'bootstrap'], env), runKong(['migrations', 'bootstrap'], env)]);
      for (const r of rs) {
        if (r.stdout.includes('66 executed')) continue;
        if (r.exitCode === 1) {
          expect(r.stdout.trim()).toBe(rec.stdout.trim());
          expect(r.stderr).toMatch(raceErrors);
          expect(r.stderr).toMatch(/^Error: \[PostgreSQL error\] failed to (bootstrap database|run migration)/);
          losers++;
        } else if (r.stdout.includes('aborted: another node is performing database changes')) {
          expect(r.exitCode).toBe(0);
          losers++;
        } else {
          expect(r.stdout.trim()).toBe('Database already bootstrapped');
        }
      }
    }
    expect(losers).toBeGreaterThan(0);
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
