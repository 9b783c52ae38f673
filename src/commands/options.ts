/** Our own settings: flags, then KONG_DB_INIT_* variables, then defaults. Pure functions. */
import { configError } from '../errors.js';
import { FINISH_POLICIES, type FinishPolicy } from '../engine/plan.js';
import { parseIntIn, type Env } from '../kong/config.js';

export type Command = 'migrate' | 'wait' | 'status' | 'install' | 'post-render' | 'help' | 'version';

export interface Settings {
  command: Command;
  positional: string[];
  deadlineMs: number;
  lockTimeoutMs: number;
  finish: FinishPolicy;
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
}

type OptType = 'duration' | 'string' | 'bool' | 'enum' | 'port' | 'int';
export interface OptSpec {
  flag: string;
  env?: string;
  type: OptType;
  values?: readonly string[];
  def?: string;
  help: string;
  key: keyof Settings;
  commands: readonly Command[];
}

const RUN: readonly Command[] = ['migrate', 'wait', 'status'];
export const OPTIONS: readonly OptSpec[] = [
  { flag: '--deadline', env: 'KONG_DB_INIT_DEADLINE', type: 'duration', def: '10m', key: 'deadlineMs', commands: RUN, help: 'give up waiting (for Postgres, for Kong\'s own lock, for `wait`) after this long' },
  { flag: '--lock-timeout', env: 'KONG_DB_INIT_LOCK_TIMEOUT', type: 'duration', def: '10m', key: 'lockTimeoutMs', commands: ['migrate'], help: 'give up waiting for another pod\'s migration (our advisory lock) after this long' },
  { flag: '--finish', env: 'KONG_DB_INIT_FINISH', type: 'enum', values: FINISH_POLICIES, def: 'auto', key: 'finish', commands: ['migrate', 'status'], help: 'when to run `kong migrations finish`: auto (only before a new `up`), always, never' },
  { flag: '--status-file', env: 'KONG_DB_INIT_STATUS_FILE', type: 'string', key: 'statusFile', commands: ['migrate', 'wait'], help: 'where to write the JSON summary (default /dev/termination-log when writable; "-" for none)' },
  { flag: '--log-format', env: 'KONG_DB_INIT_LOG_FORMAT', type: 'enum', values: ['text', 'json'], def: 'text', key: 'logFormat', commands: RUN, help: 'log line format on stderr' },
  { flag: '--dry-run', env: 'KONG_DB_INIT_DRY_RUN', type: 'bool', def: 'false', key: 'dryRun', commands: ['migrate'], help: 'print the plan and change nothing' },
  { flag: '--kong-bin', env: 'KONG_DB_INIT_KONG_BIN', type: 'string', def: 'kong', key: 'kongBin', commands: RUN, help: 'the Kong executable (looked up on PATH)' },
  { flag: '--conf', env: 'KONG_CONF', type: 'string', key: 'conf', commands: RUN, help: 'a kong.conf file (default /etc/kong/kong.conf when present)' },
  { flag: '--lock-host', env: 'KONG_DB_INIT_LOCK_HOST', type: 'string', key: 'lockHost', commands: ['migrate'], help: 'Postgres host for the advisory-lock session (bypass a transaction-mode pooler)' },
  { flag: '--lock-port', env: 'KONG_DB_INIT_LOCK_PORT', type: 'port', key: 'lockPort', commands: ['migrate'], help: 'Postgres port for the advisory-lock session' },
  { flag: '--kong-lock-timeout', env: 'KONG_DB_INIT_KONG_LOCK_TIMEOUT', type: 'int', def: '60', key: 'kongLockTimeoutS', commands: ['migrate'], help: 'seconds, passed to Kong as --lock-timeout (also the TTL of Kong\'s own `locks` row)' },
  { flag: '--kong-db-timeout', env: 'KONG_DB_INIT_KONG_DB_TIMEOUT', type: 'int', def: '120', key: 'kongDbTimeoutS', commands: ['migrate'], help: 'seconds, passed to Kong as --db-timeout' },
  { flag: '--grace-period', env: 'KONG_DB_INIT_GRACE_PERIOD', type: 'duration', def: '20s', key: 'graceMs', commands: ['migrate'], help: 'after SIGTERM, how long a running Kong step may go on before its process group is stopped (keep it below the pod\'s terminationGracePeriodSeconds, 30 s by default)' },
  { flag: '--history', env: 'KONG_DB_INIT_HISTORY_ROWS', type: 'int', def: '5', key: 'historyRows', commands: ['status'], help: 'how many history rows `status` shows' },
  { flag: '--json', type: 'bool', def: 'false', key: 'json', commands: ['status'], help: 'print `status` as JSON' },
  { flag: '--verbose', env: 'KONG_DB_INIT_VERBOSE', type: 'bool', def: 'false', key: 'verbose', commands: RUN, help: 'debug log lines' },
];

/** Parse a duration: "90" (seconds), "500ms", "30s", "5m", "1h". */
export function parseDuration(value: string, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!m) throw configError(`${name}=${JSON.stringify(value)} is not a duration; use e.g. 90, 30s, 5m or 500ms (no negative values)`);
  const n = Number(m[1]);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(n * mult);
}

function convert(spec: OptSpec, raw: string, name: string): unknown {
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

const COMMANDS: readonly Command[] = ['migrate', 'wait', 'status', 'install', 'post-render'];

/** Parse argv (without node and script) and the environment into settings. */
export function parseSettings(argv: readonly string[], env: Env): Settings {
  const s: Record<string, unknown> = { positional: [] };
  let command: Command | undefined;
  const fromFlag = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h' || arg === 'help') {
      s.helpFor = command;
      command = 'help';
      break;
    }
    if (arg === '--version' || arg === '-V' || arg === 'version') {
      command = 'version';
      break;
    }
    if (arg.startsWith('-') && arg !== '-') {
      const eq = arg.indexOf('=');
      const flag = eq > 0 ? arg.slice(0, eq) : arg;
      const spec = OPTIONS.find((o) => o.flag === flag);
      if (!spec) throw configError(`unknown option ${flag}; run "kong-db-init --help" for the list`);
      if (command && !spec.commands.includes(command)) throw configError(`option ${flag} does not apply to "${command}"; run "kong-db-init ${command} --help"`);
      let raw: string;
      if (eq > 0) raw = arg.slice(eq + 1);
      else if (spec.type === 'bool') raw = 'true';
      else {
        const next = argv[i + 1];
        if (next === undefined) throw configError(`option ${flag} needs a value`);
        raw = next;
        i++;
      }
      s[spec.key] = convert(spec, raw, flag);
      fromFlag.add(spec.key);
      continue;
    }
    if (!command) {
      if (!COMMANDS.includes(arg as Command)) throw configError(`unknown command "${arg}"; use one of ${COMMANDS.join(', ')}`);
      command = arg as Command;
      continue;
    }
    (s.positional as string[]).push(arg);
  }
  if (!command) command = 'help';
  for (const spec of OPTIONS) {
    if (fromFlag.has(spec.key)) continue;
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') s[spec.key] = convert(spec, fromEnv, spec.env!);
    else if (spec.def !== undefined) s[spec.key] = convert(spec, spec.def, spec.flag);
  }
  if (s.statusFile === '-') s.statusFile = '';
  return { ...(s as unknown as Settings), command, helpFor: s.helpFor } as Settings & { helpFor?: Command };
}
