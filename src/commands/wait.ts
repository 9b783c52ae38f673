/** `kong-db-init wait`: block until `kong start` would accept the schema (up to date, or pending alone). */
import { ExitCode, InitError, isInitError } from '../errors.js';
import { kongStartAccepts, stateName } from '../engine/plan.js';
import { runCommand, type Run, type RunContext } from '../engine/run.js';
import { backoffDelay, sleep } from '../postgres/wait.js';

/** One look: undefined when Kong would start, else why not. */
async function notReadyReason(run: Run): Promise<string | undefined> {
  try {
    const state = await run.cli.list(run.ctx.signal);
    run.summary.state_after = stateName(state);
    return kongStartAccepts(state) ? undefined : `schema is "${stateName(state)}"`;
  } catch (e) {
    if (!isInitError(e) || e.exitCode !== ExitCode.KONG_FAILED) throw e;
    return e.message;
  }
}

export async function waitReady(ctx: RunContext): Promise<number> {
  return runCommand(
    ctx,
    'wait',
    async (run) => {
      run.summary.wait_postgres_ms = (await run.sessions.connectMain()).waitedMs;
      for (let attempt = 1; ; attempt++) {
        const reason = await notReadyReason(run);
        if (reason === undefined) break;
        const delay = backoffDelay(attempt);
        if (Date.now() + delay > run.deadline) {
          throw new InitError(
            ExitCode.DEADLINE,
            `deadline reached: ${reason}; is the kong-db-init migrate init container (or \`kong migrations\`) running? Check its logs, or raise --deadline`,
          );
        }
        ctx.log.info('waiting for migrations', { attempt, reason, next_try_ms: delay });
        await sleep(delay, ctx.signal);
      }
      ctx.log.info('schema ready: kong start will proceed', { state: run.summary.state_after });
    },
    { history: false },
  );
}
