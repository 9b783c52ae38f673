/**
 * Reporting a run: the summary (one JSON line on stdout, the Kubernetes termination message),
 * the `status` view, and the scrubbing of their free text. The history rows in Postgres are
 * written by postgres/history.ts from the same summary.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { Logger } from './log.js';
import { scrub } from './secrets.js';

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
  /** What was repaired (or, in a dry run, would be) of a state an interrupted Kong left. */
  repaired?: string;
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

export function podName(): string {
  return process.env.POD_NAME || os.hostname();
}

/** One row of the history table (postgres/history.ts), as `status` shows it. */
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

/** What `kong-db-init status` shows; formatStatus renders it (pure). */
export interface StatusView {
  target: string;
  state: string;
  listExit: number;
  kongStartAccepts: boolean;
  plan: string[];
  reason: string;
  refused?: string;
  /** The repair `migrate` would make (engine/repair.ts). */
  repair?: string;
  pending: Record<string, string[]>;
  new: Record<string, string[]>;
  history: HistoryRow[];
}

/** The `status` output: one JSON object, or lines for people. */
export function formatStatus(v: StatusView, json: boolean): string {
  if (json) {
    return JSON.stringify({
      target: v.target,
      state: v.state,
      list_exit: v.listExit,
      kong_start_accepts: v.kongStartAccepts,
      plan: v.plan,
      reason: v.reason,
      refused: v.refused,
      repair: v.repair,
      pending: v.pending,
      new: v.new,
      history: v.history,
    });
  }
  return [
    `target:  ${v.target}`,
    `state:   ${v.state} (kong migrations list exit ${v.listExit}; kong start ${v.kongStartAccepts ? 'accepts it' : 'refuses it'})`,
    `plan:    ${v.plan.join(' then ') || 'nothing'} (${v.refused ?? v.reason})`,
    ...(v.repair ? [`repair:  ${v.repair}`] : []),
    `history: ${v.history.length === 0 ? 'none' : ''}`,
    ...v.history.map(
      (h) =>
        `  ${h.finished_at}  ${h.pod}  ${h.outcome}  ${h.state_before ?? '?'} -> ${h.state_after ?? '?'}  [${h.actions.map((a) => a.action).join(',')}]${h.error ? '  error: ' + h.error : ''}`,
    ),
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
