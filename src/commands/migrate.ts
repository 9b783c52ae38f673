/**
 * `kong-db-init migrate` (the init container): connect → read the state → plan → run it under
 * the lock → verify → report. The machinery is the engine's (engine/); this file only says the
 * order, like golang-migrate's `Up`.
 */
import { applyPlan } from '../engine/apply.js';
import { kongIdentity } from '../engine/identity.js';
import { kongStartAccepts, planOrRefuse, stateName, type SchemaState } from '../engine/plan.js';
import { planRepair, repair } from '../engine/repair.js';
import { notStartable, runCommand, type Run, type RunContext } from '../engine/run.js';
import { StateReader } from '../engine/state.js';

export type { RunContext };

export async function migrate(ctx: RunContext): Promise<number> {
  return runCommand(ctx, 'migrate', async (run) => {
    run.summary.wait_postgres_ms = (await run.sessions.connectMain()).waitedMs;
    const reader = stateReader(run);
    const first = await reader.read(run.sessions.main!, true);
    run.summary.state_before = first && stateName(first);
    logPlan(run, first);
    if (ctx.settings.dryRun) return dryRun(run, reader);
    const state = first && planOrRefuse(first, ctx.settings.finish).actions.length === 0 ? first : await migrateUnderLock(run, reader);
    run.summary.state_after = stateName(state);
    if (!kongStartAccepts(state)) throw notStartable(stateName(state));
    ctx.log.info('database ready for Kong', { state: run.summary.state_after, actions: run.summary.actions.map((a) => a.action).join(',') || 'none' });
  });
}

export function stateReader(run: Run): StateReader {
  const { ctx, cli, sessions } = run;
  const identity = kongIdentity({ bin: ctx.settings.kongBin, env: ctx.env, confPath: ctx.kong.confPath });
  return new StateReader({ cli, log: ctx.log, signal: ctx.signal, schema: ctx.kong.schema, lockKey: sessions.key, identity });
}

function logPlan(run: Run, state: SchemaState | undefined): void {
  const plan = state && planOrRefuse(state, run.ctx.settings.finish);
  run.ctx.log.info(
    'schema state',
    plan
      ? { state: plan.state, plan: plan.actions.join(',') || 'nothing', reason: plan.reason }
      : { state: 'unknown', plan: 'wait for the pod that holds the lock' },
  );
}

/** `--dry-run`: the state (read even while another pod migrates), the plan and any repair; nothing changed. */
async function dryRun(run: Run, reader: StateReader): Promise<void> {
  const { ctx, summary: s, sessions } = run;
  const state = reader.state ?? (await reader.read(sessions.main!));
  const fix = await planRepair(sessions.main!, ctx.kong.schema, state!);
  Object.assign(s, { state_before: stateName(state!), state_after: stateName(state!), plan: planOrRefuse(state!, ctx.settings.finish).actions, dry_run: true });
  if (fix) s.repaired = `would repair: ${fix.what}`;
  ctx.log.info('dry run: nothing changed', { would_run: s.plan!.join(',') || 'nothing', would_repair: fix?.what ?? 'nothing' });
}

/**
 * Take the lock, then run the plan from the state read under it. While we wait, a holder that
 * lets go makes every waiter re-read the state in parallel (without Kong when an identical Kong
 * verified it); only those with work left contend.
 */
async function migrateUnderLock(run: Run, reader: StateReader): Promise<SchemaState> {
  const { ctx, sessions, summary: s } = run;
  const lockStart = Date.now();
  const got = await sessions.take(ctx.settings.lockTimeoutMs, () => recheckWhileWaiting(run, reader));
  s.wait_lock_ms = Date.now() - lockStart;
  if (got === 'not-needed') {
    ctx.log.info('another pod migrated the database while we waited', { state: stateName(reader.state!) });
    return reader.state!;
  }
  ctx.log.info('migration lock acquired', { waited_ms: s.wait_lock_ms });
  let state = await reader.refresh(sessions.lockClient!);
  s.state_before ??= stateName(state);
  state = await repair(run, state, () => reader.read(sessions.lockClient!).then((x) => x!));
  const final = await applyPlan(run, state);
  if (run.changed) await reader.recordFinal(sessions.lockClient!, final); // waiters take it without Kong
  return final;
}

async function recheckWhileWaiting(run: Run, reader: StateReader): Promise<'contend' | 'not-needed'> {
  const now = await reader.refresh(run.sessions.main!);
  run.summary.state_before ??= stateName(now);
  return planOrRefuse(now, run.ctx.settings.finish).actions.length === 0 ? 'not-needed' : 'contend';
}
