/**
 * `finish` runs on migrate's engine, so it has migrate's guarantees: a lost lock session does not
 * cut the step, a second signal kills Kong's process group, a Postgres restart while it waits is
 * survived, a Postgres error ends with a documented code. Real processes, real Postgres, the
 * Kong 3.7.1 stand-in chain.
 */
import { describe, expect, it } from 'vitest';
import { embeddedServer, type Server } from './helpers/embedded.js';
import { holdLock, terminateLockSession } from './helpers/locks.js';
import {
  alive,
  createDb,
  KONG_PASSWORD,
  listCode,
  readStatus,
  runCli,
  seed,
  spawnCli,
  standinEvents,
  standinPids,
  until,
  type TestDb,
} from './helpers/harness.js';

const teardowns = async (db: TestDb) => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM standin_runs WHERE phase = 'teardown'`)).rows[0]!.n;
const finishStarted = (db: TestDb) => standinEvents(db).some((e) => e.cmd === 'migrations finish' && e.ev === 'start');

/** A database on its own server, `pending`, another pod holding our lock, and `finish` waiting for it. */
async function finishWaitingOnLock(server: Server, args: string[] = []) {
  const db = await createDb({ host: '127.0.0.1', port: server.port, user: server.user, password: server.password });
  await seed(db, 'pending');
  await holdLock(db);
  const child = spawnCli(['finish', '--rollout=skip', ...args], db.env());
  const out = { err: '' };
  child.stderr!.on('data', (d: Buffer) => (out.err += d.toString()));
  await until(() => /waiting for the migration lock/.test(out.err), 30_000, 'finish to wait for the lock');
  return { db, child, out };
}

describe('finish on the shared engine (real Postgres, real processes; Kong: the 3.7.1 stand-in chain)', () => {
  it('lock session lost while `kong migrations finish` runs: the step is not cut, the lock is taken again, exit 0, the teardown ran once', async () => {
    const db = await createDb();
    await seed(db, 'pending');
    const child = spawnCli(['finish', '--rollout=skip'], db.env({ KONG_STANDIN_DELAY_MS: '3000' }));
    await until(() => finishStarted(db), 30_000, 'Kong finish to run');
    await terminateLockSession(db);
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/advisory-lock session was lost; a running Kong step goes on/);
    expect(String(r.stderr)).toMatch(/migration lock taken again on a new session; state re-read state=up-to-date/);
    expect(readStatus(db)).toMatchObject({
      command: 'finish',
      outcome: 'ok',
      actions: [expect.objectContaining({ action: 'finish', exit: 0, note: expect.stringMatching(/lock session was lost while it ran/) })],
    });
    expect(await teardowns(db)).toBe(1);
    expect(await listCode(db)).toBe(0);
  });

  it('a second SIGTERM kills the running finish step now: exit 130, no process of the chain survives us, a rerun completes', async () => {
    const db = await createDb();
    await seed(db, 'pending');
    const child = spawnCli(['finish', '--rollout=skip', '--grace-period', '60s'], db.env({ KONG_STANDIN_DELAY_MS: '20000' }));
    await until(() => finishStarted(db), 30_000, 'Kong finish to run');
    child.kill('SIGTERM');
    await new Promise((res) => setTimeout(res, 500));
    expect(standinPids(db).some(alive)).toBe(true); // the first signal lets the step go on
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/received SIGTERM again: killing any running Kong step now/);
    expect(standinPids(db).filter(alive)).toEqual([]);
    expect(await teardowns(db)).toBe(0);
    const again = await runCli(['finish', '--rollout=skip'], db.env());
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
  });

  it('Postgres restarts while finish waits for the lock (the sidecar case): it reconnects, keeps waiting, then finishes once', async () => {
    const server = await embeddedServer({ password: KONG_PASSWORD });
    try {
      const { db, child, out } = await finishWaitingOnLock(server);
      await server.stop(); // the holder's session dies with it: the lock is free once Postgres is back
      await new Promise((res) => setTimeout(res, 1500));
      await server.start();
      const r = await child;
      const err = out.err;
      expect(r.exitCode, err).toBe(0);
      expect(err).toMatch(/lost the connection to Postgres while waiting for the migration lock; reconnecting|finish failed; retrying until --deadline/);
      expect(err).not.toMatch(/internal error/);
      expect(readStatus(db)).toMatchObject({ command: 'finish', outcome: 'ok', actions: [expect.objectContaining({ action: 'finish', exit: 0 })] });
      expect(await teardowns(db)).toBe(1);
      expect(await listCode(db)).toBe(0);
    } finally {
      await server.destroy();
    }
  });

  it('Postgres gone for good while finish waits: exit 11 at the deadline naming the fix (never 1)', async () => {
    const server = await embeddedServer({ password: KONG_PASSWORD });
    try {
      const { db, child, out } = await finishWaitingOnLock(server, ['--deadline', '6s']);
      await server.stop();
      const r = await child;
      const err = out.err;
      expect(r.exitCode, err).toBe(11);
      expect(readStatus(db)).toMatchObject({ command: 'finish', outcome: 'failed', exit_code: 11 });
      expect(err).not.toMatch(/internal error/);
      expect(err).toMatch(/deadline reached after \d+ attempts .* waiting for Postgres at .*raise --deadline/);
    } finally {
      await server.destroy();
    }
  });
});
