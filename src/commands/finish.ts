/**
 * `kong-db-init finish`: `kong migrations finish` only once every Kong workload on the database
 * has completed its rollout (kube/watch.ts), under the same advisory lock, sessions, step runner,
 * repair, error classes and summary as `migrate` (engine/). It holds no Postgres connection while
 * it waits for the rollout, and survives Postgres restarts and API-server blips: a failure that
 * can heal is logged once with its fix and retried with backoff until --deadline.
 * `--then-idle` (the sidecar) stays alive afterwards, holding nothing, until SIGTERM.
 */
import { ExitCode, InitError, Interrupted, isInitError } from '../errors.js';
import { applyStep } from '../engine/apply.js';
import { count, stateName, type SchemaState } from '../engine/plan.js';
import { repair } from '../engine/repair.js';
import { runCommand, type Run, type RunContext } from '../engine/run.js';
import type { KubeAccess } from '../kube/client.js';
import { KubeError } from '../kube/client.js';
import { blockers, waitForRollout, type RolloutWatch } from '../kube/watch.js';
import { classify, isDbError } from '../postgres/connect.js';
import { backoffDelay, sleep } from '../postgres/wait.js';

const hasPending = (st: SchemaState) => count(st.pending) > 0;

/** Backoff between attempts of a finish that failed in a way that can heal. */
const RETRY = { baseMs: 2000, capMs: 60_000 };

/** Whether a failure can heal by itself (Postgres or the API server coming back). */
export function canHeal(e: unknown, k: RunContext['kong']): boolean {
  if (e instanceof Interrupted) return false;
  if (e instanceof KubeError) return e.retryable;
  if (isInitError(e))
    return e.exitCode === ExitCode.DB_LOST || (e.exitCode === ExitCode.LOCK_LOST && e.detail !== 'pooler') || e.exitCode === ExitCode.KONG_FAILED;
  return isDbError(e) && classify(e, k).kind === 'retry';
}

function watchOf(run: Run, kube: KubeAccess): RolloutWatch {
  const { settings: st, log, signal } = run.ctx;
  return { kube, group: st.group, namespaces: st.namespaces, kongImage: st.kongImage, pollMs: st.pollMs, log, signal };
}

/** One attempt: state → (no connection held) rollout → lock → re-check both → finish → verify. */
async function finishOnce(run: Run, kube: KubeAccess | undefined): Promise<void> {
  const { ctx, sessions, summary: s, cli } = run;
  const { log, signal } = ctx;
  if (!sessions.main) s.wait_postgres_ms += (await sessions.connectMain()).waitedMs;
  let state = await cli.list(signal);
  s.state_before ??= stateName(state);
  let waited = false;
  for (;;) {
    if (!hasPending(state)) {
      s.state_after = stateName(state);
      s.note = run.changed ? undefined : waited ? 'another pod finished the migrations' : 'nothing pending';
      log.info(run.changed ? 'kong migrations finish done' : 'nothing pending: kong migrations finish is not needed', { state: s.state_after });
      return;
    }
    if (kube) {
      log.info('pending migrations: waiting for the rollout before kong migrations finish', {
        state: stateName(state),
        pending: JSON.stringify(state.pending),
      });
      await sessions.reset(); // hold no connection while the rollout goes on (it may take hours)
      await waitForRollout(watchOf(run, kube), run.deadline);
    }
    waited = true;
    const t = Date.now();
    await sessions.take(ctx.settings.lockTimeoutMs);
    s.wait_lock_ms += Date.now() - t;
    state = await cli.list(signal); // under the lock: another pod may have finished
    if (!hasPending(state)) continue;
    const again = kube ? (await blockers(watchOf(run, kube))).join('; ') : '';
    if (again) {
      log.info('a rollout began while we took the lock: waiting again', { waiting_for: again });
      continue;
    }
    state = await repair(run, state, () => cli.list(signal));
    state = await applyStep(run, 'finish', state);
    s.state_after = stateName(state);
    if (hasPending(state))
      throw new InitError(ExitCode.KONG_FAILED, `migrations are still pending after kong migrations finish: ${JSON.stringify(state.pending)}`);
  }
}

/** Attempts until one completes, a failure cannot heal, or the deadline passes. */
async function finishWithRetries(run: Run, kube: KubeAccess | undefined): Promise<void> {
  const { log, signal, kong } = run.ctx;
  let lastMessage = '';
  for (let attempt = 1; ; attempt++) {
    try {
      return await finishOnce(run, kube);
    } catch (e) {
      if (!canHeal(e, kong)) throw e;
      const message = isInitError(e) ? e.message : (e as Error).message;
      const delay = backoffDelay(attempt, RETRY);
      if (Date.now() + delay > run.deadline) throw e;
      if (message !== lastMessage) log.warn('finish failed; retrying until --deadline', { error: message, next_try_ms: delay });
      lastMessage = message;
      await run.sessions.reset();
      await sleep(delay, signal);
    }
  }
}

export async function finish(ctx: RunContext, kube: KubeAccess | undefined): Promise<number> {
  return runCommand(ctx, 'finish', (run) => finishWithRetries(run, kube));
}

/** How often an idle sidecar whose finish failed says so again. */
export const REMIND_MS = 10 * 60_000;

/**
 * The sidecar after its run: hold nothing and wait for SIGTERM (the kubelet must not restart
 * it). After a failure, the error is repeated every REMIND_MS so that it is never silent.
 */
export async function idle(ctx: RunContext, code: number): Promise<number> {
  const { log, signal } = ctx;
  if (signal.aborted) return code;
  log.info(code === 0 ? 'finish: done; idling until the pod stops' : 'finish: FAILED (see the error above); idling until the pod stops', { exit_code: code });
  const remind = setInterval(
    () =>
      log.error('finish failed earlier in this pod; see `kong-db-init status` or the kong_db_init_history table, fix the cause and restart the pod', {
        exit_code: code,
      }),
    REMIND_MS,
  );
  if (code === 0) clearInterval(remind);
  const keepAlive = setInterval(() => {}, 1 << 30); // a pending promise alone does not keep Node alive
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  clearInterval(keepAlive);
  clearInterval(remind);
  return code;
}
