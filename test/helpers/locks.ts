/** Our advisory lock from the outside, for fault tests: another pod holding it, our lock session killed. */
import pg from 'pg';
import { expect } from 'vitest';
import { lockKey } from '../../src/postgres/lock.js';
import type { TestDb } from './harness.js';

/** Another pod's lock: a session that holds our advisory lock until it ends. */
export async function holdLock(db: TestDb): Promise<pg.Client> {
  const c = new pg.Client({
    host: db.host,
    port: db.port,
    user: db.user,
    password: db.password,
    database: db.name,
    application_name: 'kong-db-init/other-pod',
  });
  c.on('error', () => {});
  await c.connect();
  await c.query('SELECT pg_advisory_lock($1::bigint)', [lockKey(db.name, undefined).toString()]);
  return c;
}

/** pg_terminate_backend on the kong-db-init session that holds the advisory lock (exactly one). */
export async function terminateLockSession(db: TestDb): Promise<void> {
  const killed = await db.query<{ ok: boolean }>(
    `SELECT pg_terminate_backend(a.pid) AS ok FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
      WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'kong-db-init/%' AND a.datname = current_database()`,
  );
  expect(killed.rows).toEqual([{ ok: true }]);
}
