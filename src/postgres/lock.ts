/** A session-level Postgres advisory lock so that only one pod migrates at a time. */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ExitCode, InitError } from '../errors.js';
import { abortable, sleep } from './wait.js';

export const LOCK_NAMESPACE = 'kong-db-init/migrations/v1';
/** The heartbeat runs this often on the lock session... */
export const HEARTBEAT_MS = 1000;
/** ...and the session is declared dead when no heartbeat was answered for this long. */
export const SESSION_DEAD_MS = 10_000;

/** 64-bit lock key from a fixed namespace, the database and the schema: every pod agrees. */
export function lockKey(database: string, schema: string | undefined): bigint {
  const h = createHash('sha256')
    .update(`${LOCK_NAMESPACE}\0${database}\0${schema ?? 'public'}`)
    .digest();
  return h.readBigInt64BE(0);
}

export interface Holder {
  pid: number;
  application_name: string;
  client_addr: string | null;
  since: string | null;
}

const HOLDER_SQL = `
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start::text AS since
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
 LIMIT 1`;

const HELD_BY_ME_SQL = `
SELECT pg_backend_pid() AS pid, EXISTS (
  SELECT 1 FROM pg_locks l
   WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1) AS held`;

/** The message when the lock is not held by our own backend: a pooler in transaction mode. */
export function poolerMessage(lockTarget: string): string {
  return `the advisory lock taken on ${lockTarget} is not held by the session that took it: a pooler in transaction mode (PgBouncer pool_mode=transaction) sits between us and Postgres; point the lock session at Postgres directly with --lock-host/--lock-port (KONG_DB_INIT_LOCK_HOST/_PORT), or use a session-mode pool`;
}

/** The session that holds lock `key` now, if any (readable from any connection to the database). */
export async function holderOf(c: pg.Client, key: bigint): Promise<Holder | null> {
  const u = BigInt.asUintN(64, key);
  const r = await c.query<Holder>(HOLDER_SQL, [(u >> 32n).toString(), (u & 0xffffffffn).toString()]);
  return r.rows[0] ?? null;
}

export class AdvisoryLock {
  private held = false;
  private lostHandlers: Array<(reason: string) => void> = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private lostReason: string | undefined;
  private lastAnswer = 0;
  /** The server process that holds the lock (pg_backend_pid() when acquired). */
  backendPid: number | undefined;

  constructor(
    private readonly client: pg.Client,
    readonly key: bigint,
    private readonly target = 'the lock host',
    private readonly deadMs = SESSION_DEAD_MS,
  ) {
    client.on('error', (e) => this.markLost(`lock connection error: ${e.message}`));
    client.on('end', () => this.markLost('lock connection closed'));
  }

