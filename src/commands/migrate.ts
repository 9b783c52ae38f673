/** The three database commands: `migrate` (the init container), `wait` and `status`. */
import type pg from 'pg';
import type { Env, KongPg } from '../kong/config.js';
import type { Settings } from './options.js';
import { describeTarget } from '../kong/config.js';
import { classify, closeClient, clientConfig, connectChecked, dbFailure, isDbError } from '../postgres/connect.js';
import { ExitCode, InitError, Interrupted, isInitError } from '../errors.js';
import { KongCli } from '../kong/cli.js';
import { kongIdentity } from '../engine/identity.js';
import { kongLockRow, recordVerified, schemaFingerprint, verifiedState } from '../postgres/kong-tables.js';
import { AdvisoryLock, acquire, holderOf, lockKey, type AcquireOptions, type Holder } from '../postgres/lock.js';
import type { Logger } from '../report/log.js';
import { decide, fingerprint, kongStartAccepts, planOrRefuse, stateName, type SchemaState } from '../engine/plan.js';
import { formatStatus, podName, publishSummary, readHistory, recordHistory, type Summary } from '../report/summary.js';
import { runStep, type StepContext } from '../engine/step.js';
import { backoffDelay, sleep, waitForPostgres, type WaitResult } from '../postgres/wait.js';

export interface RunContext {
  settings: Settings;
  kong: KongPg;
  env: Env;
  log: Logger;
  signal: AbortSignal;
  toolVersion: string;
}

