/**
 * Pooler detection and --lock-host against a REAL PgBouncer (Debian's `pgbouncer`; the version is
 * in the suite names) in front of the test Postgres, with the real CLI and the Kong 3.7.1 stand-in,
 * which connects with KONG_PG_* like Kong does: through the pooler.
 *
 * The transaction-mode pooler is set up as a pooler serving a fleet looks to one client: several
 * idle server connections in the pool (warmPool) and `server_round_robin = 1`, so consecutive
 * transactions of one client go to different server connections. With PgBouncer's defaults
 * (LIFO reuse) a single quiet client is handed the same server connection every time and nothing
 * can tell it from a direct session (README, "The lock, and PgBouncer").
 *
 * Without pgbouncer: in CI (CI=true) the suite fails naming the fix; elsewhere it is skipped with
 * the reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admin, createDb, listCode, readStatus, runCli, seed, standinEvents, type Run, type TestDb } from './helpers/harness.js';
import { findPgBouncer, PGBOUNCER_FIX, pgBouncerVersion, startPgBouncer, warmPool, type PgBouncer } from './helpers/pgbouncer.js';

const REQUIRED = process.env.CI === 'true';
const BIN = findPgBouncer();
const VERSION = BIN ? pgBouncerVersion(BIN) : undefined;
const reason = BIN ? undefined : `pgbouncer not found; ${PGBOUNCER_FIX}`;
if (reason && !REQUIRED) console.warn(`skipping the PgBouncer suite: ${reason}`);

if (reason && REQUIRED) {
  describe('PgBouncer suite in CI', () => {
    it('has pgbouncer', () => {
      expect.fail(reason);
    });
  });
}

/** Server connections the transaction pool holds before each run (see the file comment). */
const WARM = 4;
const kongActions = (db: TestDb) =>
  standinEvents(db)
    .filter((e) => ['bootstrap', 'up', 'finish'].includes(e.ev))
    .map((e) => e.ev);
