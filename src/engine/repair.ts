/**
 * States an interrupted Kong leaves that Kong's own next command does not complete
 * (../shared/kong-cli-3.7.1 runs 37 and 38, kill-enumeration.md), and the least change that
 * lets it: done under our advisory lock only, never `reset`, never `--force`.
 *
 * - `schema_meta` without the `locks` table (bootstrap killed between its two CREATE TABLEs):
 *   `bootstrap` says "already bootstrapped", `up`/`finish` fail forever with relation "locks"
 *   does not exist. Repair: create `locks` and its index exactly as Kong's schema set-up does.
 * - a dead Kong's `locks` row: Kong waits out its ttl (60 s by default; `up` then ends with
 *   "aborted", doing nothing). Cleared early only when provably dead: we hold the advisory lock
 *   (no other kong-db-init runs Kong) and no other session on the database could be a Kong
 *   migration; otherwise its ttl is waited out, as Kong would.
 * `decideRepair` is pure; `readRepairFacts` and `repair` are the I/O around it.
 */
import type pg from 'pg';
import { ExitCode, InitError } from '../errors.js';
import { quoteIdent } from '../postgres/connect.js';
import { kongLockRow, type KongLockRow } from '../postgres/kong-tables.js';
import { count, stateName, type SchemaState } from './plan.js';
import type { Run } from './run.js';

export interface RepairFacts {
  /** Kong's schema_meta exists (the database was bootstrapped at least in part). */
  schemaMeta: boolean;
  /** Kong's `locks` table exists. */
  locksTable: boolean;
  /** Kong's unexpired "migrations" row, if any. */
  kongLock: KongLockRow | undefined;
  /** Sessions on this database that are not kong-db-init's (any of them could be a Kong migration). */
  otherSessions: number;
}

export type Repair =
  | { kind: 'create-locks-table'; what: string; manual: string }
  | { kind: 'clear-dead-kong-lock'; what: string; manual: string; owner: string }
  | { kind: 'wait-kong-lock'; what: string; manual: string };

const CREATE_LOCKS_SQL = (t: string, idx: string) =>
  `CREATE TABLE IF NOT EXISTS ${t} (key TEXT PRIMARY KEY, owner TEXT, ttl TIMESTAMP WITH TIME ZONE); CREATE INDEX IF NOT EXISTS ${idx} ON ${t} (ttl);`;

/** What to repair, if anything. Pure. */
export function decideRepair(f: RepairFacts): Repair | undefined {
  if (f.schemaMeta && !f.locksTable) {
    return {
      kind: 'create-locks-table',
      what: "Kong's `locks` table is missing beside schema_meta (a bootstrap was killed between creating them): create it and its index as Kong's schema set-up does",
      manual: `run, as the Kong database user: BEGIN; ${CREATE_LOCKS_SQL('locks', 'locks_ttl_idx')} COMMIT; then kong migrations up and finish (never bootstrap --force or reset on a database that holds data)`,
    };
  }
  if (!f.kongLock) return undefined;
  const left = `${Math.ceil(f.kongLock.ms_left / 1000)} s`;
  if (f.otherSessions > 0) {
    return {
      kind: 'wait-kong-lock',
      what: `Kong's "migrations" lock row (owner ${f.kongLock.owner}) is held for ${left} more, and ${f.otherSessions} other session(s) on the database could be a running Kong migration: waiting for its ttl`,
      manual: `if no Kong migration runs anywhere, delete the row: DELETE FROM locks WHERE key = 'migrations'`,
    };
  }
  return {
    kind: 'clear-dead-kong-lock',
    owner: f.kongLock.owner,
    what: `Kong's "migrations" lock row (owner ${f.kongLock.owner}, ${left} before its ttl) was left by a killed Kong: no other session is on the database, so it was deleted`,
    manual: `DELETE FROM locks WHERE key = 'migrations' (only when no Kong migration runs anywhere), or wait ${left} for its ttl`,
  };
}

async function tableExists(c: pg.Client, schema: string | undefined, name: string): Promise<boolean> {
  const r = await c.query<{ t: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 AND c.relkind IN ('r', 'p')) AS t`,
    [schema ?? null, name],
  );
  return r.rows[0]?.t === true;
}

/** Sessions on this database other than kong-db-init's own (by application_name) and the caller's. */
async function otherSessions(c: pg.Client, ownPids: number[]): Promise<number> {
  const r = await c.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT (pid = ANY($1::int[]))
        AND backend_type = 'client backend' AND COALESCE(application_name, '') NOT LIKE 'kong-db-init%'`,
    [ownPids],
  );
  return r.rows[0]?.n ?? 0;
}