  private markLost(reason: string): void {
    if (!this.held || this.lostReason) return;
    this.lostReason = reason;
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const h of this.lostHandlers) h(reason);
  }

  get isHeld(): boolean {
    return this.held && !this.lostReason;
  }

  get lost(): string | undefined {
    return this.lostReason;
  }

  onLost(h: (reason: string) => void): void {
    this.lostHandlers.push(h);
  }

  private keyParts(): [string, string] {
    const u = BigInt.asUintN(64, this.key);
    return [(u >> 32n).toString(), (u & 0xffffffffn).toString()];
  }

  /**
   * One attempt. After acquiring, a separate statement verifies that our own backend holds the
   * lock (through a transaction-mode pooler it does not): then it fails with LOCK_LOST naming
   * --lock-host, after releasing what it may hold.
   */
  async tryAcquire(): Promise<boolean> {
    const r = await this.client.query<{ ok: boolean; pid: number }>('SELECT pg_try_advisory_lock($1::bigint) AS ok, pg_backend_pid() AS pid', [
      this.key.toString(),
    ]);
    if (r.rows[0]?.ok !== true) return false;
    const taker = r.rows[0].pid;
    const v = await this.client.query<{ pid: number; held: boolean }>(HELD_BY_ME_SQL, this.keyParts());
    if (!v.rows[0]?.held || v.rows[0].pid !== taker) {
      // through a pooler the backend that took the lock is not ours any more: unlocking here would
      // reach yet another backend, so the one that holds it is ended (same role: allowed)
      await this.client.query('SELECT pg_terminate_backend($1)', [taker]).catch(() => {});
      throw new InitError(ExitCode.LOCK_LOST, poolerMessage(this.target), 'pooler');
    }
    this.backendPid = taker;
    this.held = true;
    this.startHeartbeat();
    return true;
  }

  async holder(): Promise<Holder | null> {
    return holderOf(this.client, this.key);
  }

  /**
   * Every HEARTBEAT_MS: ask the session which backend it is. An error, another backend (a pooler
   * switched it) or no answer for `deadMs` declares the session lost.
   */
  private startHeartbeat(): void {
    this.lastAnswer = Date.now();
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastAnswer > this.deadMs) {
        this.markLost(`lock session did not answer for ${Math.round((Date.now() - this.lastAnswer) / 1000)} s`);
        return;
      }
      // one query at a time on this connection (pg queues, but warns); a busy session is not dead yet
      const busy = this.client as unknown as { _activeQuery?: unknown; _queryQueue?: unknown[] };
      if (busy._activeQuery || (busy._queryQueue?.length ?? 0) > 0) return;
      this.client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid').then(
        (r) => {
          if (r.rows[0]?.pid !== this.backendPid)
            this.markLost(`lock session moved to another backend (${r.rows[0]?.pid} instead of ${this.backendPid}): ${poolerMessage(this.target)}`);
          else this.lastAnswer = Date.now();
        },
        (e: Error) => this.markLost(`lock connection failed: ${e.message}`),
      );
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Release (bounded: a stalled session is not waited for; closing it releases the lock anyway). */
  async release(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (!this.held) return;
    this.held = false;
    if (this.lostReason) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.client.query('SELECT pg_advisory_unlock($1::bigint)', [this.key.toString()]).catch(() => {}),
      new Promise<void>((r) => (t = setTimeout(r, 1000))),
    ]);
    clearTimeout(t);
  }
}

export interface AcquireOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Called at most every 5 s while another session holds the lock. */
  onWait?(holder: Holder | null): void;
  /**
   * The holder let go: the caller may re-read the state without the lock and answer
   * 'not-needed' (the holder did the work), so finished work is not re-checked one pod at a time.
   */
  onHolderGone?(): Promise<'contend' | 'not-needed'>;
  random?: () => number;
}

/** Poll the lock until acquired, not needed any more, or `timeoutMs` (LOCK_TIMEOUT naming the holder). */
export async function acquire(lock: AdvisoryLock, o: AcquireOptions): Promise<'acquired' | 'not-needed'> {
  const start = Date.now();
  const random = o.random ?? Math.random;
  let lastLog = 0;
  for (;;) {
    if (await abortable(lock.tryAcquire(), o.signal)) return 'acquired';
    const h = await abortable(lock.holder(), o.signal);
    if (Date.now() - start > o.timeoutMs) {
      throw new InitError(
        ExitCode.LOCK_TIMEOUT,
        `lock timeout after ${Math.round(o.timeoutMs / 1000)} s: another kong-db-init holds the migration lock (${h ? `pid ${h.pid}, ${h.application_name}, from ${h.client_addr ?? 'local'}, session since ${h.since}` : 'holder gone'}); wait for it, or raise --lock-timeout`,
      );
    }
    if (Date.now() - lastLog >= 5000) {
      o.onWait?.(h);
      lastLog = Date.now();
    }
    if (h) {
      await sleep(150 + Math.floor(random() * 200), o.signal);
      continue;
    }
    if (o.onHolderGone && (await o.onHolderGone()) === 'not-needed') return 'not-needed';
    await sleep(20 + Math.floor(random() * 60), o.signal);
  }
}