const viaPooler = (db: TestDb, b: PgBouncer, extra: Record<string, string> = {}) => db.env({ KONG_PG_HOST: b.host, KONG_PG_PORT: String(b.port), ...extra });
const lockHost = (db: TestDb) => ['--lock-host', db.host, '--lock-port', String(db.port)];
const login = (db: TestDb) => ({ user: db.user, password: db.password, database: db.name });
/** Advisory locks held on the database, by whom (a PgBouncer server connection keeps our application_name). */
const advisoryLocks = async (db: TestDb) =>
  (
    await db.query<{ pid: number; application_name: string; state: string }>(
      `SELECT a.pid, a.application_name, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    )
  ).rows;
const POOLER_MESSAGE =
  /the advisory lock taken on .* is not held by the session that took it: a pooler in transaction mode \(PgBouncer pool_mode=transaction\) sits between us and Postgres; point the lock session at Postgres directly with --lock-host\/--lock-port/;

describe.skipIf(reason)(`a real PgBouncer (${VERSION ?? `skipped: ${reason}`}) between kong-db-init, Kong and Postgres`, () => {
  // one database per test; PgBouncer's userlist is written at start, so they are made first
  const dbs: Record<'fails' | 'direct' | 'rerun' | 'finish' | 'quiet' | 'session', TestDb> = {} as never;
  let tx: PgBouncer | undefined;
  let txDefaults: PgBouncer | undefined;
  let session: PgBouncer | undefined;

  beforeAll(async () => {
    for (const k of ['fails', 'direct', 'rerun', 'finish', 'quiet', 'session'] as const) dbs[k] = await createDb();
    const users = Object.values(dbs).map((d) => ({ user: d.user, password: d.password }));
    tx = await startPgBouncer({ target: admin(), poolMode: 'transaction', users, settings: { server_round_robin: 1 } });
    txDefaults = await startPgBouncer({ target: admin(), poolMode: 'transaction', users });
    session = await startPgBouncer({ target: admin(), poolMode: 'session', users });
  });

  afterAll(async () => {
    for (const b of [tx, txDefaults, session]) await b?.stop();
  });

  const warm = async (db: TestDb) => expect((await warmPool(tx!, login(db), WARM)).length).toBe(WARM);
  const fail = (r: Run, b: PgBouncer | undefined) =>
    `exit ${r.exitCode}\n${r.stderr}\n--- pgbouncer log (end) ---\n${b?.log().split('\n').slice(-20).join('\n')}`;

  describe('pool_mode=transaction', () => {
    it('migrate without --lock-host: exit 13, the message names --lock-host; Kong changed nothing', async () => {
      const db = dbs.fails;
      await warm(db);
      const r = await runCli(['migrate'], viaPooler(db, tx!));
      expect(r.exitCode, fail(r, tx)).toBe(13);
      expect(r.stderr).toMatch(POOLER_MESSAGE);
      expect(readStatus(db)).toMatchObject({ exit_code: 13, error: expect.stringMatching(/--lock-host/) });
      expect(kongActions(db)).toEqual([]);
      expect(await listCode(db)).toBe(3);
    });

    it('migrate with --lock-host/--lock-port at Postgres (Kong and our reads still through the pooler): exit 0, up to date', async () => {
      const db = dbs.direct;
      await warm(db);
      const r = await runCli(['migrate', ...lockHost(db)], viaPooler(db, tx!));
      expect(r.exitCode, fail(r, tx)).toBe(0);
      expect(r.stderr).toMatch(/^\S+ INFO {2}migration lock acquired waited_ms=\d+$/m);
      expect(r.stderr).not.toMatch(/not held by the session|advisory-lock session was lost/);
      expect(kongActions(db)).toEqual(['bootstrap']);
      expect(await listCode(db)).toBe(0);
      // Kong's own view through the pooler agrees
      expect((await runCli(['status'], viaPooler(db, tx!))).exitCode).toBe(0);
      expect(await advisoryLocks(db)).toEqual([]);
    });

    it('the failed run leaves no advisory lock behind on a pooled server connection: the rerun with --lock-host succeeds', async () => {
      const db = dbs.rerun;
      await warm(db);
      const first = await runCli(['migrate'], viaPooler(db, tx!));
      expect(first.exitCode, fail(first, tx)).toBe(13);
      const left = await advisoryLocks(db);
      const r = await runCli(['migrate', ...lockHost(db), '--lock-timeout', '15s'], viaPooler(db, tx!));
      expect(r.exitCode, `${fail(r, tx)}\n--- advisory locks held after the exit-13 run: ${JSON.stringify(left)}`).toBe(0);
      expect(left).toEqual([]);
      expect(await listCode(db)).toBe(0);
    });

    it('finish --rollout=skip with --lock-host: exit 0, the pending migrations finished once', async () => {
      const db = dbs.finish;
      await seed(db, 'pending');
      expect(await listCode(db)).toBe(4);
      await warm(db);
      const r = await runCli(['finish', '--rollout=skip', ...lockHost(db)], viaPooler(db, tx!));
      expect(r.exitCode, fail(r, tx)).toBe(0);
      expect(r.stderr).not.toMatch(/not held by the session|advisory-lock session was lost/);
      expect(readStatus(db)).toMatchObject({ command: 'finish', outcome: 'ok', actions: [expect.objectContaining({ action: 'finish', exit: 0 })] });
      expect(kongActions(db)).toEqual(['finish']);
      expect(await listCode(db)).toBe(0);
    });
  });

  describe('pool_mode=transaction, PgBouncer defaults (most recently used server connection first)', () => {
    // the README's "safety net, not a guarantee", observed: if this starts failing because the
    // pooler is now detected, update the README paragraph
    it('one quiet client gets the same server connection every time: the detection cannot see the pooler, migrate exits 0', async () => {
      const db = dbs.quiet;
      const r = await runCli(['migrate'], viaPooler(db, txDefaults!));
      expect(r.exitCode, fail(r, txDefaults)).toBe(0);
      expect(r.stderr).not.toMatch(/not held by the session/);
      expect(await listCode(db)).toBe(0);
    });
  });

  describe('pool_mode=session', () => {
    it('migrate without --lock-host works: exit 0, up to date, no lock left behind', async () => {
      const db = dbs.session;
      const r = await runCli(['migrate'], viaPooler(db, session!));
      expect(r.exitCode, fail(r, session)).toBe(0);
      expect(r.stderr).toMatch(/^\S+ INFO {2}migration lock acquired waited_ms=\d+$/m);
      expect(r.stderr).not.toMatch(/not held by the session|advisory-lock session was lost/);
      expect(kongActions(db)).toEqual(['bootstrap']);
      expect(await listCode(db)).toBe(0);
      expect(await advisoryLocks(db)).toEqual([]);
    });
  });
});
