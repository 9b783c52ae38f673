/** `kong-db-init status`: state, plan, any repair, and recent history; exit status mirrors `kong migrations list`. */
import { decide, kongStartAccepts } from '../engine/plan.js';
import { planRepair } from '../engine/repair.js';
import { kongCli, toOutcome, type RunContext } from '../engine/run.js';
import { describeTarget } from '../kong/config.js';
import { closeClient } from '../postgres/connect.js';
import { readHistory } from '../postgres/history.js';
import { waitForPostgres } from '../postgres/wait.js';
import { formatStatus } from '../report/summary.js';

export async function status(ctx: RunContext): Promise<number> {
  const { settings: st, kong: k, log, signal } = ctx;
  if (k.database === 'off') {
    log.result(st.json ? JSON.stringify({ database: 'off', state: 'db-less' }) : 'database=off: DB-less or hybrid data plane, no migrations');
    return 0;
  }
  const cli = kongCli(ctx);
  const client = await waitForPostgres(k, { deadline: Date.now() + st.deadlineMs, log, signal }).then(
    (w) => w.client,
    (e: unknown) => e as Error,
  );
  try {
    if (client instanceof Error) throw client;
    const state = await cli.list(signal);
    const plan = decide(state, st.finish);
    const repair = await planRepair(client, k.schema, state).catch(() => undefined);
    const history = await readHistory(client, k.schema, st.historyRows).catch(() => []);
    const view = {
      target: describeTarget(k),
      state: plan.state,
      listExit: state.code,
      kongStartAccepts: kongStartAccepts(state),
      plan: plan.actions,
      reason: plan.reason,
      refused: plan.refused,
      repair: repair?.what,
      pending: state.pending,
      new: state.new,
      history,
    };
    log.result(formatStatus(view, st.json));
    return state.code;
  } catch (e) {
    const o = toOutcome(e, k);
    log.error(o.error ?? 'failed', { exit_code: o.exit_code });
    return o.exit_code;
  } finally {
    cli.cleanup();
    if (!(client instanceof Error)) await closeClient(client);
  }
}
