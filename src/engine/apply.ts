/**
 * Under the advisory lock: run the steps the state calls for, re-deciding after each one
 * (golang-migrate's `runMigrations`: the loop never mentions the lock). When the lock session
 * died while a step ran, the step was let finish; the lock is taken again on a new session and
 * the state re-read before anything else runs.
 */
import { kongLockRow } from '../postgres/kong-tables.js';
import { progressKey, planOrRefuse, stateName, type Action, type SchemaState } from './plan.js';
import type { Run } from './run.js';
import { runStep, type StepContext } from './step.js';

/** At most this many steps in one run (bootstrap, finish, up, finish … never needs more). */
const MAX_STEPS = 12;

export function stepContext(run: Run): StepContext {
  const { ctx, cli, sessions, summary: s, deadline } = run;
  return {
    cli,
    log: ctx.log,
    signal: ctx.signal,
    deadline,
    finish: run.finish,
    kongLock: () => kongLockRow(sessions.live(), ctx.kong.schema),
    record: (r) => s.actions.push(r),
    observed: (after) => (s.state_after = stateName(after)),
  };
}

/** After a step: if the lock session was lost while it ran, take the lock again and re-read the state. */
async function regainLock(run: Run, current: SchemaState): Promise<SchemaState> {
  const { sessions, summary: s, ctx, cli } = run;
  if (!sessions.lock?.lost) return current;
  const last = s.actions[s.actions.length - 1];
  if (last) last.note = `the lock session was lost while it ran (${sessions.lock.lost}); the step finished`;
  await sessions.retake(ctx.settings.lockTimeoutMs);
  const now = await cli.list(ctx.signal);
  ctx.log.info('migration lock taken again on a new session; state re-read', { state: stateName(now) });
  return now;
}

/** Run one action under the lock and note whether it changed the schema. */
export async function applyStep(run: Run, action: Action, current: SchemaState): Promise<SchemaState> {
  const before = progressKey(current);
  const after = await regainLock(run, await runStep(action, current, stepContext(run)));
  if (progressKey(after) !== before) run.changed = true;
  return after;
}

/** Every step the plan calls for, from `start`, under the lock; returns the final state. */
export async function applyPlan(run: Run, start: SchemaState): Promise<SchemaState> {
  const { cli, summary: s } = run;
  let current = start;
  let version: Promise<string | undefined> | undefined;
  for (let step = 0; step < MAX_STEPS; step++) {
    const next = planOrRefuse(current, run.finish).actions[0];
    if (!next) break;
    version ??= cli.version().catch(() => undefined); // alongside the first step
    current = await applyStep(run, next, current);
  }
  s.kong_version ??= await version;
  return current;
}
