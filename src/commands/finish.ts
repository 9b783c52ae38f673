/**
 * `kong-db-init finish`: run `kong migrations finish` only once every Kong workload on the
 * database has completed its rollout (no pod left from an older template, the new ones
 * available, all on this pod's Kong image), under the same advisory lock as `migrate`,
 * re-checking the rollout and the schema under the lock, and verifying the result.
 * Idempotent: with nothing pending it changes nothing. `--then-idle` keeps the process alive
 * afterwards (the injected sidecar must not exit, or the kubelet would restart it).
 */
import { realFiles } from '../kong/files.js';
import type pg from 'pg';
import { loadKongConfig, type Env, type KongPg } from '../kong/config.js';
import { parseDuration, parseSettings, type Settings } from './options.js';
import { ExitCode, InitError, isInitError } from '../errors.js';
import { inClusterAccess, KubeError, kubeList, selectorString, type KubeAccess, type LabelSelector } from '../kube/client.js';
import { KongCli, NOT_LEADER, lastLines } from '../kong/cli.js';
import { AdvisoryLock, lockKey } from '../postgres/lock.js';
import { addSecret, createLogger, redact, type Logger } from '../report/log.js';
import { stateName, type SchemaState } from '../engine/plan.js';
import { GROUP_LABEL, rolloutBlockers, type Observed, type Pod, type ReplicaSet, type Workload } from '../kube/rollout.js';
import { podName, publishSummary, recordHistory, type Summary } from '../report/summary.js';
import { Interrupted, backoffDelay, sleep, waitForPostgres } from '../postgres/wait.js';

export interface FinishOptions {
  /** `wait`: wait for the rollout through the Kubernetes API; `skip`: finish now (outside a cluster). */
  rollout: 'wait' | 'skip';
  group: string;
  /** Namespaces to scan for the group's workloads (default: the pod's own). */
  namespaces: string[];
  /** This pod's Kong image; workloads on another image block `finish`. */
  kongImage: string | undefined;
  pollMs: number;
  thenIdle: boolean;
}

export const FINISH_HELP = `Usage: kong-db-init finish [flags]
Run \`kong migrations finish\` once every Kong workload on the database has completed its rollout.
  --rollout wait|skip        wait for the rollout through the Kubernetes API (default wait; env KONG_DB_INIT_FINISH_ROLLOUT)
  --group NAME               workloads labelled ${GROUP_LABEL}=NAME share the database (default "default"; env KONG_DB_INIT_FINISH_GROUP)
  --namespaces A,B           namespaces to scan (default: the pod's own; env KONG_DB_INIT_FINISH_NAMESPACES)
  --kong-image IMAGE         this pod's Kong image: workloads on another image block finish (env KONG_DB_INIT_KONG_IMAGE)
  --poll DURATION            how often to look at the rollout (default 5s; env KONG_DB_INIT_FINISH_POLL)
  --then-idle                after finishing (or failing), stay running until SIGTERM (the sidecar)
  and migrate's --deadline, --lock-timeout, --status-file, --log-format, --kong-bin, --conf, --kong-lock-timeout,
  --kong-db-timeout, --grace-period, --verbose (with their KONG_DB_INIT_* variables).
RBAC (Role in each scanned namespace): list on apps/deployments, apps/statefulsets, apps/daemonsets,
apps/replicasets and pods. Exit codes as for migrate; 11 when the rollout did not complete before --deadline.
`;

const OWN_FLAGS: Record<string, { env: string; bool?: boolean }> = {
  '--rollout': { env: 'KONG_DB_INIT_FINISH_ROLLOUT' },
  '--group': { env: 'KONG_DB_INIT_FINISH_GROUP' },
  '--namespaces': { env: 'KONG_DB_INIT_FINISH_NAMESPACES' },
  '--kong-image': { env: 'KONG_DB_INIT_KONG_IMAGE' },
  '--poll': { env: 'KONG_DB_INIT_FINISH_POLL' },
  '--then-idle': { env: 'KONG_DB_INIT_FINISH_THEN_IDLE', bool: true },
};

