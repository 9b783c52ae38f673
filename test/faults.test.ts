/** Faults and races with real processes against a real Postgres (issue: prove it). */
import { describe, expect, it } from 'vitest';
import { embeddedServer } from './helpers/embedded.js';
import { createDb, KONG_PASSWORD, listCode, readStatus, runCli, seed, spawnCli, standinEvents, type TestDb } from './helpers/harness.js';

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const migrationsRun = (db: TestDb) => standinEvents(db).filter((e) => e.ev === 'migration').length;
async function noDuplicates(db: TestDb) {
  const dup = await db.query(`SELECT subsystem, name, phase, count(*)::int AS n FROM standin_runs GROUP BY 1, 2, 3 HAVING count(*) > 1`);
  expect(dup.rows).toEqual([]);
}
async function runsCount(db: TestDb): Promise<number> {
  return Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM standin_runs`)).rows[0]!.n);
}
/** The Kong child is gone: no migration is recorded after a pause. Returns how many ran. */
async function expectKongStopped(db: TestDb, pauseMs = 800): Promise<number> {
  const n = await runsCount(db);
  await new Promise((res) => setTimeout(res, pauseMs));
  expect(await runsCount(db)).toBe(n);
  return n;
}
/** A rerun completes a bootstrap cut short: with `up`, so the teardown migration waits for finish. */
async function expectRerunCompletes(db: TestDb): Promise<void> {
  const again = await runCli(['migrate'], db.env());
  expect(again.exitCode, again.stderr).toBe(0);
  expect(await listCode(db)).toBe(4);
  await noDuplicates(db);
}

describe('faults', () => {
  it('holder killed (SIGKILL, whole pod) mid-bootstrap: the next migrate copes with Kong\'s leftover lock row and finishes, nothing ran twice', async () => {
    const db = await createDb();
    const slow = db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' });
    const first = spawnCli(['migrate'], slow, { detached: true });
    await until(() => migrationsRun(db) >= 10, 20_000, 'bootstrap to be half-way');
    process.kill(-first.pid!, 'SIGKILL');
    await first.catch(() => {});
    const left = await db.query<{ owner: string }>(`SELECT owner FROM locks WHERE key = 'migrations'`);
    expect(left.rows).toHaveLength(1);
    expect(await listCode(db)).toBe(5);
    const second = await runCli(['migrate'], db.env());
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/aborted by Kong's own lock; retrying.*kong_lock_owner=/);
    // a bootstrap cut short is completed by `up`, which (like Kong's own `up`) leaves the
    // teardown migration pending: a state `kong start` accepts
    expect(await listCode(db)).toBe(4);
    await noDuplicates(db);
    expect(await runsCount(db)).toBe(66);
  });

  it("Kong's `up` gives up waiting for a leftover lock row (exit 1, \"timeout\"): migrate waits for the row to expire and retries", async () => {
    const db = await createDb();
    await seed(db, '3.6');
    await db.query(`INSERT INTO locks VALUES ('migrations', 'killed-node', now() + interval '2500 milliseconds')`);
    const r = await runCli(['migrate'], db.env({ KONG_DB_INIT_KONG_LOCK_TIMEOUT: '1' }));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\[kong migrations up\] Error: \[PostgreSQL error\] timeout/);
    expect(r.stderr).toMatch(/aborted by Kong's own lock; retrying.*kong_lock_owner=killed-node/);
    expect(await listCode(db)).toBe(4);
    await noDuplicates(db);
  });

  it('Postgres restarts while migrate waits for it: migrate recovers', async () => {
    const server = await embeddedServer({ password: KONG_PASSWORD });
    try {
      const db = await createDb();
      const env = db.env({ KONG_PG_PORT: String(server.port), KONG_PG_USER: 'postgres', KONG_PG_DATABASE: 'postgres' });
      await server.stop();
      const child = spawnCli(['migrate'], env);
      await new Promise((r) => setTimeout(r, 1500));
      await server.start();
      const r = await child;
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toMatch(/waiting for postgres attempt=2/);
    } finally {
      await server.destroy();
    }
  });

  it('Postgres restarts while Kong runs: migrate fails with a documented code, the next run recovers', async () => {
    const server = await embeddedServer({ password: KONG_PASSWORD });
    try {
      const db = await createDb();
      const env = db.env({ KONG_PG_PORT: String(server.port), KONG_PG_USER: 'postgres', KONG_PG_DATABASE: 'postgres', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' });
      const child = spawnCli(['migrate'], { ...env, KONG_STANDIN_DELAY_MS: '40' });
      await until(() => migrationsRun(db) >= 5, 20_000, 'Kong to be running');
      await server.stop();
      const r = await child;
      expect([13, 14]).toContain(r.exitCode);
      await server.start();
      const again = await runCli(['migrate'], env);
      expect(again.exitCode, again.stderr).toBe(0);
      const c = await runCli(['status'], env);
      expect(c.exitCode).toBe(4);
    } finally {
      await server.destroy();
    }
  });

  it('lock session lost (pg_terminate_backend) while Kong runs: Kong is stopped, exit 13, a rerun completes', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate'], db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' }));
    await until(() => migrationsRun(db) >= 5, 20_000, 'Kong to be running');
    const killed = await db.query<{ ok: boolean }>(
      `SELECT pg_terminate_backend(a.pid) AS ok FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'kong-db-init/%' AND a.datname = current_database()`,
    );
    expect(killed.rows).toEqual([{ ok: true }]);
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(13);
    expect(String(r.stderr)).toMatch(/lost the advisory-lock session/);
    const h = await db.query(`SELECT outcome, exit_code FROM kong_db_init_history`);
    expect(h.rows).toEqual([{ outcome: 'failed', exit_code: 13 }]);
    expect(await expectKongStopped(db)).toBeLessThan(66);
    await expectRerunCompletes(db);
  });

  it('SIGTERM mid-run: Kong gets the signal, the lock is released, status says interrupted, a rerun completes', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate'], db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' }));
    await until(() => migrationsRun(db) >= 5, 20_000, 'Kong to be running');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(readStatus(db)).toMatchObject({ outcome: 'interrupted', exit_code: 130 });
    const boot = standinEvents(db).find((e) => e.ev === 'bootstrap')!;
    await expectKongStopped(db);
    expect(standinEvents(db).some((e) => e.pid === boot.pid && e.ev === 'exit')).toBe(false); // killed by the signal
    const h = await db.query(`SELECT outcome FROM kong_db_init_history`);
    expect(h.rows).toEqual([{ outcome: 'interrupted' }]);
    const locks = await db.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory'`);
    expect(locks.rows).toEqual([]);
    await expectRerunCompletes(db);
  });

  it('SIGTERM mid-run with a Kong that ignores it: killed after --grace-period, exit 130', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate', '--grace-period', '1s'], db.env({ KONG_STANDIN_DELAY_MS: '60', KONG_STANDIN_IGNORE_TERM: '1' }));
    await until(() => migrationsRun(db) >= 3, 20_000, 'Kong to be running');
    const t = Date.now();
    child.kill('SIGTERM');
    const r = await child;
    const took = Date.now() - t;
    expect(r.exitCode).toBe(130);
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(5000);
    expect(await expectKongStopped(db, 500)).toBeLessThan(66);
  });

  for (const shape of ['empty', '3.6'] as const) {
    it(`32 racing pods on ${shape === 'empty' ? 'an empty' : 'a 3.6-shaped'} database: all exit 0, exactly one ${shape === 'empty' ? 'bootstrap' : 'up'}`, async () => {
      const db = await createDb();
      if (shape === '3.6') await seed(db, '3.6');
      const runs = await Promise.all(Array.from({ length: 32 }, () => spawnCli(['migrate'], db.env())));
      const codes = runs.map((r) => r.exitCode);
      expect(codes.filter((c) => c !== 0), runs.map((r) => String(r.stderr)).find((_s, i) => codes[i] !== 0)?.slice(-1500)).toEqual([]);
      const ev = standinEvents(db).filter((e) => ['bootstrap', 'up', 'finish'].includes(e.ev)).map((e) => e.ev);
      expect(ev).toEqual([shape === 'empty' ? 'bootstrap' : 'up']);
      await noDuplicates(db);
      expect(await listCode(db)).toBe(shape === 'empty' ? 0 : 4);
    });
  }
});
