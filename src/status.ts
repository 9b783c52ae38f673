/** Run status: the final summary line, the Kubernetes termination message, and history rows in Postgres. */
import fs from 'node:fs';
import os from 'node:os';
import type pg from 'pg';
import { quoteIdent } from './db.js';
import { redact } from './log.js';

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

/** Serialize a summary under `limit` bytes, shortening the error and actions if needed. */
export function serializeSummary(s: Summary, limit = TERMINATION_LIMIT): string {
  let out = redact(JSON.stringify(s));
  if (Buffer.byteLength(out) <= limit) return out;
  const copy: Summary = { ...s, actions: s.actions.map((a) => ({ ...a, note: undefined })) };
  out = redact(JSON.stringify(copy));
  let err = copy.error ?? '';
  while (Buffer.byteLength(out) > limit && (err.length > 0 || copy.actions.length > 0)) {
    if (err.length > 64) err = err.slice(0, Math.floor(err.length * 0.7)) + '…';
    else if (copy.actions.length > 0) copy.actions = copy.actions.slice(1);
    else err = '';
    copy.error = err || undefined;
    out = redact(JSON.stringify(copy));
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

export async function ensureHistory(c: pg.Client, schema: string | undefined): Promise<void> {
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
    await c.query(sql);
  }
}

export async function recordHistory(c: pg.Client, schema: string | undefined, s: Summary): Promise<void> {
  await ensureHistory(c, schema);
  await c.query(
    `INSERT INTO ${table(schema)} (started_at, pod, tool_version, kong_version, state_before, state_after, actions, outcome, exit_code, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)`,
    [s.started_at, s.pod, s.version, s.kong_version ?? null, s.state_before ?? null, s.state_after ?? null, redact(JSON.stringify(s.actions)), s.outcome, s.exit_code, s.error ? redact(s.error) : null],
  );
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
  const exists = await c.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table(schema)]);
  if (!exists.rows[0]?.t) return [];
  const r = await c.query<HistoryRow>(
    `SELECT id::text, started_at::text, finished_at::text, pod, kong_version, state_before, state_after, actions, outcome, exit_code, error
       FROM ${table(schema)} ORDER BY id DESC LIMIT $1`,
    [limit],
  );
  return r.rows;
}

export function podName(): string {
  return process.env.POD_NAME || os.hostname();
}