export async function readRepairFacts(c: pg.Client, schema: string | undefined, ownPids: number[] = []): Promise<RepairFacts> {
  const schemaMeta = await tableExists(c, schema, 'schema_meta');
  const locksTable = schemaMeta && (await tableExists(c, schema, 'locks'));
  const row = locksTable ? await kongLockRow(c, schema) : undefined;
  const kongLock = row && row.ms_left > 0 ? row : undefined;
  return { schemaMeta, locksTable, kongLock, otherSessions: kongLock ? await otherSessions(c, ownPids) : 0 };
}

/** The repair `state` calls for, read on `c` (for --dry-run and `status`). */
export async function planRepair(c: pg.Client, schema: string | undefined, state: SchemaState): Promise<Repair | undefined> {
  if (state.code === 3) return undefined;
  return decideRepair(await readRepairFacts(c, schema));
}

async function applyRepair(c: pg.Client, schema: string | undefined, r: Repair): Promise<void> {
  const t = schema ? `${quoteIdent(schema)}.locks` : 'locks';
  await c.query('BEGIN');
  try {
    if (r.kind === 'create-locks-table') await c.query(CREATE_LOCKS_SQL(t, 'locks_ttl_idx'));
    // only the row we saw (a Kong outside our lock may have replaced an expired one meanwhile)
    else await c.query(`DELETE FROM ${t} WHERE key = 'migrations' AND owner = $1 AND ttl > now()`, [r.kind === 'clear-dead-kong-lock' ? r.owner : '']);
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    throw e;
  }
}

/**
 * A `bootstrap` killed before it recorded anything (schema_meta empty: `list` 5 with nothing
 * executed) leaves a database on which `kong start` has never succeeded: no Kong node can run on
 * it, nothing is mid-rollout, so the teardowns that `up` leaves pending are finished in this run.
 */
function finishIfNeverBootstrapped(run: Run, state: SchemaState): void {
  if (run.finish !== 'auto' || state.code !== 5 || count(state.executed) > 0) return;
  run.finish = 'always';
  run.ctx.log.info(
    'the database was never fully bootstrapped (schema_meta records nothing): no Kong node can have started on it, so pending migrations are finished in this run too',
  );
}

/**
 * Under the lock, before the first step: repair what Kong cannot leave by itself, say so once
 * (log, summary `repaired`, history row), and return the state re-read afterwards. With
 * --repair=false, refuse naming the manual fix.
 */
export async function repair(run: Run, state: SchemaState, reread: () => Promise<SchemaState>): Promise<SchemaState> {
  const { ctx, sessions, summary: s } = run;
  const c = sessions.lockClient!;
  if (state.code === 3) return state;
  finishIfNeverBootstrapped(run, state);
  const r = decideRepair(await readRepairFacts(c, ctx.kong.schema, [sessions.lock?.backendPid ?? -1]));
  if (!r) return state;
  if (r.kind === 'wait-kong-lock' || (r.kind === 'clear-dead-kong-lock' && !ctx.settings.repair)) {
    // Kong waits out the row by itself (the step is retried after its ttl): nothing to refuse
    const what =
      r.kind === 'wait-kong-lock'
        ? r.what
        : `Kong's "migrations" lock row (owner ${r.what.split('owner ')[1]?.split(',')[0]}) is held: --repair=false, waiting for its ttl`;
    ctx.log.info(what);
    s.note = what;
    return state;
  }
  if (!ctx.settings.repair) {
    throw new InitError(ExitCode.KONG_FAILED, `${r.what.split(':')[0]}; --repair=false: repair it by hand: ${r.manual}`);
  }
  await applyRepair(c, ctx.kong.schema, r);
  ctx.log.warn(`repaired: ${r.what}`, { state: stateName(state) });
  s.repaired = r.what;
  s.actions.push({ action: 'repair', ms: 0, exit: 0, note: r.what });
  run.changed = true;
  return r.kind === 'create-locks-table' ? reread() : state;
}