function newSummary(ctx: RunContext, command: string): Summary {
  return {
    tool: 'kong-db-init',
    version: ctx.toolVersion,
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

function kongCli(ctx: RunContext): KongCli {
  return new KongCli({
    bin: ctx.settings.kongBin,
    kong: ctx.kong,
    env: ctx.env,
    log: ctx.log,
    graceMs: ctx.settings.graceMs,
    migrationArgs: ['--db-timeout', String(ctx.settings.kongDbTimeoutS), '--lock-timeout', String(ctx.settings.kongLockTimeoutS)],
  });
}

function describeHolder(h: Holder | null): Record<string, unknown> {
  if (!h) return { holder: 'none' };
  return { holder_pid: h.pid, holder_app: h.application_name, holder_addr: h.client_addr ?? 'local', holder_since: h.since };
}

const NEEDS_BOOTSTRAP: SchemaState = { code: 3, executed: {}, pending: {}, new: {} };


/** The one place that maps how a run ended to its outcome and exit code (never 1 for a Postgres error). */
function fail(s: Summary, e: unknown, k: KongPg): void {
  if (e instanceof Interrupted) {
    s.outcome = 'interrupted';
    s.exit_code = ExitCode.INTERRUPTED;
    s.error = e.message === 'interrupted' ? 'interrupted by a signal' : e.message;
    return;
  }
  const err = isInitError(e) ? e : isDbError(e) ? dbFailure(e, k, 'a query of ours') : undefined;
  s.outcome = 'failed';
  if (err) {
    s.exit_code = err.exitCode;
    s.error = err.message;
  } else {
    s.exit_code = ExitCode.INTERNAL;
    s.error = `internal error: ${(e as Error)?.stack ?? String(e)}`;
  }
}

/** DB-less pods and hybrid data planes (KONG_DATABASE=off) have nothing to migrate or wait for. */
function skipDbLess(ctx: RunContext, s: Summary, started: number, what: string): number | undefined {
  if (ctx.kong.database !== 'off') return undefined;
  ctx.log.info(`KONG_DATABASE=off (DB-less or hybrid data plane): nothing to ${what}`);
  s.outcome = 'skipped';
  s.note = 'database=off';
  return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
}

/**
 * Our connections: `main` (reads) and the lock session (the same connection unless --lock-host or
 * --lock-port points it elsewhere, e.g. past a pooler). Reconnects within the deadline when the
 * database goes away while we wait for the lock, and re-takes the lock on a new session when the
 * old one died while Kong ran.
 */
class Sessions {
  main: pg.Client | undefined;
  lockClient: pg.Client | undefined;
  lock: AdvisoryLock | undefined;
  /** The lock was held at some point (a signal before that exits at once, without history). */
  everHeld = false;

  constructor(
    private readonly ctx: RunContext,
    private readonly deadline: number,
  ) {}

  private get separateLockHost(): boolean {
    return Boolean(this.ctx.settings.lockHost || this.ctx.settings.lockPort);
  }

  async connectMain(): Promise<WaitResult> {
    const { kong: k, log, signal } = this.ctx;
    const w = await waitForPostgres(k, { deadline: this.deadline, log, signal });
    this.main = w.client;
    return w;
  }

  private async newLock(): Promise<AdvisoryLock> {
    const { settings: st, kong: k, log, signal } = this.ctx;
    this.lockClient = this.separateLockHost
      ? (await waitForPostgres(k, { deadline: this.deadline, log, signal, override: { host: st.lockHost, port: st.lockPort }, what: 'lock session' })).client
      : this.main!;
    const target = describeTarget({ ...k, host: st.lockHost ?? k.host, port: st.lockPort ?? k.port });
    const lock = new AdvisoryLock(this.lockClient, lockKey(k.db, k.schema), target);
    lock.onLost((reason) => log.warn('the advisory-lock session was lost; a running Kong step goes on (Kong\'s own locks row protects it), then the lock is taken again', { reason }));
    this.lock = lock;
    return lock;
  }

  /** Close every session at once (a stalled one is not waited for). */
  async reset(): Promise<void> {
    const all = new Set([this.main, this.lockClient]);
    this.main = this.lockClient = undefined;
    this.lock = undefined;
    await Promise.all([...all].map((c) => closeClient(c)));
  }

  /** Take the lock within `timeoutMs`; a connection lost while waiting is re-made within the deadline. */
  async take(timeoutMs: number, onHolderGone?: AcquireOptions['onHolderGone']): Promise<'acquired' | 'not-needed'> {
    const { kong: k, log, signal } = this.ctx;
    const start = Date.now();
    for (;;) {
      try {
        const lock = this.lock ?? (await this.newLock());
        const got = await acquire(lock, {
          timeoutMs: Math.max(0, timeoutMs - (Date.now() - start)),
          signal,
          onWait: (h) => log.info('waiting for the migration lock', describeHolder(h)),
          onHolderGone,
        });
        if (got === 'acquired') this.everHeld = true;
        return got;
      } catch (e) {
        if (isInitError(e) || e instanceof Interrupted || !isDbError(e)) throw e;
        const c = classify(e, k);
        if (c.kind === 'fatal') throw dbFailure(e, k, 'waiting for the migration lock');
        log.warn('lost the connection to Postgres while waiting for the migration lock; reconnecting', { reason: c.reason });
        await this.reset();
        await this.connectMain();
      }
    }
  }

  /**
   * After the lock session died while Kong ran: a new session, and the lock again. Our old
   * session may still hold it on the server (a stalled connection the server has not noticed):
   * that backend is ours, so it is terminated rather than waited out.
   */
  async retake(timeoutMs: number): Promise<void> {
    const stale = this.lock?.backendPid;
    await this.reset();
    await this.connectMain();
    const lock = await this.newLock();
    const h = await lock.holder();
    if (stale !== undefined && h?.pid === stale) {
      this.ctx.log.warn('our old lock session still holds the lock on the server; terminating it', { backend_pid: stale });
      await this.lockClient!.query('SELECT pg_terminate_backend($1)', [stale]).catch(() => {});
    }
    if ((await this.take(timeoutMs)) !== 'acquired') throw new InitError(ExitCode.LOCK_LOST, 'could not take the migration lock again');
  }

  /** A connection that answered last: the lock session while held, else main. */
  live(): pg.Client | undefined {
    return this.lock?.isHeld ? this.lockClient : this.main;
  }
}

/** How long the history row may take at the end of a run (a stalled server must not hold the pod). */
const HISTORY_BUDGET_MS = 3000;

async function writeHistory(ctx: RunContext, sessions: Sessions, s: Summary): Promise<void> {
  const { kong: k, log } = ctx;
  const attempt = async () => {
    let c = sessions.live();
    let fresh: pg.Client | undefined;
    if (!c || sessions.lock?.lost) c = fresh = await connectChecked({ ...clientConfig(k), connectionTimeoutMillis: 2000 });
    try {
      await recordHistory(c, k.schema, s, { warn: (m, f) => log.warn(m, f) });
    } finally {
      await closeClient(fresh);
    }
  };
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`no answer within ${HISTORY_BUDGET_MS} ms`)), HISTORY_BUDGET_MS)));
  try {
    await Promise.race([attempt(), timeout]);
  } catch (e) {
    log.warn('could not write the history row', { error: (e as Error).message });
  } finally {
    clearTimeout(t);
  }
}

/**
 * Under the lock: run the steps the state calls for, re-deciding after each one. When the lock
 * session died while a step ran, the step was let finish; the lock is taken again on a new
 * session and the state re-read before anything else runs.
 */
