/**
 * The history table on the real Postgres: no DDL when it exists (no CREATE privilege needed),
 * bounded retention, and a failing history write never changes a run's outcome.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ensureHistory, HISTORY_TABLE, recordHistory } from '../src/postgres/history.js';
import type { Summary } from '../src/report/summary.js';
import { admin, createDb, readStatus, runCli, seed, type TestDb } from './helpers/harness.js';

async function adminClient(db: TestDb): Promise<pg.Client> {
  const c = new pg.Client({ ...admin(), database: db.name });
  await c.connect();
  return c;
}

async function ownerClient(db: TestDb): Promise<pg.Client> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.name });
  await c.connect();
  return c;
}

/** The history table, created by another role (as a DBA would), so that the Kong role does not own it. */
async function tableOwnedByAdmin(db: TestDb, grants: string): Promise<void> {
  const c = await adminClient(db);
  try {
    await ensureHistory(c, undefined);
    if (grants) {
      await c.query(`GRANT ${grants} ON ${HISTORY_TABLE} TO ${db.user}`);
      await c.query(`GRANT USAGE ON SEQUENCE ${HISTORY_TABLE}_id_seq TO ${db.user}`);
    }
  } finally {
    await c.end();
  }
}

const summary = (i: number): Summary => ({
  tool: 'kong-db-init',
  version: '0.1.0',
  command: 'migrate',
  outcome: 'ok',
  exit_code: 0,
  pod: `pod-${i}`,
  actions: [],
  wait_postgres_ms: 0,
  wait_lock_ms: 0,
  duration_ms: 1,
  started_at: new Date().toISOString(),
});

describe('history (real Postgres; Kong: the 3.7.1 stand-in)', () => {
  it('an existing table needs only INSERT: no DDL, so no CREATE privilege on the schema', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    await tableOwnedByAdmin(db, 'SELECT, INSERT, DELETE');
    const c = await adminClient(db);
    try {
      await c.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC, pg_database_owner');
      expect((await c.query(`SELECT has_schema_privilege($1, 'public', 'CREATE') AS p`, [db.user])).rows[0]?.p).toBe(false);
    } finally {
      await c.end();
    }
    // --finish=never refuses pending+new: a failed run, which writes a row
    const r = await runCli(['migrate', '--finish', 'never'], db.env());
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/could not write the history row/);
    const rows = (await db.query<{ outcome: string; exit_code: number }>(`SELECT outcome, exit_code FROM ${HISTORY_TABLE}`)).rows;
    expect(rows).toEqual([{ outcome: 'failed', exit_code: 2 }]);
  });

  it('a failing history write (permission denied) is a warning; the run succeeds all the same', async () => {
    const db = await createDb();
    await tableOwnedByAdmin(db, ''); // the Kong role may not even read it
    const r = await runCli(['migrate'], db.env());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/WARN .*could not write the history row.*permission denied/);
    expect(readStatus(db)).toMatchObject({ outcome: 'ok', exit_code: 0, state_after: 'up-to-date' });
    expect((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${HISTORY_TABLE}`)).rows[0]?.n).toBe(0);
  });

  it('keeps the last N rows; without DELETE the row is still written and the caller is warned', async () => {
    const db = await createDb();
    const c = await ownerClient(db);
    try {
      for (let i = 1; i <= 5; i++) await recordHistory(c, undefined, summary(i), { keep: 3 });
      expect((await c.query(`SELECT pod FROM ${HISTORY_TABLE} ORDER BY id`)).rows.map((r) => r.pod)).toEqual(['pod-3', 'pod-4', 'pod-5']);
    } finally {
      await c.end();
    }
    const db2 = await createDb();
    await tableOwnedByAdmin(db2, 'SELECT, INSERT');
    const c2 = await ownerClient(db2);
    const warnings: string[] = [];
    try {
      for (let i = 1; i <= 3; i++) await recordHistory(c2, undefined, summary(i), { keep: 1, warn: (m) => warnings.push(m) });
      expect((await c2.query(`SELECT count(*)::int AS n FROM ${HISTORY_TABLE}`)).rows[0].n).toBe(3);
    } finally {
      await c2.end();
    }
    expect(warnings[0]).toMatch(/could not delete old history rows.*grant DELETE/);
  });
});