/** Split finish's own flags from migrate's shared ones; validate them. Pure. */
export function parseFinishArgs(argv: readonly string[], env: Env): { finish: FinishOptions; shared: string[]; help: boolean } {
  const raw: Record<string, string> = {};
  const shared: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const spec = OWN_FLAGS[flag];
    if (!spec) {
      shared.push(a);
      continue;
    }
    if (eq > 0) raw[flag] = a.slice(eq + 1);
    else if (spec.bool) raw[flag] = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new InitError(ExitCode.CONFIG, `option ${flag} needs a value`);
      raw[flag] = next;
      i++;
    }
  }
  const val = (flag: string): [string | undefined, string] => {
    if (raw[flag] !== undefined) return [raw[flag], flag];
    const e = env[OWN_FLAGS[flag]!.env];
    return [e === '' ? undefined : e, OWN_FLAGS[flag]!.env];
  };
  const [rollout = 'wait', rolloutName] = val('--rollout');
  if (rollout !== 'wait' && rollout !== 'skip') throw new InitError(ExitCode.CONFIG, `${rolloutName}=${JSON.stringify(rollout)} is invalid; use wait or skip`);
  const [group = 'default', groupName] = val('--group');
  if (!/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(group) || group.length > 63) {
    throw new InitError(ExitCode.CONFIG, `${groupName}=${JSON.stringify(group)} is not a valid label value; use up to 63 letters, digits, "-", "_" or "."`);
  }
  const [ns = '', nsName] = val('--namespaces');
  const namespaces = ns.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of namespaces) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(n)) throw new InitError(ExitCode.CONFIG, `${nsName}: ${JSON.stringify(n)} is not a namespace name; give a comma-separated list such as kong,kong-admin`);
  }
  const [poll = '5s', pollName] = val('--poll');
  const pollMs = parseDuration(poll, pollName);
  if (pollMs < 100) throw new InitError(ExitCode.CONFIG, `${pollName}=${JSON.stringify(poll)} is too short; use at least 100ms`);
  const [idle = 'false', idleName] = val('--then-idle');
  if (!/^(true|false|1|0|on|off)$/i.test(idle)) throw new InitError(ExitCode.CONFIG, `${idleName}=${JSON.stringify(idle)} is not a boolean; use true or false`);
  const [kongImage] = val('--kong-image');
  return { finish: { rollout, group, namespaces, kongImage, pollMs, thenIdle: /^(true|1|on)$/i.test(idle) }, shared, help };
}

/** List the group's workloads, their ReplicaSets and pods in every namespace. */
export async function observeGroup(a: KubeAccess, namespaces: string[], group: string, signal?: AbortSignal): Promise<Observed[]> {
  const out: Observed[] = [];
  const sel = `${GROUP_LABEL}=${group}`;
  for (const ns of namespaces) {
    for (const [kind, resource] of [['Deployment', 'deployments'], ['StatefulSet', 'statefulsets'], ['DaemonSet', 'daemonsets']] as const) {
      const items = await kubeList<Workload>(a, '/apis/apps/v1', ns, resource, sel, signal);
      for (const w of items) {
        w.kind = kind;
        w.metadata.namespace ??= ns;
        const ws = selectorString(w.spec?.selector as LabelSelector | undefined);
        const pods = await kubeList<Pod>(a, '/api/v1', ns, 'pods', ws, signal);
        const replicaSets = kind === 'Deployment' ? await kubeList<ReplicaSet>(a, '/apis/apps/v1', ns, 'replicasets', ws, signal) : undefined;
        out.push({ workload: w, pods, replicaSets });
      }
    }
  }
  return out;
}

interface FinishContext {
  settings: Settings;
  finish: FinishOptions;
  kong: KongPg;
  env: Env;
  log: Logger;
  signal: AbortSignal;
  toolVersion: string;
  kube: KubeAccess | undefined;
}

/** Wait until nothing blocks `finish`; throws DEADLINE naming what still blocks it. */
async function waitForRollout(ctx: FinishContext, deadline: number): Promise<void> {
  const { finish: f, log, signal, kube } = ctx;
  if (f.rollout === 'skip' || !kube) return;
  const namespaces = f.namespaces.length ? f.namespaces : [kube.namespace];
  let last = '';
  for (let attempt = 1; ; attempt++) {
    let blockers: string[];
    try {
      blockers = rolloutBlockers(await observeGroup(kube, namespaces, f.group, signal), f.kongImage);
    } catch (e) {
      if (signal.aborted) throw new Interrupted();
      if (e instanceof KubeError && !e.retryable) {
        const rbac = e.status === 403 ? `; grant this pod's service account "list" on apps deployments, statefulsets, daemonsets, replicasets and on pods in ${namespaces.join(', ')}` : '';
        throw new InitError(ExitCode.CONFIG, `the Kubernetes API refused: ${e.message}${rbac}`);
      }
      blockers = [`Kubernetes API not reachable: ${(e as Error).message}`];
    }
    if (blockers.length === 0) {
      log.info('rollout complete: every Kong workload on the database runs the current revision', { group: f.group, namespaces: namespaces.join(',') });
      return;
    }
    const text = blockers.join('; ');
    if (Date.now() + f.pollMs > deadline) {
      throw new InitError(ExitCode.DEADLINE, `deadline reached waiting for the rollout before kong migrations finish: ${text}; finish the rollout (or upgrade the other releases on this database), then rerun, or raise --deadline`);
    }
    if (text !== last) log.info('waiting for the rollout before kong migrations finish', { attempt, waiting_for: text });
    last = text;
    await sleep(f.pollMs, signal);
  }
}