async function runPlan(ctx: RunContext, cli: KongCli, sessions: Sessions, s: Summary, start: SchemaState, deadline: number): Promise<{ state: SchemaState; changed: boolean }> {
  const { settings: st, kong: k, log, signal } = ctx;
  const sc: StepContext = {
    cli,
    log,
    signal,
    deadline,
    finish: st.finish,
    kongLock: () => kongLockRow(sessions.live(), k.schema),
    record: (r) => s.actions.push(r),
    observed: (after) => (s.state_after = stateName(after)),
  };
  let current = start;
  let changed = false;
  let version: Promise<string | undefined> | undefined;
  for (let step = 0; step < 12; step++) {
    const next = planOrRefuse(current, st.finish).actions[0];
    if (!next) break;
    version ??= cli.version().catch(() => undefined); // alongside the first step
    const before = fingerprint(current);
    current = await runStep(next, current, sc);
    if (fingerprint(current) !== before) changed = true;
    if (sessions.lock?.lost) {
      s.actions[s.actions.length - 1]!.note = `the lock session was lost while it ran (${sessions.lock.lost}); the step finished`;
      await sessions.retake(st.lockTimeoutMs);
      current = await cli.list(signal);
      log.info('migration lock taken again on a new session; state re-read', { state: stateName(current) });
    }
  }
  s.kong_version = await version;
  return { state: current, changed };
}

/**
 * `migrate`: wait for Postgres, read the state, plan, take the lock, run the steps, verify, report.
 * Losing the lock session never cuts a running step: the step finishes, the lock is taken again
 * on a new session and the state re-read before anything else runs.
 */
export async function migrate(ctx: RunContext): Promise<number> {
  const started = Date.now();
  const { settings: st, kong: k, log, signal } = ctx;
  const s = newSummary(ctx, 'migrate');
  const skipped = skipDbLess(ctx, s, started, 'migrate');
  if (skipped !== undefined) return skipped;
  const deadline = started + st.deadlineMs;
  const cli = kongCli(ctx);
  const sessions = new Sessions(ctx, deadline);
  let changed = false;
  try {
    s.wait_postgres_ms = (await sessions.connectMain()).waitedMs;
    const identity = kongIdentity({ bin: st.kongBin, env: ctx.env, confPath: k.confPath });
    let seen = await schemaFingerprint(sessions.main!, k.schema);
    /**
     * The state without starting Kong when possible: no schema_meta means "needs bootstrap"; a state
     * an identical Kong verified at this fingerprint holds. `defer`: while another pod holds the
     * lock, undefined (wait for it) rather than a `kong migrations list` of a moving schema.
     */
    const readState = async (defer: boolean): Promise<SchemaState | undefined> => {
      const c = sessions.live()!;
      if (seen === 'absent') return NEEDS_BOOTSTRAP;
      const known = await verifiedState(c, k.schema, identity, seen);
      if (known) {
        log.info('state verified earlier by an identical Kong; not starting Kong', { state: stateName(known) });
        return known;
      }
      if (defer && (await holderOf(c, lockKey(k.db, k.schema)))) return undefined;
      const listed = await cli.list(signal);
      if ((await schemaFingerprint(c, k.schema)) === seen) await recordVerified(c, k.schema, identity, seen, listed);
      return listed;
    };
    let state = await readState(true);
    s.state_before = state ? stateName(state) : undefined;
    let plan = state ? planOrRefuse(state, st.finish) : undefined;
    log.info('schema state', plan ? { state: plan.state, plan: plan.actions.join(',') || 'nothing', reason: plan.reason } : { state: 'unknown', plan: 'wait for the pod that holds the lock' });
    if (st.dryRun) {
      state ??= await readState(false);
      s.state_before = stateName(state!);
      plan = planOrRefuse(state!, st.finish);
      s.plan = plan.actions;
      s.dry_run = true;
      s.state_after = s.state_before;
      log.info('dry run: nothing changed', { would_run: plan.actions.join(',') || 'nothing' });
      return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
    }
    if (!plan || plan.actions.length > 0) {
      const lockStart = Date.now();
      // the holder let go: every waiter re-reads the state without the lock, in parallel
      // (starting Kong only when the schema rows changed and no identical Kong verified them);
      // only those with work left contend
      const got = await sessions.take(st.lockTimeoutMs, async () => {
        const now = await schemaFingerprint(sessions.main!, k.schema);
        if (state && now === seen) return 'contend';
        seen = now;
        state = await readState(false);
        s.state_before ??= stateName(state!);
        plan = planOrRefuse(state!, st.finish);
        return plan.actions.length === 0 ? 'not-needed' : 'contend';
      });
      s.wait_lock_ms = Date.now() - lockStart;
      if (got === 'acquired') {
        log.info('migration lock acquired', { waited_ms: s.wait_lock_ms });
        const now = await schemaFingerprint(sessions.lockClient!, k.schema);
        if (!state || now !== seen) {
          seen = now;
          state = await readState(false);
          s.state_before ??= stateName(state!);
        }
        const done = await runPlan(ctx, cli, sessions, s, state!, deadline);
        state = done.state;
        changed = done.changed;
        // before letting go: waiters with an identical Kong take this state without starting Kong
        if (changed) await recordVerified(sessions.lockClient!, k.schema, identity, await schemaFingerprint(sessions.lockClient!, k.schema), state);
      } else {
        log.info('another pod migrated the database while we waited', { state: stateName(state!) });
      }
    }
    if (!state) throw new InitError(ExitCode.INTERNAL, 'no schema state was read');
    s.state_after = stateName(state);
    if (!kongStartAccepts(state)) {
      throw new InitError(ExitCode.KONG_FAILED, `the schema is still "${stateName(state)}" after migrating; Kong will not start: see Kong's output above`);
    }
    log.info('database ready for Kong', { state: s.state_after, actions: s.actions.map((a) => a.action).join(',') || 'none' });
  } catch (e) {
    fail(s, e, k);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
  } finally {
    // a history row for every run that changed something or failed (once connected); not for a
    // signal that arrived before we held the lock, which must exit at once
    if (sessions.main && (changed || s.outcome !== 'ok') && !(signal.aborted && !sessions.everHeld)) {
      s.duration_ms = Date.now() - started;
      await writeHistory(ctx, sessions, s);
    }
    await sessions.lock?.release();
    cli.cleanup();
    await sessions.reset();
  }
  return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
}

