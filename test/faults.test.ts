/** Faults and races with real processes against a real Postgres (issue: prove it). */
import path from 'node:path';
import { execa } from 'execa';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { embeddedServer } from './helpers/embedded.js';
import { holdLock, terminateLockSession } from './helpers/locks.js';
import {
  admin,
  alive,
  createDb,
  KONG_PASSWORD,
  killPod,
  listCode,
  readStatus,
  runCli,
  seed,
  spawnCli,
  STANDIN_BIN,
  stallProxy,
  standinEvents,
  standinPids,
  until,
  type TestDb,
} from './helpers/harness.js';

const migrationsRun = (db: TestDb) => standinEvents(db).filter((e) => e.ev === 'migration').length;
async function noDuplicates(db: TestDb) {
  const dup = await db.query(`SELECT subsystem, name, phase, count(*)::int AS n FROM standin_runs GROUP BY 1, 2, 3 HAVING count(*) > 1`);
  expect(dup.rows).toEqual([]);
}
async function runsCount(db: TestDb): Promise<number> {
  return Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM standin_runs`)).rows[0]!.n);
}
/** No Kong process of ours is left, and no migration is recorded after a pause. Returns how many ran. */
async function expectKongGone(db: TestDb, pauseMs = 800): Promise<number> {
  expect(standinPids(db).filter(alive)).toEqual([]);
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
const waitingForLock = (out: () => string) => until(() => /waiting for the migration lock/.test(out()), 60_000, 'migrate to wait for the lock');

describe('faults (real Postgres, real processes; Kong: the 3.7.1 stand-in chain)', () => {
  /** A pod killed mid-bootstrap: Kong's chain dies with it and leaves its `locks` row (ttl 3 s, pushed to 8 s). */
  async function killedMidBootstrap(): Promise<TestDb> {
    const db = await createDb();
    const slow = db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' });
    const first = spawnCli(['migrate'], slow, { detached: true });
    await until(() => migrationsRun(db) >= 10, 30_000, 'bootstrap to be half-way');
    killPod(db, first.pid!);
    await first.catch(() => {});
    await until(() => !standinPids(db).some(alive), 10_000, 'the pod to be gone');
    const left = await db.query<{ owner: string }>(`SELECT owner FROM locks WHERE key = 'migrations'`);
    expect(left.rows).toHaveLength(1);
    // however long the kill took on a busy machine: the row is still there when the next run starts
    // (in Kong's own convention: a UTC wall-clock time stored in a timestamptz column)
    await db.query(`UPDATE locks SET ttl = (CURRENT_TIMESTAMP AT TIME ZONE 'UTC') + interval '8 seconds' WHERE key = 'migrations'`);
    expect(await listCode(db)).toBe(5);
    return db;
  }

  /** A bootstrap cut short is completed by `up`, which (like Kong's own `up`) leaves the teardown pending. */
  async function completedOnce(db: TestDb): Promise<void> {
    expect(await listCode(db)).toBe(4);
    await noDuplicates(db);
    expect(await runsCount(db)).toBe(66);
  }

  it("holder killed (SIGKILL, whole pod) mid-bootstrap: the next migrate deletes the dead Kong's lock row (no other session), finishes, nothing ran twice", async () => {
    const db = await killedMidBootstrap();
    const owner = (await db.query<{ owner: string }>(`SELECT owner FROM locks`)).rows[0]!.owner;
    const second = await runCli(['migrate'], db.env());
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.stderr).toContain(`repaired: Kong's "migrations" lock row (owner ${owner}`);
    expect(second.stderr).not.toMatch(/aborted by Kong's own lock/);
    expect(readStatus(db).repaired).toMatch(/left by a killed Kong: no other session is on the database, so it was deleted/);
    const h = await db.query<{ actions: Array<{ action: string; note?: string }> }>('SELECT actions FROM kong_db_init_history ORDER BY id DESC LIMIT 1');
    expect(h.rows[0]!.actions[0]).toMatchObject({ action: 'repair', note: expect.stringContaining(owner) });
    await completedOnce(db);
  });

  it("holder killed mid-bootstrap, --no-repair: the next migrate waits out Kong's leftover lock row, then finishes", async () => {
    const db = await killedMidBootstrap();
    const second = await runCli(['migrate', '--no-repair'], db.env());
    expect(second.exitCode, second.stderr).toBe(0);
    // as real Kong (runs 30, 37, 38): `up` waits on the row, prints `aborted` once it expired, did nothing; we retry
    expect(second.stderr).toMatch(/lock row \(owner [0-9a-f-]{36}\) is held: --repair=false, waiting for its ttl/);
    expect(second.stderr).toMatch(
      /\[kong migrations up\] aborted: another node is performing database changes\n.*kong migrations up was aborted by Kong's own lock; retrying/,
    );
    expect(second.stderr).not.toMatch(/repaired:/);
    await completedOnce(db);
  });

  it('a leftover lock row while another session is on the database (it could be a running Kong): not deleted, its ttl is waited out', async () => {
    const db = await createDb();
    await seed(db, '3.6');
    await db.query(`INSERT INTO locks VALUES ('migrations', 'other-node', (CURRENT_TIMESTAMP AT TIME ZONE 'UTC') + interval '4 seconds')`);
    const other = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name, application_name: 'kong' });
    await other.connect();
    try {
      const r = await runCli(['migrate'], db.env({ KONG_DB_INIT_KONG_LOCK_TIMEOUT: '1' }));
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/1 other session\(s\) on the database could be a running Kong migration: waiting for its ttl/);
      expect(r.stderr).not.toMatch(/repaired:/);
      expect(r.stderr).toMatch(/aborted by Kong's own lock; retrying.*kong_lock_owner=other-node/);
      expect(await listCode(db)).toBe(4);
    } finally {
      await other.end();
    }
  });

  it('Kong\'s `up` gives up waiting for a leftover lock row (exit 1, "timeout"), --no-repair: migrate waits for the row to expire and retries', async () => {
    const db = await createDb();
    await seed(db, '3.6');
    // Kong's `up` (--lock-timeout 1 s) starts well within these 6 s and gives up waiting for the row
    await db.query(`INSERT INTO locks VALUES ('migrations', 'killed-node', (CURRENT_TIMESTAMP AT TIME ZONE 'UTC') + interval '6 seconds')`);
    const r = await runCli(['migrate', '--no-repair'], db.env({ KONG_DB_INIT_KONG_LOCK_TIMEOUT: '1' }));
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

  it('Postgres restarts while Kong runs: migrate fails with a documented code, no Kong process is left, the next run recovers', async () => {
    const server = await embeddedServer({ password: KONG_PASSWORD });
    try {
      const db = await createDb();
      const env = db.env({ KONG_PG_PORT: String(server.port), KONG_PG_USER: 'postgres', KONG_PG_DATABASE: 'postgres', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' });
      const child = spawnCli(['migrate'], { ...env, KONG_STANDIN_DELAY_MS: '40' });
      await until(() => migrationsRun(db) >= 5, 30_000, 'Kong to be running');
      await server.stop();
      const r = await child;
      expect([14, 15]).toContain(r.exitCode);
      expect(standinPids(db).filter(alive)).toEqual([]);
      await server.start();
      const again = await runCli(['migrate'], env);
      expect(again.exitCode, again.stderr).toBe(0);
      const c = await runCli(['status'], env);
      expect(c.exitCode).toBe(4);
    } finally {
      await server.destroy();
    }
  });

  it('the database connection is lost during the lock wait: migrate reconnects, keeps waiting, then migrates', async () => {
    const db = await createDb();
    const other = await holdLock(db);
    const child = spawnCli(['migrate'], db.env());
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    await waitingForLock(() => err);
    const killed = await db.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'kong-db-init/%' AND application_name <> 'kong-db-init/other-pod'`,
    );
    expect(killed.rows.length).toBeGreaterThan(0);
    await until(() => /reconnecting/.test(err), 30_000, 'the reconnect');
    await other.end();
    const r = await child;
    expect(r.exitCode, err).toBe(0);
    expect(err).toMatch(/lost the connection to Postgres while waiting for the migration lock; reconnecting/);
    expect(await listCode(db)).toBe(0);
  });

  it('lock session lost (pg_terminate_backend) while Kong runs: the step is not cut, the lock is taken again, the state re-read, exit 0', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate'], db.env({ KONG_STANDIN_DELAY_MS: '40', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' }));
    await until(() => migrationsRun(db) >= 5, 30_000, 'Kong to be running');
    await terminateLockSession(db);
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/advisory-lock session was lost; a running Kong step goes on/);
    expect(String(r.stderr)).toMatch(/migration lock taken again on a new session; state re-read state=up-to-date/);
    expect(await runsCount(db)).toBe(66);
    expect(standinEvents(db).filter((e) => e.ev === 'bootstrap')).toHaveLength(1);
    const status = readStatus(db) as { outcome: string; actions: Array<{ action: string; note?: string }> };
    expect(status.outcome).toBe('ok');
    expect(status.actions[0]).toMatchObject({ action: 'bootstrap', note: expect.stringMatching(/lock session was lost while it ran/) });
    expect(await listCode(db)).toBe(0);
  });

  it('a stalled lock session (the network stops forwarding) is declared dead, the step finishes, our stale backend is cleared and the lock re-taken', async () => {
    const db = await createDb();
    const proxy = await stallProxy({ host: db.host, port: db.port });
    try {
      const child = spawnCli(['migrate', '--lock-port', String(proxy.port)], db.env({ KONG_STANDIN_DELAY_MS: '250' }));
      await until(() => migrationsRun(db) >= 2, 30_000, 'Kong to be running');
      proxy.freeze();
      const r = await child;
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toMatch(/lock session did not answer for \d+ s/);
      expect(String(r.stderr)).toMatch(/our old lock session still holds the lock on the server; terminating it/);
      expect(await runsCount(db)).toBe(66);
      expect(await listCode(db)).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it('SIGTERM while a query hangs on a stalled connection: migrate exits 130 at once, without waiting for the query', async () => {
    const db = await createDb();
    const other = await holdLock(db);
    const proxy = await stallProxy({ host: db.host, port: db.port });
    try {
      // our queries' own timeout (15 s) and Kong's pg_timeout (60 s) are far away: only the signal ends this run
      const child = spawnCli(['migrate'], db.env({ KONG_PG_PORT: String(proxy.port), KONG_PG_TIMEOUT: '60000' }));
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      await waitingForLock(() => err);
      proxy.freeze({ freezeNew: true });
      await new Promise((res) => setTimeout(res, 500)); // a holder() query is now stuck
      const t = Date.now();
      child.kill('SIGTERM');
      const r = await child;
      const tookMs = Date.now() - t;
      expect(r.exitCode).toBe(130);
      expect(readStatus(db)).toMatchObject({ outcome: 'interrupted', exit_code: 130 });
      // well before any timeout of ours could have ended the wait
      expect(tookMs).toBeLessThan(10_000);
    } finally {
      await proxy.close();
      await other.end();
    }
  });

  it('SIGTERM mid-step: no new step starts, the running one finishes within --grace-period, the status says so truthfully, no process survives', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    // finish then up are planned; SIGTERM during finish must not start up
    const child = spawnCli(['migrate'], db.env({ KONG_STANDIN_DELAY_MS: '1500' }));
    await until(() => standinEvents(db).some((e) => e.ev === 'finish'), 30_000, 'finish to run');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    const st = readStatus(db) as { outcome: string; error: string; state_after: string; actions: Array<{ action: string; note?: string }> };
    expect(st.outcome).toBe('interrupted');
    expect(st.error).toMatch(/kong migrations finish finished \(exit 0\) after the signal; the schema is now "new"/);
    expect(st.actions).toEqual([expect.objectContaining({ action: 'finish', exit: 0, note: 'finished after the signal' })]);
    expect(st.state_after).toBe('new');
    expect(
      standinEvents(db)
        .filter((e) => ['bootstrap', 'up', 'finish'].includes(e.ev))
        .map((e) => e.ev),
    ).toEqual(['finish']);
    await expectKongGone(db);
    const h = await db.query(`SELECT outcome FROM kong_db_init_history`);
    expect(h.rows).toEqual([{ outcome: 'interrupted' }]);
    const locks = await db.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory'`);
    expect(locks.rows).toEqual([]);
    expect(await listCode(db)).toBe(5);
  });

  it('SIGTERM with a step longer than --grace-period: the whole process group is stopped mid-step, no process survives, a rerun completes', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate', '--grace-period', '500ms'], db.env({ KONG_STANDIN_DELAY_MS: '60', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' }));
    await until(() => migrationsRun(db) >= 5, 30_000, 'Kong to be running');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    const st = readStatus(db) as { error: string; actions: Array<{ note?: string }> };
    expect(st.error).toMatch(/kong migrations bootstrap was still running after --grace-period and was killed mid-step; the schema is now "new"/);
    expect(st.actions[0]!.note).toBe('killed mid-step after --grace-period');
    expect(await expectKongGone(db)).toBeLessThan(66);
    await expectRerunCompletes(db);
  });

  it('a second SIGTERM kills the running step now: exit 130, no process of the chain survives us, a rerun completes', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate', '--grace-period', '60s'], db.env({ KONG_STANDIN_DELAY_MS: '60', KONG_DB_INIT_KONG_LOCK_TIMEOUT: '3' }));
    await until(() => migrationsRun(db) >= 3, 30_000, 'Kong to be running');
    child.kill('SIGTERM');
    await until(() => migrationsRun(db) >= 5, 30_000, 'the step to go on after the first signal');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(r.stderr).toMatch(/received SIGTERM again: killing any running Kong step now/);
    expect(await expectKongGone(db)).toBeLessThan(66);
    await expectRerunCompletes(db);
  });

  it('SIGTERM with a Kong whose worker ignores SIGTERM: SIGKILL to the group after the grace period, no process survives', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate', '--grace-period', '1s'], db.env({ KONG_STANDIN_DELAY_MS: '60', KONG_STANDIN_IGNORE_TERM: '1' }));
    await until(() => migrationsRun(db) >= 3, 30_000, 'Kong to be running');
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(standinEvents(db).some((e) => e.ev === 'worker-ignored-term')).toBe(true);
    expect(await expectKongGone(db, 500)).toBeLessThan(66);
  });

  it('--lock-host/--lock-port for real: the lock session bypasses the proxy everything else goes through; without it, it does not', async () => {
    const lockClientPort = async (db: TestDb) => {
      const r = await db.query<{ port: number }>(
        `SELECT a.client_port AS port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()`,
      );
      return r.rows[0]?.port;
    };
    for (const direct of [true, false]) {
      const db = await createDb();
      const proxy = await stallProxy({ host: db.host, port: db.port });
      try {
        const args = direct ? ['migrate', '--lock-host', db.host, '--lock-port', String(db.port)] : ['migrate'];
        const child = spawnCli(args, db.env({ KONG_PG_PORT: String(proxy.port), KONG_STANDIN_DELAY_MS: '40' }));
        await until(() => migrationsRun(db) >= 3, 30_000, 'Kong to be running');
        const port = await lockClientPort(db);
        expect(port).toBeDefined();
        expect(proxy.upstreamPorts().includes(port!)).toBe(!direct);
        expect((await child).exitCode).toBe(0);
      } finally {
        await proxy.close();
      }
    }
  });

  it("Kong's TTL expiring while a raw `kong migrations finish` runs: Kong lets a second finish in; migrate waits while the row is valid, then completes; the teardown runs twice", async () => {
    const db = await createDb();
    await seed(db, 'pending');
    // an operator's raw finish with a 2 s TTL whose teardown takes 8 s
    const raw = execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'finish', '--lock-timeout', '2'], {
      env: db.env({ KONG_STANDIN_DELAY_MS: '8000' }),
      extendEnv: false,
      reject: false,
    });
    await until(async () => (await db.query(`SELECT 1 FROM locks WHERE key = 'migrations'`)).rows.length === 1, 30_000, "the raw finish's lock row");
    const r = await runCli(['migrate', '--finish', 'always'], db.env());
    const rawResult = await raw;
    expect(rawResult.exitCode).toBe(0);
    expect(r.exitCode, r.stderr).toBe(0);
    // our finish ran (after waiting out the row if it was still valid) while the raw one still ran
    expect((readStatus(db) as { actions: Array<{ action: string; exit: number }> }).actions.at(-1)).toMatchObject({ action: 'finish', exit: 0 });
    expect(await listCode(db)).toBe(0);
    // what Kong guarantees: nothing once its row expired; the pending teardown ran twice (once per
    // finish). Our own steps pass --kong-lock-timeout (60 s) so that this cannot happen between pods.
    const teardowns = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM standin_runs WHERE phase = 'teardown'`);
    expect(teardowns.rows[0]!.n).toBe(2);
  });

  it('a Postgres error after connecting (42501 on schema_meta) exits 10 naming the fix, never 1', async () => {
    const db = await createDb();
    await seed(db, 'current');
    await db.query(`ALTER TABLE schema_meta OWNER TO ${admin().user}`);
    await db.query(`REVOKE ALL ON schema_meta FROM PUBLIC`);
    const r = await runCli(['migrate'], db.env());
    expect(r.exitCode, r.stderr).toBe(10);
    expect(r.stderr).toMatch(/42501 permission denied for table schema_meta; fix: grant the role kong_\w+ the privileges it needs/);
    expect(readStatus(db)).toMatchObject({ outcome: 'failed', exit_code: 10 });
  });

  it('a failing history write (no INSERT privilege on the history table) is a warning: the run still succeeds', async () => {
    const db = await createDb();
    const a = admin();
    await db.query(`CREATE TABLE kong_db_init_history (id bigserial PRIMARY KEY, started_at timestamptz, finished_at timestamptz DEFAULT now(), pod text, tool_version text, kong_version text,
      state_before text, state_after text, actions jsonb, outcome text, exit_code int, error text)`);
    await db.query(`ALTER TABLE kong_db_init_history OWNER TO ${a.user}`);
    await db.query(`REVOKE ALL ON kong_db_init_history FROM PUBLIC`);
    const r = await runCli(['migrate'], db.env());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/could not write the history row/);
    expect(await listCode(db)).toBe(0);
  });

  for (const shape of ['empty', '3.6'] as const) {
    it(`32 racing pods on ${shape === 'empty' ? 'an empty' : 'a 3.6-shaped'} database: all exit 0, exactly one ${shape === 'empty' ? 'bootstrap' : 'up'}`, async () => {
      const db = await createDb();
      if (shape === '3.6') await seed(db, '3.6');
      const runs = await Promise.all(Array.from({ length: 32 }, () => spawnCli(['migrate'], db.env())));
      const codes = runs.map((r) => r.exitCode);
      expect(
        codes.filter((c) => c !== 0),
        runs
          .map((r) => String(r.stderr))
          .find((_s, i) => codes[i] !== 0)
          ?.slice(-1500),
      ).toEqual([]);
      const ev = standinEvents(db)
        .filter((e) => ['bootstrap', 'up', 'finish'].includes(e.ev))
        .map((e) => e.ev);
      expect(ev).toEqual([shape === 'empty' ? 'bootstrap' : 'up']);
      await noDuplicates(db);
      expect(await listCode(db)).toBe(shape === 'empty' ? 0 : 4);
    });
  }
});
