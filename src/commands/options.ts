/**
 * Our own settings for the database commands (migrate, wait, status, finish): one flag table,
 * the source of parsing, `--help` and docs/flags.md. Flags win over KONG_DB_INIT_* variables,
 * which win over the defaults. Pure functions.
 */
import { FINISH_POLICIES, type FinishPolicy } from '../engine/plan.js';
import { configError } from '../errors.js';
import { type Env, parseIntIn } from '../kong/config.js';
import { type FlagSpec, parseFlags } from './flags.js';

export type Command = 'migrate' | 'wait' | 'status' | 'finish';
export const COMMANDS: readonly Command[] = ['migrate', 'wait', 'status', 'finish'];

export interface Settings {
  command: Command;
  positional: string[];
  help: boolean;
  deadlineMs: number;
  lockTimeoutMs: number;
  finish: FinishPolicy;
  repair: boolean;
  statusFile: string | undefined;
  logFormat: 'text' | 'json';
  dryRun: boolean;
  kongBin: string;
  conf: string | undefined;
  lockHost: string | undefined;
  lockPort: number | undefined;
  kongLockTimeoutS: number;
  kongDbTimeoutS: number;
  graceMs: number;
  json: boolean;
  verbose: boolean;
  historyRows: number;
  /** finish: wait for the rollout through the Kubernetes API, or finish now (outside a cluster). */
  rollout: 'wait' | 'skip';
  /** finish: workloads labelled with this group share the database. */
  group: string;
  /** finish: namespaces to scan (default: the pod's own). */
  namespaces: string[];
  /** finish: this pod's Kong image; workloads on another image block `finish`. */
  kongImage: string | undefined;
  pollMs: number;
  /** finish: after finishing (or failing), stay running until SIGTERM (the sidecar). */
  thenIdle: boolean;
}

type OptType = 'duration' | 'string' | 'bool' | 'enum' | 'port' | 'int';
interface Opt {
  flag: string;
  env?: string;
  type: OptType;
  values?: readonly string[];
  def?: string;
  help: string;
  key: keyof Settings;
  commands: readonly Command[];
  /** Validation beyond the type (throws a config error naming the fix); returns the value to store. */
  check?(v: unknown, name: string): unknown;
}

const RUN: readonly Command[] = ['migrate', 'wait', 'status', 'finish'];
const LOCKING: readonly Command[] = ['migrate', 'finish'];
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function checkGroup(v: unknown, name: string): unknown {
  if (!LABEL_VALUE.test(v as string) || (v as string).length > 63) {
    throw configError(`${name}=${JSON.stringify(v)} is not a valid label value; use up to 63 letters, digits, "-", "_" or "."`);
  }
  return v;
}

function checkNamespaces(v: unknown, name: string): unknown {
  const list = (v as string)
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const ns of list) {
    if (!NAMESPACE.test(ns)) throw configError(`${name}: ${JSON.stringify(ns)} is not a namespace name; give a comma-separated list such as kong,kong-admin`);
  }
  return list;
}

function checkPoll(v: unknown, name: string): unknown {
  if ((v as number) < 100) throw configError(`${name} is too short; use at least 100ms`);
  return v;
}