/** `wait`: block until `kong start` would accept the schema (0 up to date or 4 pending). */
export async function waitReady(ctx: RunContext): Promise<number> {
  const started = Date.now();
  const { settings: st, kong: k, log, signal } = ctx;
  const s = newSummary(ctx, 'wait');
  const skipped = skipDbLess(ctx, s, started, 'wait for');
  if (skipped !== undefined) return skipped;
  const deadline = started + st.deadlineMs;
  const cli = kongCli(ctx);
  let client: pg.Client | undefined;
  try {
    const w = await waitForPostgres(k, { deadline, log, signal });
    client = w.client;
    s.wait_postgres_ms = w.waitedMs;
    for (let attempt = 1; ; attempt++) {
      let reason: string;
      try {
        const state = await cli.list(signal);
        s.state_after = stateName(state);
        if (kongStartAccepts(state)) break;
        reason = `schema is "${stateName(state)}"`;
      } catch (e) {
        if (!isInitError(e) || e.exitCode !== ExitCode.KONG_FAILED) throw e;
        reason = e.message;
      }
      const delay = backoffDelay(attempt);
      if (Date.now() + delay > deadline) {
        throw new InitError(ExitCode.DEADLINE, `deadline reached: ${reason}; is the kong-db-init migrate init container (or \`kong migrations\`) running? Check its logs, or raise --deadline`);
      }
      log.info('waiting for migrations', { attempt, reason, next_try_ms: delay });
      await sleep(delay, signal);
    }
    log.info('schema ready: kong start will proceed', { state: s.state_after });
  } catch (e) {
    fail(s, e, k);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
  } finally {
    cli.cleanup();
    await closeClient(client);
  }
  return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
}

/** `status`: state, plan and recent history; exit status mirrors `kong migrations list`. */
export async function status(ctx: RunContext): Promise<number> {
  const { settings: st, kong: k, log, signal } = ctx;
  if (k.database === 'off') {
    ctx.log.result(st.json ? JSON.stringify({ database: 'off', state: 'db-less' }) : 'database=off: DB-less or hybrid data plane, no migrations');
    return 0;
  }
  const cli = kongCli(ctx);
  let client: pg.Client | undefined;
  try {
    client = (await waitForPostgres(k, { deadline: Date.now() + st.deadlineMs, log, signal })).client;
    const state = await cli.list(signal);
    const plan = decide(state, st.finish);
    const history = await readHistory(client, k.schema, st.historyRows).catch(() => []);
    const view = { target: describeTarget(k), state: plan.state, listExit: state.code, kongStartAccepts: kongStartAccepts(state), plan: plan.actions, reason: plan.reason, refused: plan.refused, pending: state.pending, new: state.new, history };
    ctx.log.result(formatStatus(view, st.json));
    return state.code;
  } catch (e) {
    const s = newSummary(ctx, 'status');
    fail(s, e, k);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
    return s.exit_code;
  } finally {
    cli.cleanup();
    await closeClient(client);
  }
}

