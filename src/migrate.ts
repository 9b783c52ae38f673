/** The three database commands: `migrate` (the init container), `wait` and `status`. */
import type pg from 'pg';
import type { Env, KongPg, Settings } from './config.js';
import { describeTarget } from './config.js';
import { clientConfig, connectChecked, quoteIdent } from './db.js';
import { ExitCode, InitError, isInitError } from './errors.js';
import { KONG_LOCK_WAIT_TIMEOUT, KongCli, NOT_LEADER, RACE_ERRORS, lastLines } from './kong.js';
import { AdvisoryLock, lockKey, type Holder } from './lock.js';
import type { Logger } from './log.js';
import { decide, fingerprint, kongStartAccepts, stateName, type Action, type SchemaState } from './plan.js';
import { podName, readHistory, recordHistory, serializeSummary, terminationPath, writeTerminationMessage, type Summary } from './status.js';
import { Interrupted, backoffDelay, sleep, waitForPostgres } from './wait.js';

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

interface KongLockRow {
  owner: string;
  ttl: string;
  ms_left: number;
}

async function kongLockRow(c: pg.Client | undefined, schema: string | undefined): Promise<KongLockRow | undefined> {
  if (!c) return undefined;
  try {
    const t = schema ? `${quoteIdent(schema)}.locks` : 'locks';
    const r = await c.query<KongLockRow>(
      `SELECT owner, ttl::text, GREATEST(0, EXTRACT(EPOCH FROM (ttl - now())) * 1000)::float8 AS ms_left FROM ${t} WHERE key = 'migrations'`,
    );
    return r.rows[0];
  } catch {
    return undefined;
  }
}

/**
 * A cheap fingerprint of Kong's `schema_meta` rows, read with SQL: `kong migrations list` is a pure
 * function of these rows (for one Kong installation), so an unchanged fingerprint means an
 * unchanged state and saves starting Kong. `absent` (no schema_meta in Kong's schema) means
 * "needs bootstrap" for every Kong version, exactly as Kong decides it.
 */
async function schemaFingerprint(c: pg.Client, schema: string | undefined): Promise<string> {
  const t = await c.query<{ s: string }>(
    `SELECT table_schema AS s FROM information_schema.tables WHERE table_schema = COALESCE($1, current_schema()) AND table_name = 'schema_meta'`,
    [schema ?? null],
  );
  const s = t.rows[0]?.s;
  if (!s) return 'absent';
  const r = await c.query<{ h: string }>(
    `SELECT md5(COALESCE(string_agg(subsystem || ':' || COALESCE(last_executed, '') || ':' || COALESCE(array_to_string(executed, ','), '') || ':' ||
            COALESCE(array_to_string(pending, ','), ''), ';' ORDER BY subsystem), '')) AS h FROM ${quoteIdent(s)}.schema_meta WHERE key = 'schema_meta'`,
  );
  return r.rows[0]?.h ?? 'empty';
}

const NEEDS_BOOTSTRAP: SchemaState = { code: 3, executed: {}, pending: {}, new: {} };

/** Finish a run: summary line on stdout, termination message, exit code. */
function finishRun(ctx: RunContext, s: Summary, started: number): number {
  s.duration_ms = Date.now() - started;
  const line = serializeSummary(s);
  ctx.log.result(line);
  const path = terminationPath(ctx.settings.statusFile);
  if (path) {
    try {
      writeTerminationMessage(path, line);
    } catch (e) {
      ctx.log.warn('could not write the status file', { path, error: (e as Error).message });
    }
  }
  return s.exit_code;
}