const hasPending = (st: SchemaState) => Object.values(st.pending).some((m) => m.length > 0);

function newSummary(ctx: FinishContext): Summary {
  return { tool: 'kong-db-init', version: ctx.toolVersion, command: 'finish', outcome: 'ok', exit_code: 0, pod: podName(), actions: [], wait_postgres_ms: 0, wait_lock_ms: 0, duration_ms: 0, started_at: new Date().toISOString() };
}

function failSummary(s: Summary, e: unknown): void {
  if (e instanceof Interrupted || (isInitError(e) && e.exitCode === ExitCode.INTERRUPTED)) {
    Object.assign(s, { outcome: 'interrupted', exit_code: ExitCode.INTERRUPTED, error: 'interrupted by a signal' });
  } else if (isInitError(e)) {
    Object.assign(s, { outcome: 'failed', exit_code: e.exitCode, error: e.message });
  } else {
    Object.assign(s, { outcome: 'failed', exit_code: ExitCode.INTERNAL, error: `internal error: ${(e as Error)?.stack ?? String(e)}` });
  }
}

/** Take the migration lock (same key as `migrate`), polling until --lock-timeout or the deadline. */
async function acquireLock(ctx: FinishContext, lock: AdvisoryLock, deadline: number): Promise<number> {
  const start = Date.now();
  let lastLog = 0;
  while (!(await lock.tryAcquire())) {
    const h = await lock.holder();
    if (Date.now() - start > ctx.settings.lockTimeoutMs || Date.now() > deadline) {
      throw new InitError(ExitCode.LOCK_TIMEOUT, `lock timeout: another kong-db-init holds the migration lock (${h ? `pid ${h.pid}, ${h.application_name}` : 'holder gone'}); wait for it, or raise --lock-timeout`);
    }
    if (Date.now() - lastLog >= 5000) {
      ctx.log.info('waiting for the migration lock', { holder: h ? `${h.application_name} (pid ${h.pid})` : 'none' });
      lastLog = Date.now();
    }
    await sleep(200 + Math.floor(Math.random() * 300), ctx.signal);
  }
  return Date.now() - start;
}

/** The whole `finish` run; returns the exit code. */
export async function runFinish(ctx: FinishContext): Promise<number> {
  const started = Date.now();
  const { settings: st, kong: k, log, signal } = ctx;
  const s = newSummary(ctx);
  if (k.database === 'off') {
    log.info('KONG_DATABASE=off (DB-less or hybrid data plane): nothing to finish');
    s.outcome = 'skipped';
    s.note = 'database=off';
    return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
  }
  const deadline = started + st.deadlineMs;
  const cli = new KongCli({ bin: st.kongBin, kong: k, env: ctx.env, log, graceMs: st.graceMs, migrationArgs: ['--db-timeout', String(st.kongDbTimeoutS), '--lock-timeout', String(st.kongLockTimeoutS)] });
  let client: pg.Client | undefined;
  let lock: AdvisoryLock | undefined;
  let changed = false;
  try {
    const w = await waitForPostgres(k, { deadline, log, signal });
    client = w.client;
    s.wait_postgres_ms = w.waitedMs;
    let state = await cli.list(signal);
    s.state_before = stateName(state);
    if (!hasPending(state)) {
      log.info('nothing pending: kong migrations finish is not needed', { state: stateName(state) });
      s.state_after = s.state_before;
      s.note = 'nothing pending';
      return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
    }
    log.info('pending migrations: waiting for the rollout before kong migrations finish', { state: stateName(state), pending: JSON.stringify(state.pending) });
    lock = new AdvisoryLock(client, lockKey(k.db, k.schema));
    for (;;) {
      await waitForRollout(ctx, deadline);
      s.wait_lock_ms += await acquireLock(ctx, lock, deadline);
      // re-verify under the lock: the schema (another pod may have finished) and the rollout (a new one may have begun)
      state = await cli.list(signal);
      if (!hasPending(state)) break;
      if (ctx.finish.rollout === 'wait' && ctx.kube) {
        const again = rolloutBlockers(await observeGroup(ctx.kube, ctx.finish.namespaces.length ? ctx.finish.namespaces : [ctx.kube.namespace], ctx.finish.group, signal), ctx.finish.kongImage);
        if (again.length) {
          log.info('a rollout began while we took the lock: waiting again', { waiting_for: again.join('; ') });
          await lock.release();
          continue;
        }
      }
      state = await runFinishStep(ctx, cli, state, s, deadline);
      changed = true;
      break;
    }
    s.state_after = stateName(state);
    if (hasPending(state)) throw new InitError(ExitCode.KONG_FAILED, `migrations are still pending after kong migrations finish: ${JSON.stringify(state.pending)}`);
    if (!changed) s.note = 'another pod finished the migrations';
    log.info(changed ? 'kong migrations finish done' : 'another pod finished the migrations', { state: s.state_after });
  } catch (e) {
    failSummary(s, e);
    log.error(s.error ?? 'failed', { exit_code: s.exit_code });
  } finally {
    if (client && (changed || s.outcome !== 'ok') && !signal.aborted) {
      s.duration_ms = Date.now() - started;
      await recordHistory(client, k.schema, s).catch((err: Error) => log.warn('could not write the history row', { error: err.message }));
    }
    await lock?.release();
    cli.cleanup();
    await client?.end().catch(() => {});
  }
  return publishSummary(ctx.log, ctx.settings.statusFile, s, started);
}

