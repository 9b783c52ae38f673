import { describe, expect, it } from 'vitest';
import { classify } from '../../src/postgres/connect.js';
import { createLogger, addSecret, redact } from '../../src/report/log.js';
import { serializeSummary, type Summary } from '../../src/report/summary.js';
import { Interrupted } from '../../src/errors.js';
import { backoffDelay, sleep } from '../../src/postgres/wait.js';
import { lockKey } from '../../src/postgres/lock.js';

const k = { host: 'db', port: 5432, db: 'kong', user: 'kong', ssl: false, sslVerify: false };

describe('backoff', () => {
  it('full jitter under an exponential ceiling (200 ms doubling) capped at 1.5 s', () => {
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelay(n, undefined, () => 0.999999))).toEqual([199, 399, 799, 1499, 1499, 1499]);
    expect(backoffDelay(3, undefined, () => 0)).toBe(0);
  });
  it('sleep ends early when aborted', async () => {
    const c = new AbortController();
    const t = Date.now();
    setTimeout(() => c.abort(), 20);
    await expect(sleep(5000, c.signal)).rejects.toBeInstanceOf(Interrupted);
    expect(Date.now() - t).toBeLessThan(1000);
  });
});

describe('classify', () => {
  it.each([
    [{ code: 'ECONNREFUSED' }, 'retry'],
    [{ code: 'ENOTFOUND' }, 'retry'],
    [{ code: '57P03', message: 'the database system is starting up' }, 'retry'],
    [{ code: '57P01' }, 'retry'],
    [{ code: '53300', message: 'too many connections' }, 'retry'],
    [{ code: '08006' }, 'retry'],
    [{ message: 'Connection terminated due to connection timeout' }, 'retry'],
    [{ code: '28P01', message: 'password authentication failed' }, 'fatal'],
    [{ code: '28000', message: 'no pg_hba.conf entry' }, 'fatal'],
    [{ code: '3D000', message: 'database "kong" does not exist' }, 'retry'], // for a bounded time (boundedMs), then fatal
    [{ message: 'The server does not support SSL connections' }, 'fatal'],
    [{ code: 'DEPTH_ZERO_SELF_SIGNED_CERT', message: 'self-signed certificate' }, 'fatal'],
  ])('%j → %s', (err, kind) => {
    expect(classify(err, k).kind).toBe(kind);
  });
  it('fatal errors carry a fix', () => {
    expect(classify({ code: '28P01' }, k).fix).toMatch(/KONG_PG_PASSWORD/);
    expect(classify({ code: '3D000' }, k)).toMatchObject({ boundedMs: expect.any(Number), fix: expect.stringMatching(/CREATE DATABASE kong/) });
  });
});

describe('redaction', () => {
  it('removes registered secrets and URL passwords from every log line', () => {
    addSecret('hunter2-secret');
    const lines: string[] = [];
    const log = createLogger({ format: 'json', write: (l) => lines.push(l) });
    log.error('failed with hunter2-secret', { url: 'postgres://kong:p%40ss@db:5432/kong' });
    expect(lines.join('\n')).not.toMatch(/hunter2-secret|p%40ss/);
    expect(redact('postgresql://u:pw@h/db')).toBe('postgresql://u:***@h/db');
  });
});

describe('summary', () => {
  it('stays under 4 KiB for the termination message, keeping the outcome', () => {
    const s: Summary = {
      tool: 'kong-db-init',
      version: '1',
      command: 'migrate',
      outcome: 'failed',
      exit_code: 14,
      pod: 'p',
      actions: Array.from({ length: 50 }, () => ({ action: 'up', ms: 1, exit: 1, note: 'x'.repeat(200) })),
      wait_postgres_ms: 0,
      wait_lock_ms: 0,
      duration_ms: 1,
      started_at: 'now',
      error: 'e'.repeat(10_000),
    };
    const out = serializeSummary(s);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(4096);
    expect(JSON.parse(out)).toMatchObject({ outcome: 'failed', exit_code: 14 });
  });
});

describe('lock key', () => {
  it('is stable, and differs per database and schema', () => {
    expect(lockKey('kong', undefined)).toBe(lockKey('kong', 'public'));
    expect(lockKey('kong', undefined)).not.toBe(lockKey('kong2', undefined));
    expect(lockKey('kong', 'a')).not.toBe(lockKey('kong', 'b'));
  });
});
