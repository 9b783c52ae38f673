/** The history table: one row per run that changed something or failed (`kong-db-init status` reads it). */
import type pg from 'pg';
import type { HistoryRow, Summary } from '../report/summary.js';
import { scrubSummary } from '../report/summary.js';
import { scrubDeep } from '../report/secrets.js';
import { quoteIdent } from './connect.js';

export const HISTORY_TABLE = 'kong_db_init_history';

function table(schema: string | undefined): string {
  return schema ? `${quoteIdent(schema)}.${HISTORY_TABLE}` : HISTORY_TABLE;
}

/** How many history rows are kept: older ones are deleted after each insert (needs DELETE). */
export const HISTORY_KEEP = 200;

async function historyExists(c: pg.Client, schema: string | undefined): Promise<boolean> {
  const r = await c.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table(schema)]);
  return Boolean(r.rows[0]?.t);
}

/** Create the history table when it is missing; no DDL (and no CREATE privilege) when it exists. */
export async function ensureHistory(c: pg.Client, schema: string | undefined): Promise<void> {
  if (await historyExists(c, schema)) return;
  const sql = `CREATE TABLE IF NOT EXISTS ${table(schema)} (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    pod           text NOT NULL,
    tool_version  text,
    kong_version  text,
    state_before  text,
    state_after   text,
    actions       jsonb NOT NULL DEFAULT '[]',
    outcome       text NOT NULL,
    exit_code     integer NOT NULL,
    error         text
  )`;
  try {
    await c.query(sql);
  } catch (e) {
    // two first runs may race on CREATE TABLE IF NOT EXISTS (pg_type unique index): once more is enough
    if ((e as { code?: string }).code !== '23505' && (e as { code?: string }).code !== '42P07') throw e;
    if (!(await historyExists(c, schema))) await c.query(sql);
  }
}

export interface HistoryOptions {
  /** Rows to keep (default HISTORY_KEEP). */
  keep?: number;
  /** Told when the old rows could not be deleted (the new row is written all the same). */
  warn?: (msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * Insert one history row (its free text scrubbed of secrets first), then delete the rows older
 * than the last `keep`. Throws when the row cannot be written: the caller logs a warning and the
 * run's outcome stays what it was.
 */
export async function recordHistory(c: pg.Client, schema: string | undefined, s: Summary, o: HistoryOptions = {}): Promise<void> {
  const row = scrubSummary(s);
  await ensureHistory(c, schema);
  const r = await c.query<{ id: string }>(
    `INSERT INTO ${table(schema)} (started_at, pod, tool_version, kong_version, state_before, state_after, actions, outcome, exit_code, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) RETURNING id::text`,
    [
      row.started_at,
      row.pod,
      row.version,
      row.kong_version ?? null,
      row.state_before ?? null,
      row.state_after ?? null,
      JSON.stringify(row.actions),
      row.outcome,
      row.exit_code,
      row.error ?? null,
    ],
  );
  const keep = Math.max(1, o.keep ?? HISTORY_KEEP);
  const id = r.rows[0]?.id;
  if (id === undefined) return;
  try {
    await c.query(
      `DELETE FROM ${table(schema)} WHERE id < (SELECT min(id) FROM (SELECT id FROM ${table(schema)} WHERE id <= $1::bigint ORDER BY id DESC LIMIT $2) AS kept)`,
      [id, keep],
    );
  } catch (e) {
    o.warn?.('could not delete old history rows (the new row was written); grant DELETE on the history table to keep it bounded', {
      table: table(schema),
      error: (e as Error).message,
    });
  }
}

export async function readHistory(c: pg.Client, schema: string | undefined, limit: number): Promise<HistoryRow[]> {
  if (!(await historyExists(c, schema))) return [];
  const r = await c.query<HistoryRow>(
    `SELECT id::text, started_at::text, finished_at::text, pod, kong_version, state_before, state_after, actions, outcome, exit_code, error
       FROM ${table(schema)} ORDER BY id DESC LIMIT $1`,
    [limit],
  );
  return scrubDeep(r.rows);
}