function fail(s: Summary, e: unknown): void {
  if (e instanceof Interrupted || (isInitError(e) && e.exitCode === ExitCode.INTERRUPTED)) {
    s.outcome = 'interrupted';
    s.exit_code = ExitCode.INTERRUPTED;
    s.error = 'interrupted by a signal';
  } else if (isInitError(e)) {
    s.outcome = 'failed';
    s.exit_code = e.exitCode;
    s.error = e.message;
  } else {
    s.outcome = 'failed';
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
  return finishRun(ctx, s, started);
}

export async function migrate(ctx: RunContext): Promise<number> {
  const started = Date.now();
  const { settings: st, kong: k, log, signal } = ctx;
  const s = newSummary(ctx, 'migrate');
  const skipped = skipDbLess(ctx, s, started, 'migrate');
  if (skipped !== undefined) return skipped;
  const deadline = started + st.deadlineMs;
  const cli = kongCli(ctx);
  let main: pg.Client | undefined;
  let lockClient: pg.Client | undefined;
  let lock: AdvisoryLock | undefined;
  let changed = false;
  const lostCtl = new AbortController();
  const stepSignal = AbortSignal.any([signal, lostCtl.signal]);
  const lockLost = () => new InitError(ExitCode.LOCK_LOST, `lost the advisory-lock session while Kong was migrating (${lock?.lost}); Kong was stopped. Rerun: the next run takes the lock again and continues`);

  const runStep = async (action: Action, before: SchemaState): Promise<SchemaState> => {
    for (let attempt = 1; ; attempt++) {
      log.info(`running kong migrations ${action}`, { attempt, state: stateName(before) });
      const r = await cli.migrations(action, stepSignal);
      if (lock?.lost) throw lockLost();
      if (signal.aborted) {
        s.actions.push({ action, ms: r.durationMs, exit: r.exitCode, note: 'interrupted' });
        throw new Interrupted();
      }
      const after = await cli.list(signal);
      const rec = { action, ms: r.durationMs, exit: r.exitCode } as Summary['actions'][number];
      const output = `${r.stdout}\n${r.stderr}`;
      const lockRow = await kongLockRow(lock?.isHeld ? lockClient : main, k.schema);
      // Kong's own lock: "aborted" (exit 0), or its wait for the lock row timed out (exit 1)
      const aborted = output.includes(NOT_LEADER) || (r.exitCode !== 0 && lockRow !== undefined && KONG_LOCK_WAIT_TIMEOUT.test(r.stderr));
      const race = r.exitCode !== 0 && !aborted && RACE_ERRORS.some((re) => re.test(r.stderr));
      const progressed = fingerprint(after) !== fingerprint(before);
      if (progressed) changed = true;
      if (r.exitCode !== 0 && !race && !aborted) {
        s.actions.push(rec);
        s.state_after = stateName(after);
        throw new InitError(ExitCode.KONG_FAILED, `kong migrations ${action} exited ${r.exitCode} and the schema is now "${stateName(after)}": ${lastLines(r.stderr || r.stdout, 8)}`);
      }
      if (progressed) {
        if (race) rec.note = `race error, but the state moved on: ${lastLines(r.stderr, 1)}`;
        s.actions.push(rec);
        log.info(`kong migrations ${action} done`, { ms: r.durationMs, state: stateName(after) });
        return after;
      }
      if (!aborted && !race) {
        s.actions.push(rec);
        throw new InitError(ExitCode.KONG_FAILED, `kong migrations ${action} exited ${r.exitCode} but the schema is still "${stateName(after)}": ${lastLines(r.stdout || r.stderr, 8)}`);
      }
      if (race && attempt >= 8) {
        s.actions.push(rec);
        throw new InitError(ExitCode.KONG_FAILED, `kong migrations ${action} kept failing with a concurrent-change error (is another \`kong migrations\` running, e.g. the chart's init-migrations Job?): ${lastLines(r.stderr, 2)}`);
      }
      rec.note = aborted ? 'aborted: Kong lock held' : 'race error';
      s.actions.push(rec);
      const wait = lockRow ? Math.min(Math.ceil(lockRow.ms_left) + 250, 30_000) : Math.max(250, backoffDelay(attempt, { baseMs: 500, capMs: 5000 }));
      const fix = lockRow
        ? `Kong's own "migrations" lock row is held by owner ${lockRow.owner} until ${lockRow.ttl}; if no Kong migration is running it was left by a killed run and expires then (or delete it: DELETE FROM locks WHERE key = 'migrations')`
        : 'another Kong node changed the database at the same time';
      if (Date.now() + wait > deadline) {
        throw new InitError(ExitCode.DEADLINE, `deadline reached while kong migrations ${action} kept being refused: ${fix}; raise --deadline`);
      }
      log.warn(aborted ? `kong migrations ${action} was aborted by Kong's own lock; retrying` : `kong migrations ${action} hit a concurrent change; retrying`, {
        kong_lock_owner: lockRow?.owner,
        kong_lock_until: lockRow?.ttl,
        next_try_ms: wait,
      });
      await sleep(wait, signal);
      before = await cli.list(signal);
      const again = decide(before, st.finish);
      if (again.actions[0] !== action) return before;
    }
  };

  try {
    const w = await waitForPostgres(k, { deadline, log, signal });
    main = w.client;
    s.wait_postgres_ms = w.waitedMs;
    const db = main;
    let seen = await schemaFingerprint(db, k.schema);
    const readState = async (): Promise<SchemaState> => (seen === 'absent' ? NEEDS_BOOTSTRAP : cli.list(signal));
    let state = await readState();
    s.state_before = stateName(state);
    let plan = decide(state, st.finish);
    log.info('schema state', { state: plan.state, plan: plan.actions.join(',') || 'nothing', reason: plan.reason });
    if (plan.refused) throw new InitError(ExitCode.CONFIG, plan.refused);
    if (st.dryRun) {
      s.plan = plan.actions;
      s.dry_run = true;
      s.state_after = s.state_before;
      log.info('dry run: nothing changed', { would_run: plan.actions.join(',') || 'nothing' });
      return finishRun(ctx, s, started);
    }
    if (plan.actions.length > 0) {
      // the lock session: the same connection unless a separate host/port is set (bypassing a pooler)
      if (st.lockHost || st.lockPort) {
        const lw = await waitForPostgres(k, { deadline, log, signal, override: { host: st.lockHost, port: st.lockPort }, what: 'lock session' });
        lockClient = lw.client;
      } else {
        lockClient = main;
      }
      lock = new AdvisoryLock(lockClient, lockKey(k.db, k.schema));
      lock.onLost((reason) => {
        log.error('advisory lock session lost; stopping Kong', { reason });
        lostCtl.abort();
      });
      const lockStart = Date.now();
      let lastHolderLog = 0;
      let acquired = await lock.tryAcquire();
      while (!acquired) {
        const h = await lock.holder();
        if (Date.now() - lockStart > st.lockTimeoutMs) {
          throw new InitError(
            ExitCode.LOCK_TIMEOUT,
            `lock timeout after ${Math.round(st.lockTimeoutMs / 1000)} s: another kong-db-init holds the migration lock (${h ? `pid ${h.pid}, ${h.application_name}, from ${h.client_addr ?? 'local'}, session since ${h.since}` : 'holder gone'}); wait for it, or raise --lock-timeout`,
          );
        }
        if (Date.now() - lastHolderLog >= 5000) {
          log.info('waiting for the migration lock', describeHolder(h));
          lastHolderLog = Date.now();
        }
        if (h) {
          await sleep(150 + Math.floor(Math.random() * 200), signal);
          continue;
        }
        // the holder let go: every waiter re-reads the state without the lock, in parallel
        // (starting Kong only when the schema rows changed), and only those with work left
        // contend for the lock again, so finished work is not re-checked one pod at a time
        const now = await schemaFingerprint(db, k.schema);
        if (now !== seen) {
          seen = now;
          state = await readState();
          plan = decide(state, st.finish);
          if (plan.refused) throw new InitError(ExitCode.CONFIG, plan.refused);
          if (plan.actions.length === 0) break;
        }
        acquired = await lock.tryAcquire();
        if (!acquired) await sleep(20 + Math.floor(Math.random() * 60), signal);
      }
      s.wait_lock_ms = Date.now() - lockStart;
      if (lock.isHeld) {
        log.info('migration lock acquired', { waited_ms: s.wait_lock_ms });
        let version: Promise<string | undefined> | undefined;
        const now = await schemaFingerprint(lockClient, k.schema);
        if (now !== seen) {
          seen = now;
          state = await readState();
        }
        for (let step = 0; step < 12; step++) {
          plan = decide(state, st.finish);
          if (plan.refused) throw new InitError(ExitCode.CONFIG, plan.refused);
          const next = plan.actions[0];
          if (!next) break;
          version ??= cli.version().catch(() => undefined); // alongside the first step
          state = await runStep(next, state);
        }
        s.kong_version = await version;
      } else {
        log.info('another pod migrated the database while we waited', { state: stateName(state) });
      }
    }
    s.state_after = stateName(state);
    if (!kongStartAccepts(state)) {
      throw new InitError(ExitCode.KONG_FAILED, `the schema is still "${stateName(state)}" after migrating; Kong will not start: see Kong's output above`);
    }
    log.info('database ready for Kong', { state: s.state_after, actions: s.actions.map((a) => a.action).join(',') || 'none' });
  } catch (e) {
    fail(s, e);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
  } finally {
    // a history row for every run that changed something or failed (once connected); not for a
    // signal that arrived before we held the lock, which must exit at once
    if (main && (changed || s.outcome !== 'ok') && !(signal.aborted && !lock?.isHeld)) {
      s.duration_ms = Date.now() - started;
      // after a lost lock session the old connection is gone: write through a fresh one
      const fresh = lock?.lost ? await connectChecked({ ...clientConfig(k), connectionTimeoutMillis: 2000 }).catch(() => undefined) : undefined;
      const live = fresh ?? (lock?.isHeld ? lockClient : main);
      await recordHistory(live!, k.schema, s).catch((err: Error) => log.warn('could not write the history row', { error: err.message }));
      await fresh?.end().catch(() => {});
    }
    await lock?.release();
    cli.cleanup();
    for (const c of new Set([main, lockClient])) await c?.end().catch(() => {});
  }
  return finishRun(ctx, s, started);
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
    fail(s, e);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
  } finally {
    cli.cleanup();
    await client?.end().catch(() => {});
  }
  return finishRun(ctx, s, started);
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
    if (st.json) {
      ctx.log.result(JSON.stringify({ target: describeTarget(k), state: plan.state, list_exit: state.code, kong_start_accepts: kongStartAccepts(state), plan: plan.actions, reason: plan.reason, refused: plan.refused, pending: state.pending, new: state.new, history }));
    } else {
      const lines = [
        `target:  ${describeTarget(k)}`,
        `state:   ${plan.state} (kong migrations list exit ${state.code}; kong start ${kongStartAccepts(state) ? 'accepts it' : 'refuses it'})`,
        `plan:    ${plan.actions.join(' then ') || 'nothing'} (${plan.refused ?? plan.reason})`,
        `history: ${history.length === 0 ? 'none' : ''}`,
        ...history.map((h) => `  ${h.finished_at}  ${h.pod}  ${h.outcome}  ${h.state_before ?? '?'} -> ${h.state_after ?? '?'}  [${h.actions.map((a) => a.action).join(',')}]${h.error ? '  error: ' + h.error : ''}`),
      ];
      ctx.log.result(lines.join('\n'));
    }
    return state.code;
  } catch (e) {
    const s = newSummary(ctx, 'status');
    fail(s, e);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
    return s.exit_code;
  } finally {
    cli.cleanup();
    await client?.end().catch(() => {});
  }
}

