/**
 * One Kong step (`kong migrations bootstrap|up|finish`) run to its outcome: run it, re-read the
 * state, classify (plan.ts `classifyStep`), and retry what Kong's own lock or a concurrent change
 * refused, within the deadline. A signal never cuts the step short by itself (kong.ts lets it
 * finish within --grace-period); what happened is reported truthfully.
 */
import type { FinishPolicy } from './plan.js';
import { ExitCode, InitError, Interrupted } from '../errors.js';
import { kongError, lastLines, readStepOutput, type KongCli, type KongResult } from '../kong/cli.js';
import type { KongLockRow } from '../postgres/kong-tables.js';
import type { Logger } from '../report/log.js';
import { classifyStep, decide, stateName, retryDelay, type Action, type SchemaState, type StepOutcome } from './plan.js';
import type { ActionRecord } from '../report/summary.js';
import { sleep } from '../postgres/wait.js';

/** How long the state may be re-read after a signal (inside the pod's termination grace). */
export const REREAD_AFTER_SIGNAL_MS = 5000;

export interface StepContext {
  cli: KongCli;
  log: Logger;
  signal: AbortSignal;
  deadline: number;
  finish: FinishPolicy;
  /** Kong's `locks` row as it is now (read on a live connection). */
  kongLock(): Promise<KongLockRow | undefined>;
  /** Every attempt's record, in order (the summary's `actions`). */
  record(r: ActionRecord): void;
  /** The last state read (the summary's `state_after`). */
  observed(s: SchemaState): void;
}

/**
 * A signal arrived during the step or its re-check: record the step first, then re-read the state
 * with a bounded time of its own (inside the pod's termination grace; the signal does not cut
 * it), and say truthfully whether Kong finished or was killed mid-step.
 */
async function interrupted(action: Action, r: KongResult, rec: ActionRecord, sc: StepContext): Promise<Interrupted> {
  rec.note = r.killed ? 'killed mid-step after --grace-period' : 'finished after the signal';
  sc.record(rec);
  let now = 'unknown (could not re-read it)';
  try {
    const after = await sc.cli.list(AbortSignal.timeout(REREAD_AFTER_SIGNAL_MS));
    sc.observed(after);
    now = `"${stateName(after)}"`;
  } catch {
    // leave it unknown
  }
  return new Interrupted(
    r.killed
      ? `kong migrations ${action} was still running after --grace-period and was killed mid-step; the schema is now ${now}; rerun to complete it`
      : `kong migrations ${action} finished (exit ${r.exitCode}) after the signal; the schema is now ${now}`,
  );
}

interface Attempt {
  r: KongResult;
  rec: ActionRecord;
  after: SchemaState;
  lockRow: KongLockRow | undefined;
  outcome: StepOutcome;
}

/** One attempt: run the step, re-read the state (a signal here still records the step), classify. */
async function attempt(action: Action, before: SchemaState, sc: StepContext): Promise<Attempt> {
  const { cli, signal } = sc;
  if (signal.aborted) throw new Interrupted(`kong migrations ${action} was not started: the signal came first`);
  const r = await cli.migrations(action, signal);
  const rec: ActionRecord = { action, ms: r.durationMs, exit: r.exitCode };
  if (signal.aborted) throw await interrupted(action, r, rec, sc);
  let after: SchemaState;
  try {
    after = await cli.list(signal);
  } catch (e) {
    // the signal came during the re-check: the step's outcome is recorded all the same
    if (signal.aborted) throw await interrupted(action, r, rec, sc);
    sc.record({ ...rec, note: 'the state could not be re-read after the step' });
    throw e;
  }
  sc.observed(after);
  const lockRow = await sc.kongLock();
  const outcome = classifyStep({ exitCode: r.exitCode, facts: readStepOutput(r), before, after, kongLockHeld: lockRow !== undefined });
  return { r, rec, after, lockRow, outcome };
}

/** The error that ends the step, for the outcomes that end it; undefined for those retried. */
function finalError(action: Action, a: Attempt, n: number): InitError | undefined {
  const { r, after } = a;
  if (a.outcome === 'failed')
    return new InitError(
      ExitCode.KONG_FAILED,
      `kong migrations ${action} exited ${r.exitCode} and the schema is now "${stateName(after)}": ${kongError(r.stderr || r.stdout)}`,
    );
  if (a.outcome === 'stuck')
    return new InitError(
      ExitCode.KONG_FAILED,
      `kong migrations ${action} exited ${r.exitCode} but the schema is still "${stateName(after)}": ${kongError(r.stdout || r.stderr)}`,
    );
  if (a.outcome === 'race' && n >= 8) {
    return new InitError(
      ExitCode.KONG_FAILED,
      `kong migrations ${action} kept failing with a concurrent-change error (is another \`kong migrations\` running, e.g. the chart's init-migrations Job?): ${lastLines(r.stderr, 2)}`,
    );
  }
  return undefined;
}

/** Wait before retrying an aborted or raced attempt: until Kong's lock row expires, within the deadline. */
async function waitToRetry(action: Action, a: Attempt, n: number, sc: StepContext): Promise<void> {
  const { lockRow, outcome } = a;
  const wait = retryDelay(lockRow?.ms_left, n);
  const fix = lockRow
    ? `Kong's own "migrations" lock row is held by owner ${lockRow.owner} until ${lockRow.ttl}; if no Kong migration is running it was left by a killed run and expires then (or delete it: DELETE FROM locks WHERE key = 'migrations')`
    : 'another Kong node changed the database at the same time';
  if (Date.now() + wait > sc.deadline)
    throw new InitError(ExitCode.DEADLINE, `deadline reached while kong migrations ${action} kept being refused: ${fix}; raise --deadline`);
  sc.log.warn(
    outcome === 'aborted'
      ? `kong migrations ${action} was aborted by Kong's own lock; retrying`
      : `kong migrations ${action} hit a concurrent change; retrying`,
    {
      kong_lock_owner: lockRow?.owner,
      kong_lock_until: lockRow?.ttl,
      next_try_ms: wait,
    },
  );
  await sleep(wait, sc.signal);
}

/** Run `action` from state `before` until it progressed (returns the new state) or failed (throws). */
export async function runStep(action: Action, before: SchemaState, sc: StepContext): Promise<SchemaState> {
  for (let n = 1; ; n++) {
    sc.log.info(`running kong migrations ${action}`, { attempt: n, state: stateName(before) });
    const a = await attempt(action, before, sc);
    const err = finalError(action, a, n);
    if (err) {
      sc.record(a.rec);
      throw err;
    }
    if (a.outcome === 'progressed' || a.outcome === 'progressed-after-race') {
      if (a.outcome === 'progressed-after-race') a.rec.note = `race error, but the state moved on: ${lastLines(a.r.stderr, 1)}`;
      sc.record(a.rec);
      sc.log.info(`kong migrations ${action} done`, { ms: a.r.durationMs, state: stateName(a.after) });
      return a.after;
    }
    a.rec.note = a.outcome === 'aborted' ? 'aborted: Kong lock held' : 'race error';
    sc.record(a.rec);
    await waitToRetry(action, a, n, sc);
    before = await sc.cli.list(sc.signal);
    sc.observed(before);
    if (decide(before, sc.finish).actions[0] !== action) return before;
  }
}
