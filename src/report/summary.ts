/** Run status: the final summary line, the Kubernetes termination message, and history rows in Postgres. */
import fs from 'node:fs';
import os from 'node:os';
import type pg from 'pg';
import { quoteIdent } from '../postgres/connect.js';
import type { Logger } from './log.js';
import { scrub, scrubDeep } from './secrets.js';

export interface ActionRecord {
  action: string;
  ms: number;
  exit: number;
  note?: string;
}

export interface Summary {
  tool: 'kong-db-init';
  version: string;
  command: string;
  outcome: 'ok' | 'failed' | 'interrupted' | 'skipped';
  exit_code: number;
  pod: string;
  kong_version?: string;
  state_before?: string;
  state_after?: string;
  plan?: string[];
  actions: ActionRecord[];
  wait_postgres_ms: number;
  wait_lock_ms: number;
  duration_ms: number;
  started_at: string;
  error?: string;
  dry_run?: boolean;
  note?: string;
}

export const TERMINATION_LIMIT = 4096;

/** Cut text to at most `max` UTF-16 units without splitting a surrogate pair, marking the cut. */
function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = Math.max(0, max);
  const c = text.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return text.slice(0, end) + '…';
}

/**
 * The free-text fields of a summary (error, notes: they may quote Kong or Postgres) scrubbed of
 * secrets (rules 1 to 3). The other fields are ours (names, states, numbers, the pod name) and
 * are kept as they are, so that `"tool":"kong-db-init"` stays intact whatever the password is.
 */
export function scrubSummary(s: Summary): Summary {
  const text = (t: string | undefined) => (t === undefined ? undefined : scrub(t, false));
  return { ...s, error: text(s.error), note: text(s.note), actions: s.actions.map((a) => ({ ...a, note: text(a.note) })) };
}

/**
 * Serialize a summary under `limit` bytes. The free text is scrubbed of secrets first, then the
 * summary is serialised, then (only if too long) the already scrubbed error and action notes
 * are shortened: nothing is redacted in JSON text, and a cut can never expose half a secret.
 */
export function serializeSummary(s: Summary, limit = TERMINATION_LIMIT): string {
  const clean = scrubSummary(s);
  let out = JSON.stringify(clean);
  if (Buffer.byteLength(out) <= limit) return out;
  const copy: Summary = { ...clean, actions: clean.actions.map((a) => ({ ...a, note: undefined })) };
  out = JSON.stringify(copy);
  let err = copy.error ?? '';
  while (Buffer.byteLength(out) > limit && (err.length > 0 || copy.actions.length > 0)) {
    if (err.length > 64) err = cut(err, Math.floor(err.length * 0.7));
    else if (copy.actions.length > 0) copy.actions = copy.actions.slice(1);
    else err = '';
    copy.error = err || undefined;
    out = JSON.stringify(copy);
  }
  return out;
}

/** The file to write: explicit setting, or /dev/termination-log when it exists and is writable. */
export function terminationPath(setting: string | undefined): string | undefined {
  if (setting !== undefined) return setting === '' ? undefined : setting;
  try {
    fs.accessSync('/dev/termination-log', fs.constants.W_OK);
    return '/dev/termination-log';
  } catch {
    return undefined;
  }
}

export function writeTerminationMessage(path: string, text: string): void {
  fs.writeFileSync(path, text + '\n');
}

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
    [row.started_at, row.pod, row.version, row.kong_version ?? null, row.state_before ?? null, row.state_after ?? null, JSON.stringify(row.actions), row.outcome, row.exit_code, row.error ?? null],
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

export interface HistoryRow {
  id: string;
  started_at: string;
  finished_at: string;
  pod: string;
  kong_version: string | null;
  state_before: string | null;
  state_after: string | null;
  actions: ActionRecord[];
  outcome: string;
  exit_code: number;
  error: string | null;
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

export function podName(): string {
  return process.env.POD_NAME || os.hostname();
}

/** What `kong-db-init status` shows; formatStatus renders it (pure). */
export interface StatusView {
  target: string;
  state: string;
  listExit: number;
  kongStartAccepts: boolean;
  plan: string[];
  reason: string;
  refused?: string;
  pending: Record<string, string[]>;
  new: Record<string, string[]>;
  history: HistoryRow[];
}

/** The `status` output: one JSON object, or lines for people. */
export function formatStatus(v: StatusView, json: boolean): string {
  if (json) {
    return JSON.stringify({
      target: v.target, state: v.state, list_exit: v.listExit, kong_start_accepts: v.kongStartAccepts, plan: v.plan,
      reason: v.reason, refused: v.refused, pending: v.pending, new: v.new, history: v.history,
    });
  }
  return [
    `target:  ${v.target}`,
    `state:   ${v.state} (kong migrations list exit ${v.listExit}; kong start ${v.kongStartAccepts ? 'accepts it' : 'refuses it'})`,
    `plan:    ${v.plan.join(' then ') || 'nothing'} (${v.refused ?? v.reason})`,
    `history: ${v.history.length === 0 ? 'none' : ''}`,
    ...v.history.map((h) => `  ${h.finished_at}  ${h.pod}  ${h.outcome}  ${h.state_before ?? '?'} -> ${h.state_after ?? '?'}  [${h.actions.map((a) => a.action).join(',')}]${h.error ? '  error: ' + h.error : ''}`),
  ].join('\n');
}

/** End a run (migrate or finish): the summary line on stdout, the termination message; returns the exit code. */
export function publishSummary(log: Logger, statusFile: string | undefined, s: Summary, started: number): number {
  s.duration_ms = Date.now() - started;
  const line = serializeSummary(s);
  log.result(line);
  const path = terminationPath(statusFile);
  if (path) {
    try {
      writeTerminationMessage(path, line);
    } catch (e) {
      log.warn('could not write the status file', { path, error: (e as Error).message });
    }
  }
  return s.exit_code;
}
