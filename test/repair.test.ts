/**
 * What a killed Kong leaves behind (../shared/kong-cli-3.7.1 runs 37 and 38): the one state Kong
 * never leaves by itself is repaired; every other one is completed by following `list`. Real
 * Postgres, real processes, the Kong 3.7.1 stand-in (which reproduces each recorded state).
 */
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { KONG_SQL } from './kong-standin/catalog.mjs';
import { createDb, kongQuery, listCode, readStatus, runCli, runKong, seedKong, STANDIN_BIN, type TestDb } from './helpers/harness.js';

/** 37-bootstrap-killed-no-locks-table: Kong's schema_meta, empty, and no `locks` table. */
async function schemaMetaWithoutLocks(): Promise<TestDb> {
  const db = await createDb();
  await kongQuery(db, KONG_SQL.schemaMeta);
  return db;
}

const locksTable = async (db: TestDb) => (await db.query<{ t: string | null }>(`SELECT to_regclass('locks')::text AS t`)).rows[0]!.t;
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
    expect(await locksIndex(db)).toEqual([
      'CREATE UNIQUE INDEX locks_pkey ON public.locks USING btree (key)',
      'CREATE INDEX locks_ttl_idx ON public.locks USING btree (ttl)',
    ]);
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
    expect(r.stderr).toMatch(
      /--repair=false: repair it by hand: run, as the Kong database user: BEGIN; CREATE TABLE IF NOT EXISTS locks \(key TEXT PRIMARY KEY, owner TEXT, ttl TIMESTAMP WITH TIME ZONE\); CREATE INDEX IF NOT EXISTS locks_ttl_idx ON locks \(ttl\); COMMIT;/,
    );
    expect(r.stderr).toMatch(/never bootstrap --force or reset/);
    expect(await locksTable(db)).toBeNull();
  });

  /**
   * Kong killed at the points runs 37/38 name (KONG_STANDIN_KILL_AT SIGKILLs the whole chain there,
   * as `kill -9 -PGID` did): the next `migrate` completes (exit 0, a state kong start accepts), and
   * `finish` after it reaches `list` 0. The dead Kong's lock row costs nothing (no other session).
   */
  const KILLS: Array<[string, 'empty' | 'new', string, number, number]> = [
    // [kong command, database, kill point, `list` right after the kill (the recorded state), `list` after migrate:
    //  0 where nothing was ever recorded (no Kong can have started: finished in the same run), 4 where
    //  teardowns wait for finish after the rollout, as --finish=auto wants]
    ['bootstrap', 'empty', 'start', 3, 0],
    ['bootstrap', 'empty', 'schema', 3, 0],
    ['bootstrap', 'empty', 'locks-table', 5, 0],
    ['bootstrap', 'empty', 'locked', 5, 0],
    ['bootstrap', 'empty', 'record:core/000_base', 5, 0],
    ['bootstrap', 'empty', 'up:core/018_310_to_320', 5, 4],
    ['bootstrap', 'empty', 'record-teardown:core/009_200_to_210', 4, 4],
    ['bootstrap', 'empty', 'unlock', 0, 0],
    ['up', 'new', 'start', 5, 4],
    ['up', 'new', 'locked', 5, 4],
    ['up', 'new', 'record:core/023_360_to_370', 5, 4],
    ['up', 'new', 'up:ai-proxy/001_360_to_370', 5, 4],
    ['up', 'new', 'unlock', 4, 4],
  ];
  for (const [cmd, shape, point, listAfterKill, listAfterMigrate] of KILLS) {
    it.concurrent(`kong migrations ${cmd} killed at ${point}: list ${listAfterKill}; then migrate exits 0 (list ${listAfterMigrate}), finish reaches list 0`, async () => {
      const db = await createDb();
      if (shape === 'new') await seedKong(db, 'new');
      // in a process group of its own, as kong-db-init runs it: the kill takes the whole chain
      const killed = await execa(path.join(STANDIN_BIN, 'kong'), ['migrations', cmd], {
        env: db.env({ KONG_STANDIN_KILL_AT: point }),
        extendEnv: false,
        reject: false,
        detached: true,
      });
      expect(killed.signal, String(killed.stderr)).toBe('SIGKILL');
      expect(await listCode(db)).toBe(listAfterKill);
      const m = await runCli(['migrate'], db.env());
      expect(m.exitCode, m.stderr).toBe(0);
      expect(await listCode(db)).toBe(listAfterMigrate);
      expect(m.stderr).not.toMatch(/aborted by Kong's own lock/); // a dead row is cleared, not waited out
      const f = await runCli(['finish', '--rollout=skip'], db.env());
      expect(f.exitCode, f.stderr).toBe(0);
      expect(await listCode(db)).toBe(0);
    });
  }
});
