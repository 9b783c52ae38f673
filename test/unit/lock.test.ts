/** lock.ts `acquire`: the poll loop against a fake lock (no database). */
import { describe, expect, it } from 'vitest';
import { acquire, type AdvisoryLock, type Holder } from '../../src/postgres/lock.js';
import { Interrupted } from '../../src/errors.js';

const holder: Holder = { pid: 42, application_name: 'kong-db-init/pod-a', client_addr: '10.0.0.7', since: '2026-01-01 00:00:00' };

function fake(script: Array<{ got: boolean; holder: Holder | null }>) {
  let i = 0;
  const calls: string[] = [];
  const lock = {
    tryAcquire: async () => {
      calls.push('try');
      return script[Math.min(i, script.length - 1)]!.got;
    },
    holder: async () => {
      calls.push('holder');
      return script[Math.min(i++, script.length - 1)]!.holder;
    },
  } as unknown as AdvisoryLock;
  return { lock, calls };
}

describe('acquire', () => {
  it('acquires at once when free', async () => {
    const { lock, calls } = fake([{ got: true, holder: null }]);
    expect(await acquire(lock, { timeoutMs: 1000 })).toBe('acquired');
    expect(calls).toEqual(['try']);
  });
  it('waits while another session holds it, reporting the holder, then acquires', async () => {
    const { lock } = fake([
      { got: false, holder },
      { got: false, holder },
      { got: true, holder: null },
    ]);
    const seen: Array<Holder | null> = [];
    expect(await acquire(lock, { timeoutMs: 60_000, onWait: (h) => seen.push(h), random: () => 0 })).toBe('acquired');
    expect(seen).toEqual([holder]);
  });
  it("asks the caller when the holder let go; 'not-needed' ends the wait without the lock", async () => {
    const { lock } = fake([{ got: false, holder: null }]);
    let asked = 0;
    expect(
      await acquire(lock, {
        timeoutMs: 60_000,
        onHolderGone: async () => {
          asked++;
          return 'not-needed';
        },
      }),
    ).toBe('not-needed');
    expect(asked).toBe(1);
  });
  it('times out with LOCK_TIMEOUT naming the holder and the fix', async () => {
    const { lock } = fake([{ got: false, holder }]);
    await expect(acquire(lock, { timeoutMs: 0 })).rejects.toMatchObject({
      exitCode: 12,
      message: expect.stringMatching(/pid 42, kong-db-init\/pod-a, from 10\.0\.0\.7.*raise --lock-timeout/),
    });
  });
  it('stops at once when aborted', async () => {
    const { lock } = fake([{ got: false, holder }]);
    const c = new AbortController();
    const p = acquire(lock, { timeoutMs: 60_000, signal: c.signal });
    setTimeout(() => c.abort(), 30);
    await expect(p).rejects.toBeInstanceOf(Interrupted);
  });
});

describe('a pooler in transaction mode is detected', () => {
  /** A client whose statements land on different server backends, as behind PgBouncer pool_mode=transaction. */
  const pooled = () => {
    const sql: string[] = [];
    const client = {
      on: () => {},
      query: async (text: string, params: unknown[] = []) => {
        sql.push(`${text} ${JSON.stringify(params)}`);
        if (/pg_try_advisory_lock/.test(text)) return { rows: [{ ok: true, pid: 1001 }] };
        if (/EXISTS/.test(text)) return { rows: [{ pid: 2002, held: false }] }; // another backend: it holds nothing
        return { rows: [] };
      },
    };
    return { client, sql };
  };
  it('after acquiring, a separate statement finds the lock not held by our backend: LOCK_LOST naming --lock-host, and the backend that took it is ended (an unlock would reach yet another backend)', async () => {
    const { AdvisoryLock: Lock } = await import('../../src/postgres/lock.js');
    const { client, sql } = pooled();
    const lock = new Lock(client as never, 1n, 'pgbouncer:6432');
    await expect(lock.tryAcquire()).rejects.toMatchObject({ exitCode: 13, message: expect.stringMatching(/pgbouncer:6432.*transaction mode.*--lock-host/) });
    expect(lock.isHeld).toBe(false);
    expect(sql.some((q) => /pg_terminate_backend\(\$1\) \[1001\]/.test(q))).toBe(true);
    expect(sql.some((q) => /pg_advisory_unlock/.test(q))).toBe(false);
  });
});
