/**
 * Our Postgres sessions for one run: `main` (reads) and the lock session (the same connection
 * unless --lock-host/--lock-port point it elsewhere, e.g. past a transaction-mode pooler).
 * Waits for Postgres within the deadline, reconnects when the database goes away while we wait
 * for the lock, re-takes the lock on a new session when the old one died while Kong ran, and
 * writes the history row on whatever connection still answers.
 */
import type pg from 'pg';
import { Interrupted, isInitError, ExitCode, InitError } from '../errors.js';
import { describeTarget, type KongPg } from '../kong/config.js';
import type { Logger } from '../report/log.js';
import type { Summary } from '../report/summary.js';
import { classify, clientConfig, closeClient, connectChecked, dbFailure, isDbError } from './connect.js';
import { recordHistory } from './history.js';
import { AdvisoryLock, acquire, lockKey, type AcquireOptions, type Holder } from './lock.js';
import { backoffDelay, sleep, waitForPostgres, type WaitResult } from './wait.js';

export interface SessionOptions {
  kong: KongPg;
  log: Logger;
  signal: AbortSignal;
  deadline: number;
  lockHost?: string;
  lockPort?: number;
}

/** How long the history row may take at the end of a run (a stalled server must not hold the pod). */
export const HISTORY_BUDGET_MS = 3000;

function describeHolder(h: Holder | null): Record<string, unknown> {
  if (!h) return { holder: 'none' };
  return { holder_pid: h.pid, holder_app: h.application_name, holder_addr: h.client_addr ?? 'local', holder_since: h.since };
}

export class Sessions {
  main: pg.Client | undefined;
  lockClient: pg.Client | undefined;
  lock: AdvisoryLock | undefined;
  /** The lock was held at some point (a signal before that exits at once, without history). */
  everHeld = false;
  /** We connected at least once (a history row can be written). */
  everConnected = false;

  constructor(private readonly o: SessionOptions) {}

  private get separateLockHost(): boolean {
    return Boolean(this.o.lockHost || this.o.lockPort);
  }

  get key(): bigint {
    return lockKey(this.o.kong.db, this.o.kong.schema);
  }

  /** Wait for Postgres (within the deadline) and open the main session. */
  async connectMain(): Promise<WaitResult> {
    const { kong, log, signal, deadline } = this.o;
    const w = await waitForPostgres(kong, { deadline, log, signal });
    this.main = w.client;
    this.everConnected = true;
    return w;
  }

  private async newLock(): Promise<AdvisoryLock> {
    const { kong: k, log, signal, deadline, lockHost, lockPort } = this.o;
    this.lockClient = this.separateLockHost
      ? (await waitForPostgres(k, { deadline, log, signal, override: { host: lockHost, port: lockPort }, what: 'lock session' })).client
      : this.main!;
    const target = describeTarget({ ...k, host: lockHost ?? k.host, port: lockPort ?? k.port });
    const lock = new AdvisoryLock(this.lockClient, this.key, target);
    lock.onLost((reason) =>
      log.warn("the advisory-lock session was lost; a running Kong step goes on (Kong's own locks row protects it), then the lock is taken again", { reason }),
    );
    this.lock = lock;
    return lock;
  }

  /** Release the lock (bounded) and close every session at once (a stalled one is not waited for). */
  async reset(): Promise<void> {
    if (this.lock?.lost && this.lock.backendPid !== undefined) await this.endStaleBackend(this.lock.backendPid);
    await this.lock?.release();
    const all = new Set([this.main, this.lockClient]);
    this.main = this.lockClient = undefined;
    this.lock = undefined;
    await Promise.all([...all].map((c) => closeClient(c)));
  }

