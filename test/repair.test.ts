/**
 * What a killed Kong leaves behind (../shared/kong-cli-3.7.1 runs 37 and 38): the one state Kong
 * never leaves by itself is repaired; every other one is completed by following `list`. Real
 * Postgres, real processes, the Kong 3.7.1 stand-in (which reproduces each recorded state).
 */
import { describe, expect, it } from 'vitest';
import { KONG_SQL } from './kong-standin/catalog.mjs';
import { createDb, kongQuery, listCode, readStatus, runCli, runKong, type TestDb } from './helpers/harness.js';

/** 37-bootstrap-killed-no-locks-table: Kong's schema_meta, empty, and no `locks` table. */
async function schemaMetaWithoutLocks(): Promise<TestDb> {
  const db = await createDb();
  await kongQuery(db, KONG_SQL.schemaMeta);
  return db;
}

const locksTable = async (db: TestDb) =>
  (await db.query<{ t: string | null }>(`SELECT to_regclass('locks')::text AS t`)).rows[0]!.t;
const locksIndex = async (db: TestDb) =>
  (await db.query<{ def: string }>(`SELECT indexdef AS def FROM pg_indexes WHERE tablename = 'locks' ORDER BY indexname`)).rows.map((r) => r.def);

describe('repairs of what a killed Kong leaves (real Postgres; Kong: the 3.7.1 stand-in)', () => {
  it('the stand-in is in the recorded state: list 5, bootstrap does nothing, up fails forever on the missing locks table', async () => {
    const db = await schemaMetaWithoutLocks();
    expect(await listCode(db)).toBe(5);
    const b = await runKong(['migrations', 'bootstrap'], db.env());
    expect(b.exitCode).toBe(0);
    expect(b.stdout).toMatch(/Database already bootstrapped/);
    const up = await runKong(['migrations', 'up'], db.env());
    expect(up.exitCode).toBe(1);
    expect(up.stderr).toMatch(/failed to insert cluster lock: ERROR: relation "locks" does not exist/);
  });

  it('schema_meta without locks: migrate creates the table and index as Kong does, runs up and finish, exit 0, list 0; said in the log, summary and history', async () => {
    const db = await schemaMetaWithoutLocks();
    const r = await runCli(['migrate'], db.env());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/repaired: Kong's `locks` table is missing beside schema_meta/);
    expect(await locksTable(db)).toBe('locks');
    expect(await locksIndex(db)).toEqual(['CREATE UNIQUE INDEX locks_pkey ON public.locks USING btree (key)', 'CREATE INDEX locks_ttl_idx ON public.locks USING btree (ttl)']);
    const status = readStatus(db) as { repaired?: string; actions: Array<{ action: string }>; state_before: string; state_after: string };
    expect(status.repaired).toMatch(/create it and its index as Kong's schema set-up does/);
    expect(status.actions.map((a) => a.action)).toEqual(['repair', 'up', 'finish']);
    expect(status).toMatchObject({ state_before: 'new', state_after: 'up-to-date' });
    const h = await db.query<{ actions: Array<{ action: string; note?: string }> }>('SELECT actions FROM kong_db_init_history ORDER BY id DESC LIMIT 1');
    expect(h.rows[0]!.actions[0]).toMatchObject({ action: 'repair', note: expect.stringMatching(/locks/) });
    expect(await listCode(db)).toBe(0);
  });

  it('--dry-run and status show the repair they would make, and change nothing', async () => {
    const db = await schemaMetaWithoutLocks();
    const dry = await runCli(['migrate', '--dry-run'], db.env());
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(readStatus(db)).toMatchObject({ dry_run: true, repaired: expect.stringMatching(/^would repair: Kong's `locks` table is missing/) });
    const st = await runCli(['status', '--json'], db.env());
    expect(st.exitCode).toBe(5);
    expect(JSON.parse(st.stdout.trim().split('\n').pop()!)).toMatchObject({ repair: expect.stringMatching(/`locks` table is missing/) });
    expect(await locksTable(db)).toBeNull();
  });

  it('--no-repair refuses with exit 14 naming the manual fix, and changes nothing', async () => {
    const db = await schemaMetaWithoutLocks();
    const r = await runCli(['migrate', '--no-repair'], db.env());
    expect(r.exitCode).toBe(14);
    expect(r.stderr).toMatch(/--repair=false: repair it by hand: run, as the Kong database user: BEGIN; CREATE TABLE IF NOT EXISTS locks \(key TEXT PRIMARY KEY, owner TEXT, ttl TIMESTAMP WITH TIME ZONE\); CREATE INDEX IF NOT EXISTS locks_ttl_idx ON locks \(ttl\); COMMIT;/);
    expect(r.stderr).toMatch(/never bootstrap --force or reset/);
    expect(await locksTable(db)).toBeNull();
  });
});