/** `kong migrations finish`, retried while Kong's own lock row makes it abort; verified with `list`. */
async function runFinishStep(ctx: FinishContext, cli: KongCli, before: SchemaState, s: Summary, deadline: number): Promise<SchemaState> {
  for (let attempt = 1; ; attempt++) {
    const startedAt = new Date().toISOString();
    ctx.log.info('running kong migrations finish', { attempt, state: stateName(before) });
    const r = await cli.migrations('finish', ctx.signal);
    if (ctx.signal.aborted) throw new Interrupted();
    const after = await cli.list(ctx.signal);
    s.actions.push({ action: 'finish', ms: r.durationMs, exit: r.exitCode, note: `started ${startedAt} after the rollout${r.stdout.includes(NOT_LEADER) ? '; aborted: Kong lock held' : ''}` });
    if (!hasPending(after)) return after;
    if (r.exitCode !== 0) throw new InitError(ExitCode.KONG_FAILED, `kong migrations finish exited ${r.exitCode} and the schema is "${stateName(after)}": ${lastLines(r.stderr || r.stdout, 8)}`);
    if (!`${r.stdout}\n${r.stderr}`.includes(NOT_LEADER)) throw new InitError(ExitCode.KONG_FAILED, `kong migrations finish exited 0 but migrations are still pending: ${lastLines(r.stdout || r.stderr, 8)}`);
    const wait = backoffDelay(attempt, { baseMs: 1000, capMs: 10_000 }) + 250;
    if (Date.now() + wait > deadline) throw new InitError(ExitCode.DEADLINE, `deadline reached: kong migrations finish kept being aborted by Kong's own "migrations" lock row (a killed run leaves it until its TTL); raise --deadline`);
    ctx.log.warn("kong migrations finish was aborted by Kong's own lock; retrying", { next_try_ms: wait });
    await sleep(wait, ctx.signal);
    before = after;
  }
}



/** Entry point from cli.ts: flags, Kong settings, Kubernetes access, signals, then `runFinish`. */
export async function finishMain(argv: string[], env: Env, toolVersion: string): Promise<number> {
  let parsed: ReturnType<typeof parseFinishArgs>;
  let settings: Settings;
  try {
    parsed = parseFinishArgs(argv, env);
    if (parsed.help) {
      process.stdout.write(FINISH_HELP);
      return 0;
    }
    settings = parseSettings(['migrate', ...parsed.shared], env);
    if (settings.positional.length) throw new InitError(ExitCode.CONFIG, `unexpected argument ${JSON.stringify(settings.positional[0])}; run "kong-db-init finish --help"`);
  } catch (e) {
    process.stderr.write(`kong-db-init: ${isInitError(e) ? e.message : String(e)}\n`);
    return isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  const log = createLogger({ format: settings.logFormat, verbose: settings.verbose });
  addSecret(env.KONG_PG_PASSWORD);
  const ctl = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    log.warn(`received ${sig}: stopping`);
    if (ctl.signal.aborted) process.exit(ExitCode.INTERRUPTED);
    ctl.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let code: number;
  try {
    const kong = loadKongConfig(env, settings.conf, realFiles);
    addSecret(kong.password);
    const kube = parsed.finish.rollout === 'wait' && kong.database !== 'off' ? inClusterAccess(env, realFiles) : undefined;
    code = await runFinish({ settings, finish: parsed.finish, kong, env, log, signal: ctl.signal, toolVersion, kube });
  } catch (e) {
    log.error(isInitError(e) ? e.message : redact(String(e)), { exit_code: isInitError(e) ? e.exitCode : 1 });
    code = isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  if (parsed.finish.thenIdle && !ctl.signal.aborted) {
    log.info('finish: done; idling until the pod stops', { exit_code: code });
    // a pending promise does not keep Node alive: hold a timer until the signal arrives
    const keepAlive = setInterval(() => {}, 1 << 30);
    await new Promise<void>((resolve) => ctl.signal.addEventListener('abort', () => resolve(), { once: true }));
    clearInterval(keepAlive);
    return code === ExitCode.OK ? 0 : code;
  }
  return code;
}