  /** Take the lock within `timeoutMs`; a connection lost while waiting is re-made within the deadline. */
  async take(timeoutMs: number, onHolderGone?: AcquireOptions['onHolderGone']): Promise<'acquired' | 'not-needed'> {
    const { kong: k, log, signal } = this.o;
    const start = Date.now();
    for (let n = 1; ; n++) {
      try {
        if (!this.main) await this.connectMain();
        const lock = this.lock ?? (await this.newLock());
        const got = await acquire(lock, {
          timeoutMs: Math.max(0, timeoutMs - (Date.now() - start)),
          signal,
          onWait: (h) => log.info('waiting for the migration lock', describeHolder(h)),
          onHolderGone,
        });
        if (got === 'acquired') this.everHeld = true;
        return got;
      } catch (e) {
        if (isInitError(e) || e instanceof Interrupted || !isDbError(e)) throw e;
        const c = classify(e, k);
        if (c.kind === 'fatal') throw dbFailure(e, k, 'waiting for the migration lock');
        if (Date.now() - start > timeoutMs)
          throw new InitError(
            ExitCode.LOCK_TIMEOUT,
            `lock timeout after ${Math.round(timeoutMs / 1000)} s: the connection to Postgres kept failing while waiting for the migration lock (${c.reason}); check Postgres, or raise --lock-timeout`,
          );
        log.warn('lost the connection to Postgres while waiting for the migration lock; reconnecting', { reason: c.reason });
        await this.reset();
        await sleep(backoffDelay(n), signal);
      }
    }
  }

  /**
   * After the lock session died while Kong ran: a new session, and the lock again. Our old
   * session may still hold it on the server (a stalled connection the server has not noticed):
   * that backend is ours, so it is terminated rather than waited out.
   */
  async retake(timeoutMs: number): Promise<void> {
    const stale = this.lock?.backendPid;
    await this.reset();
    await this.connectMain();
    await this.newLock();
    // reset() tried already; a server that was briefly unreachable then gets a second try here
    if (stale !== undefined) await this.endStaleBackend(stale, this.lockClient);
    if ((await this.take(timeoutMs)) !== 'acquired') throw new InitError(ExitCode.LOCK_LOST, 'could not take the migration lock again');
  }

  /**
   * A lost lock session's server backend may still hold the lock (a pooler moved us off it, or the
   * network stalled): it is ours, so it is ended on a fresh connection, best effort and bounded.
   */
  private async endStaleBackend(pid: number, via?: pg.Client): Promise<void> {
    const { kong: k, lockHost, lockPort } = this.o;
    let fresh: pg.Client | undefined;
    try {
      const c = via ?? (fresh = await connectChecked({ ...clientConfig(k, { host: lockHost, port: lockPort }), connectionTimeoutMillis: 2000 }));
      const r = await c.query<{ ended: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ended FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND granted LIMIT 1`,
        [pid],
      );
      if (r.rows[0]?.ended) this.o.log.warn('our old lock session still holds the lock on the server; terminating it', { backend_pid: pid });
    } catch {
      // the server will end it when it notices the connection is gone
    } finally {
      await closeClient(fresh);
    }
  }

  /** A connection that answered last: the lock session while held, else main. */
  live(): pg.Client | undefined {
    return this.lock?.isHeld ? this.lockClient : this.main;
  }

  /** The history row for `s`, on a live session or a fresh one; bounded in time; a failure is a warning. */
  async writeHistory(s: Summary): Promise<void> {
    const { kong: k, log } = this.o;
    const attempt = async () => {
      let c = this.live();
      let fresh: pg.Client | undefined;
      if (!c || this.lock?.lost) c = fresh = await connectChecked({ ...clientConfig(k), connectionTimeoutMillis: 2000 });
      try {
        await recordHistory(c, k.schema, s, { warn: (m, f) => log.warn(m, f) });
      } finally {
        await closeClient(fresh);
      }
    };
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`no answer within ${HISTORY_BUDGET_MS} ms`)), HISTORY_BUDGET_MS)));
    try {
      await Promise.race([attempt(), timeout]);
    } catch (e) {
      log.warn('could not write the history row', { error: (e as Error).message });
    } finally {
      clearTimeout(t);
    }
  }
}