// biome-ignore format: one row per flag reads as the table it is
const OPTS: readonly Opt[] = [
  { flag: '--deadline', env: 'KONG_DB_INIT_DEADLINE', type: 'duration', def: '10m', key: 'deadlineMs', commands: ['migrate', 'wait', 'status'], help: "give up waiting (for Postgres, for Kong's own lock, for `wait`) after this long" },
  { flag: '--deadline', env: 'KONG_DB_INIT_DEADLINE', type: 'duration', def: '6h', key: 'deadlineMs', commands: ['finish'], help: 'give up waiting for the rollout (and for Postgres, the Kubernetes API, the lock) after this long' },
  { flag: '--lock-timeout', env: 'KONG_DB_INIT_LOCK_TIMEOUT', type: 'duration', def: '10m', key: 'lockTimeoutMs', commands: LOCKING, help: "give up waiting for another pod's migration (our advisory lock) after this long" },
  { flag: '--finish', env: 'KONG_DB_INIT_FINISH', type: 'enum', values: FINISH_POLICIES, def: 'auto', key: 'finish', commands: ['migrate', 'status'], help: 'when to run `kong migrations finish`: auto (only before a new `up`), always, never' },
  { flag: '--repair', env: 'KONG_DB_INIT_REPAIR', type: 'bool', def: 'true', key: 'repair', commands: LOCKING, help: 'repair what a killed Kong left that Kong cannot leave by itself (schema_meta without its locks table; a dead Kong\'s locks row); --repair=false refuses and names the manual fix' },
  { flag: '--no-repair', type: 'bool', key: 'repair', commands: LOCKING, check: (v) => !v, help: 'the same as --repair=false' },
  { flag: '--status-file', env: 'KONG_DB_INIT_STATUS_FILE', type: 'string', key: 'statusFile', commands: ['migrate', 'wait', 'finish'], help: 'where to write the JSON summary (default /dev/termination-log when writable; "-" for none)' },
  { flag: '--log-format', env: 'KONG_DB_INIT_LOG_FORMAT', type: 'enum', values: ['text', 'json'], def: 'text', key: 'logFormat', commands: RUN, help: 'log line format on stderr' },
  { flag: '--dry-run', env: 'KONG_DB_INIT_DRY_RUN', type: 'bool', def: 'false', key: 'dryRun', commands: ['migrate'], help: 'print the plan (and any repair) and change nothing' },
  { flag: '--kong-bin', env: 'KONG_DB_INIT_KONG_BIN', type: 'string', def: 'kong', key: 'kongBin', commands: RUN, help: 'the Kong executable (looked up on PATH)' },
  { flag: '--conf', env: 'KONG_CONF', type: 'string', key: 'conf', commands: RUN, help: 'a kong.conf file (default /etc/kong/kong.conf when present)' },
  { flag: '--lock-host', env: 'KONG_DB_INIT_LOCK_HOST', type: 'string', key: 'lockHost', commands: LOCKING, help: 'Postgres host for the advisory-lock session (bypass a transaction-mode pooler)' },
  { flag: '--lock-port', env: 'KONG_DB_INIT_LOCK_PORT', type: 'port', key: 'lockPort', commands: LOCKING, help: 'Postgres port for the advisory-lock session' },
  { flag: '--kong-lock-timeout', env: 'KONG_DB_INIT_KONG_LOCK_TIMEOUT', type: 'int', def: '60', key: 'kongLockTimeoutS', commands: LOCKING, help: "seconds, passed to Kong as --lock-timeout (also the TTL of Kong's own `locks` row)" },
  { flag: '--kong-db-timeout', env: 'KONG_DB_INIT_KONG_DB_TIMEOUT', type: 'int', def: '120', key: 'kongDbTimeoutS', commands: LOCKING, help: "seconds, passed to Kong as --db-timeout: pgmoon's timeout for each connect, send and receive, not for the command (a stalled Postgres costs a step up to 3 times it; recorded run 34)" },
  { flag: '--grace-period', env: 'KONG_DB_INIT_GRACE_PERIOD', type: 'duration', def: '20s', key: 'graceMs', commands: LOCKING, help: "after SIGTERM, how long a running Kong step may go on before its process group is stopped (keep it below the pod's terminationGracePeriodSeconds, 30 s by default)" },
  { flag: '--history', env: 'KONG_DB_INIT_HISTORY_ROWS', type: 'int', def: '5', key: 'historyRows', commands: ['status'], help: 'how many history rows `status` shows' },
  { flag: '--json', type: 'bool', def: 'false', key: 'json', commands: ['status'], help: 'print `status` as JSON' },
  { flag: '--verbose', env: 'KONG_DB_INIT_VERBOSE', type: 'bool', def: 'false', key: 'verbose', commands: RUN, help: 'debug log lines' },
  { flag: '--rollout', env: 'KONG_DB_INIT_FINISH_ROLLOUT', type: 'enum', values: ['wait', 'skip'], def: 'wait', key: 'rollout', commands: ['finish'], help: 'wait for the rollout through the Kubernetes API, or skip it (finish now, outside a cluster)' },
  { flag: '--group', env: 'KONG_DB_INIT_FINISH_GROUP', type: 'string', def: 'default', key: 'group', commands: ['finish'], check: checkGroup, help: 'workloads labelled kong-db-init.io/finish-group=NAME share the database' },
  { flag: '--namespaces', env: 'KONG_DB_INIT_FINISH_NAMESPACES', type: 'string', def: '', key: 'namespaces', commands: ['finish'], check: checkNamespaces, help: "comma-separated namespaces to scan (default: the pod's own)" },
  { flag: '--kong-image', env: 'KONG_DB_INIT_KONG_IMAGE', type: 'string', key: 'kongImage', commands: ['finish'], help: "this pod's Kong image: workloads on another image block finish" },
  { flag: '--poll', env: 'KONG_DB_INIT_FINISH_POLL', type: 'duration', def: '5s', key: 'pollMs', commands: ['finish'], check: checkPoll, help: 'how often to look at the rollout' },
  { flag: '--then-idle', env: 'KONG_DB_INIT_FINISH_THEN_IDLE', type: 'bool', def: 'false', key: 'thenIdle', commands: ['finish'], help: 'after finishing (or failing), stay running until SIGTERM, holding no connection (the sidecar: the kubelet must not restart it)' },
];

