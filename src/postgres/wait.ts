/** Waiting: capped exponential backoff with full jitter, a deadline, and abortable sleeps. */
import type pg from 'pg';
import type { KongPg } from '../kong/config.js';
import { describeTarget } from '../kong/config.js';
import { classify, clientConfig, connectChecked, fatalMessage } from './connect.js';
import { ExitCode, InitError, Interrupted } from '../errors.js';
import type { Logger } from '../report/log.js';

export interface Backoff {
  baseMs: number;
  capMs: number;
}
/**
 * 200 ms doubling, capped at 1.5 s: with full jitter the time between Postgres becoming ready and
 * our next attempt is at most the cap, so the cap plus a connection and Kong's start-up stays
 * under 2 s; a refused connection every ~0.75 s on average costs Postgres nothing.
 */
export const DEFAULT_BACKOFF: Backoff = { baseMs: 200, capMs: 1500 };

/** Full-jitter delay for attempt n (1-based): uniform in [0, min(cap, base * 2^(n-1))]. */
export function backoffDelay(attempt: number, b: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(b.capMs, b.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/** Sleep that ends early (rejecting with Interrupted) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Interrupted());
    const t = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    const onAbort = () => {
      clearTimeout(t);
      reject(new Interrupted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Run a promise but stop waiting for it when the signal aborts. */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(new Interrupted());
    const onAbort = () => reject(new Interrupted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export interface WaitOptions {
  deadline: number; // epoch ms
  log: Logger;
  signal?: AbortSignal;
  backoff?: Backoff;
  override?: { host?: string; port?: number };
  what?: string;
}

export interface WaitResult {
  client: pg.Client;
  attempts: number;
  waitedMs: number;
}

/** Wait until Postgres accepts a connection that answers SELECT 1; fail fast on what cannot heal. */
export async function waitForPostgres(k: KongPg, o: WaitOptions): Promise<WaitResult> {
  const start = Date.now();
  const cfg = clientConfig(k, o.override);
  const target = describeTarget({ ...k, host: String(cfg.host), port: Number(cfg.port) });
  let missingSince: number | undefined;
  for (let attempt = 1; ; attempt++) {
    const remaining = o.deadline - Date.now();
    const timeout = Math.max(100, Math.min(k.timeoutMs, remaining));
    try {
      const client = await abortable(connectChecked({ ...cfg, connectionTimeoutMillis: timeout }), o.signal);
      if (attempt > 1) o.log.info('postgres is ready', { attempts: attempt, waited_ms: Date.now() - start, what: o.what });
      return { client, attempts: attempt, waitedMs: Date.now() - start };
    } catch (e) {
      if (e instanceof Interrupted) throw e;
      const c = classify(e, k);
      // a database or role that does not exist yet: retried for a bounded time, then fatal
      if (c.boundedMs) missingSince ??= Date.now();
      else missingSince = undefined;
      const missingTooLong = missingSince !== undefined && Date.now() - missingSince >= c.boundedMs!;
      if (c.kind === 'fatal' || missingTooLong) {
        throw new InitError(ExitCode.DB_FATAL, fatalMessage(c, { ...k, host: String(cfg.host), port: Number(cfg.port) }));
      }
      const delay = backoffDelay(attempt, o.backoff);
      const left = o.deadline - Date.now();
      if (left <= 0 || delay >= left) {
        if (c.boundedMs) throw new InitError(ExitCode.DB_FATAL, fatalMessage(c, { ...k, host: String(cfg.host), port: Number(cfg.port) }));
        throw new InitError(
          ExitCode.DEADLINE,
          `deadline reached after ${attempt} attempts (${Math.round((Date.now() - start) / 100) / 10} s) waiting for Postgres at ${target}: last error: ${c.reason}; check that Postgres is running and reachable, or raise --deadline`,
        );
      }
      o.log.info('waiting for postgres', { attempt, reason: c.reason, next_try_ms: delay, target });
      await sleep(delay, o.signal);
    }
  }
}
