/**
 * The engine: what every database command (migrate, wait, finish) shares, so that whatever one
 * guarantees the others guarantee by construction. A run has one summary, one Kong CLI, one set
 * of Postgres sessions (postgres/sessions.ts) and one way to end: `runCommand` maps any error to
 * a documented exit code (never 1 for Postgres or Kubernetes), writes the history row, releases
 * the lock, removes Kong's prefix and publishes the summary.
 *
 *   commands/  thin commands over this engine      engine/    state, plan, step, apply (this)
 *   kong/      Kong's settings, CLI, process group  postgres/  connect, wait, sessions, lock, tables
 *   kube/      Kubernetes API, rollout              render/    post-render and values transform
 *   report/    summary, log, secrets
 */
import { ExitCode, InitError, Interrupted, isInitError } from '../errors.js';
import type { Settings } from '../commands/options.js';
import type { FinishPolicy } from './plan.js';
import { KongCli } from '../kong/cli.js';
import type { Env, KongPg } from '../kong/config.js';
import { dbFailure, isDbError } from '../postgres/connect.js';
import { Sessions } from '../postgres/sessions.js';
import type { Logger } from '../report/log.js';
import { podName, publishSummary, type Summary } from '../report/summary.js';

export interface RunContext {
  settings: Settings;
  kong: KongPg;
  env: Env;
  log: Logger;
  signal: AbortSignal;
  toolVersion: string;
}

/** One run of a database command: its summary, Kong CLI, sessions and deadline. */
export interface Run {
  ctx: RunContext;
  summary: Summary;
  cli: KongCli;
  sessions: Sessions;
  deadline: number;
  /** Set when the run changed the database (a history row is written). */
  changed: boolean;
  /** The finish policy of this run: --finish, or `always` where no Kong can have started yet (repair.ts). */
  finish: FinishPolicy;
}

export function newSummary(toolVersion: string, command: string): Summary {
  return {
    tool: 'kong-db-init',
    version: toolVersion,
    command,
    outcome: 'ok',
    exit_code: 0,
    pod: podName(),
    actions: [],
    wait_postgres_ms: 0,
    wait_lock_ms: 0,
    duration_ms: 0,
    started_at: new Date().toISOString(),
  };
}

export function kongCli(ctx: RunContext): KongCli {
  const st = ctx.settings;
  return new KongCli({
    bin: st.kongBin,
    kong: ctx.kong,
    env: ctx.env,
    log: ctx.log,
    graceMs: st.graceMs,
    migrationArgs: ['--db-timeout', String(st.kongDbTimeoutS), '--lock-timeout', String(st.kongLockTimeoutS)],
  });
}

/** Any error as a documented outcome: Postgres errors by class, never 1 except for a real bug. */
export function toOutcome(e: unknown, k: KongPg): Pick<Summary, 'outcome' | 'exit_code' | 'error'> {
  if (e instanceof Interrupted) {
    return { outcome: 'interrupted', exit_code: ExitCode.INTERRUPTED, error: e.message === 'interrupted' ? 'interrupted by a signal' : e.message };
  }
  const err = isInitError(e) ? e : isDbError(e) ? dbFailure(e, k, 'a query of ours') : undefined;
  if (err) return { outcome: err.exitCode === ExitCode.INTERRUPTED ? 'interrupted' : 'failed', exit_code: err.exitCode, error: err.message };
  return { outcome: 'failed', exit_code: ExitCode.INTERNAL, error: `internal error: ${(e as Error)?.stack ?? String(e)}` };
}

/**
 * Run `body` as command `command` and end it the one way every command ends. DB-less pods
 * (KONG_DATABASE=off) are skipped. A history row is written for every run that changed something
 * or failed once connected, but not for a signal that arrived before we held the lock (the pod
 * must exit at once).
 */
export async function runCommand(ctx: RunContext, command: string, body: (run: Run) => Promise<void>, o: { history?: boolean } = {}): Promise<number> {
  const started = Date.now();
  const { settings: st, kong: k, log, signal } = ctx;
  const summary = newSummary(ctx.toolVersion, command);
  if (k.database === 'off') {
    log.info(`KONG_DATABASE=off (DB-less or hybrid data plane): nothing to do for ${command}`);
    Object.assign(summary, { outcome: 'skipped', note: 'database=off' });
    return publishSummary(log, st.statusFile, summary, started);
  }
  const deadline = started + st.deadlineMs;
  const sessions = new Sessions({ kong: k, log, signal, deadline, lockHost: st.lockHost, lockPort: st.lockPort });
  const run: Run = { ctx, summary, cli: kongCli(ctx), sessions, deadline, changed: false, finish: st.finish };
  try {
    await body(run);
  } catch (e) {
    Object.assign(summary, toOutcome(e, k));
    log.error(summary.error ?? 'failed', { exit_code: summary.exit_code });
  } finally {
    if (o.history !== false && sessions.everConnected && (run.changed || summary.outcome !== 'ok') && !(signal.aborted && !sessions.everHeld)) {
      summary.duration_ms = Date.now() - started;
      await sessions.writeHistory(summary);
    }
    run.cli.cleanup();
    await sessions.reset();
  }
  return publishSummary(log, st.statusFile, summary, started);
}

/** The error when the schema is not one `kong start` accepts after we are done. */
export function notStartable(state: string): InitError {
  return new InitError(ExitCode.KONG_FAILED, `the schema is still "${state}" after migrating; Kong will not start: see Kong's output above`);
}