const META: Record<OptType, string | undefined> = { duration: 'DURATION', string: 'VALUE', bool: undefined, enum: undefined, port: 'PORT', int: 'N' };

/** The flag table of the database commands (also the source of `--help` and docs/flags.md). */
export const OPTIONS: readonly FlagSpec<Record<string, unknown>>[] = OPTS.map((o) => ({
  flag: o.flag,
  env: o.env,
  arg: o.type === 'enum' ? o.values!.join('|') : META[o.type],
  def: o.def,
  help: o.help,
  commands: o.commands,
  apply: (s, raw, name) => {
    const v = convert(o, raw, name);
    s[o.key] = o.check ? o.check(v, name) : v;
  },
}));

/** Parse a duration: "90" (seconds), "500ms", "30s", "5m", "1h". */
export function parseDuration(value: string, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!m) throw configError(`${name}=${JSON.stringify(value)} is not a duration; use e.g. 90, 30s, 5m or 500ms (no negative values)`);
  const n = Number(m[1]);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(n * mult);
}

function convert(spec: Opt, raw: string, name: string): unknown {
  switch (spec.type) {
    case 'duration':
      return parseDuration(raw, name);
    case 'bool':
      if (/^(1|true|on|yes)$/i.test(raw.trim())) return true;
      if (/^(0|false|off|no|)$/i.test(raw.trim())) return false;
      throw configError(`${name}=${JSON.stringify(raw)} is not a boolean; use true or false`);
    case 'enum':
      if (!spec.values!.includes(raw)) throw configError(`${name}=${JSON.stringify(raw)} is invalid; use one of ${spec.values!.join(', ')}`);
      return raw;
    case 'port':
      return parseIntIn(raw, name, 1, 65535);
    case 'int':
      return parseIntIn(raw, name, 0, 1_000_000);
    default:
      return raw;
  }
}

/** Parse argv (the command first, without node and script) and the environment into settings. */
export function parseSettings(argv: readonly string[], env: Env): Settings {
  const [first, ...rest] = argv;
  if (!COMMANDS.includes(first as Command)) throw configError(`unknown command "${first}"; use one of ${COMMANDS.join(', ')}`);
  const s: Record<string, unknown> = { command: first };
  const p = parseFlags(OPTIONS, first!, rest, env, s, configError);
  if (s.statusFile === '-') s.statusFile = '';
  if (first === 'finish') s.finish = 'always'; // the step runner must not skip the one step finish is for
  return { ...(s as unknown as Settings), positional: p.positional, help: p.help };
}
