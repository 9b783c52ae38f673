/**
 * Configuration: Kong's own settings (defaults, kong.conf, KONG_* variables) and our own
 * settings (flags, then KONG_DB_INIT_* variables, then defaults). Pure functions: file reads
 * are injected so that the rules can be unit tested.
 */
import { configError } from './errors.js';

export type Env = Record<string, string | undefined>;

export interface FileReader {
  exists(path: string): boolean;
  read(path: string): string;
}

export interface KongPg {
  database: 'postgres' | 'off';
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  db: string;
  schema: string | undefined;
  timeoutMs: number;
  ssl: boolean;
  sslVerify: boolean;
  /** PEM contents of the CA files Kong trusts (lua_ssl_trusted_certificate), when verifying. */
  ca: string[] | undefined;
  /** The kong.conf file in effect, if any (passed to the Kong CLI with -c when explicit). */
  confPath: string | undefined;
  confExplicit: boolean;
}

const KONG_DEFAULTS: Record<string, string> = {
  database: 'postgres',
  pg_host: '127.0.0.1',
  pg_port: '5432',
  pg_user: 'kong',
  pg_database: 'kong',
  pg_timeout: '5000',
  pg_ssl: 'off',
  pg_ssl_verify: 'off',
  lua_ssl_trusted_certificate: 'system',
};

const KONG_DEFAULT_CONF_PATHS = ['/etc/kong/kong.conf', '/etc/kong.conf'];

/** Parse kong.conf: `key = value` lines, `#` starts a comment unless escaped as `\#`. */
export function parseKongConf(text: string, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|[^\\])#.*$/, '$1').replace(/\\#/g, '#').trim();
    if (line === '') return;
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq).trim() : '';
    if (eq <= 0 || !/^[a-z0-9_]+$/i.test(key)) {
      throw configError(`${path}:${i + 1}: expected "key = value", got ${JSON.stringify(raw.trim().slice(0, 60))}; fix or remove that line`);
    }
    out[key.toLowerCase()] = line.slice(eq + 1).trim();
  });
  return out;
}

function parseBool(value: string, name: string): boolean {
  const v = value.trim().toLowerCase();
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false' || v === '') return false;
  throw configError(`${name}=${JSON.stringify(value)} is not a boolean; use "on" or "off"`);
}

function parseIntIn(value: string, name: string, min: number, max: number): number {
  if (!/^\s*\d+\s*$/.test(value)) throw configError(`${name}=${JSON.stringify(value)} is not a number; set it to an integer between ${min} and ${max}`);
  const n = Number(value);
  if (n < min || n > max) throw configError(`${name}=${value} is out of range; set it to an integer between ${min} and ${max}`);
  return n;
}

/** Resolve the settings Kong itself would use to reach Postgres. */
export function loadKongConfig(env: Env, confFlag: string | undefined, files: FileReader): KongPg {
  const values: Record<string, string> = { ...KONG_DEFAULTS };
  const source: Record<string, string> = {};
  for (const k of Object.keys(values)) source[k] = `default ${k}`;

  const explicitConf = confFlag ?? (env.KONG_CONF || undefined);
  let confPath: string | undefined;
  if (explicitConf) {
    if (!files.exists(explicitConf)) {
      throw configError(`kong.conf not found at ${explicitConf} (from ${confFlag && confFlag !== env.KONG_CONF ? '--conf' : 'KONG_CONF'}); mount the file or unset the setting`);
    }
    confPath = explicitConf;
  } else {
    confPath = KONG_DEFAULT_CONF_PATHS.find((p) => files.exists(p));
  }
  if (confPath) {
    let text: string;
    try {
      text = files.read(confPath);
    } catch (e) {
      throw configError(`cannot read kong.conf ${confPath}: ${(e as Error).message}; check the file's permissions`);
    }
    for (const [k, v] of Object.entries(parseKongConf(text, confPath))) {
      values[k] = v;
      source[k] = `${confPath} (${k})`;
    }
  }
  for (const [name, v] of Object.entries(env)) {
    if (!name.startsWith('KONG_') || name.startsWith('KONG_DB_INIT_') || v === undefined) continue;
    const key = name.slice(5).toLowerCase();
    values[key] = v;
    source[key] = name;
  }
  const src = (k: string) => source[k] ?? `KONG_${k.toUpperCase()}`;
  const get = (k: string) => values[k] ?? '';

  const database = get('database').trim().toLowerCase();
  if (database !== 'postgres' && database !== 'off') {
    throw configError(`${src('database')}=${JSON.stringify(get('database'))} is not supported; Kong 3.x uses "postgres" (or "off" for DB-less)`);
  }

  let password: string | undefined = values.pg_password;
  const pwFile = env.KONG_PG_PASSWORD_FILE;
  if (pwFile !== undefined && pwFile !== '') {
    if (!files.exists(pwFile)) {
      throw configError(`KONG_PG_PASSWORD_FILE=${pwFile}: file not found; mount the secret at that path or unset KONG_PG_PASSWORD_FILE`);
    }
    try {
      password = files.read(pwFile).replace(/\r?\n$/, '');
    } catch (e) {
      throw configError(`KONG_PG_PASSWORD_FILE=${pwFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'}); make it readable by the container's user`);
    }
  }

  const host = get('pg_host').trim();
  if (database === 'postgres' && host === '') throw configError(`${src('pg_host')} is empty; set it to the Postgres host name`);
  const port = parseIntIn(get('pg_port'), src('pg_port'), 1, 65535);
  const timeoutMs = parseIntIn(get('pg_timeout'), src('pg_timeout'), 1, 3_600_000);
  const ssl = parseBool(get('pg_ssl'), src('pg_ssl'));
  const sslVerify = parseBool(get('pg_ssl_verify'), src('pg_ssl_verify'));
  const user = get('pg_user').trim();
  if (database === 'postgres' && user === '') throw configError(`${src('pg_user')} is empty; set the Postgres user name`);
  const db = get('pg_database').trim();
  if (database === 'postgres' && db === '') throw configError(`${src('pg_database')} is empty; set the Postgres database name`);
  const schema = values.pg_schema?.trim() || undefined;

  let ca: string[] | undefined;
  if (database === 'postgres' && ssl && sslVerify) {
    const entries = get('lua_ssl_trusted_certificate').split(',').map((s) => s.trim()).filter(Boolean);
    const pems: string[] = [];
    let system = false;
    for (const e of entries) {
      if (e === 'system') {
        system = true;
        continue;
      }
      if (!files.exists(e)) {
        throw configError(`${src('lua_ssl_trusted_certificate')}: CA file ${e} not found; mount the CA bundle there or fix the path`);
      }
      try {
        pems.push(files.read(e));
      } catch (err) {
        throw configError(`${src('lua_ssl_trusted_certificate')}: cannot read CA file ${e} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
    ca = pems.length > 0 ? (system ? ['system', ...pems] : pems) : undefined;
  }

  return {
    database: database as 'postgres' | 'off',
    host,
    port,
    user,
    password,
    db,
    schema,
    timeoutMs,
    ssl,
    sslVerify,
    ca,
    confPath,
    confExplicit: Boolean(explicitConf),
  };
}

/** Where a target is, for messages: never includes the password. */
export function describeTarget(pg: Pick<KongPg, 'host' | 'port' | 'db' | 'user'>): string {
  return `host=${pg.host} port=${pg.port} database=${pg.db} user=${pg.user}`;
}

// ---------------------------------------------------------------------------------------
// Our own settings

export const FINISH_POLICIES = ['auto', 'always', 'never'] as const;
export type FinishPolicy = (typeof FINISH_POLICIES)[number];
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
  { flag: '--grace-period', env: 'KONG_DB_INIT_GRACE_PERIOD', type: 'duration', def: '10s', key: 'graceMs', commands: ['migrate'], help: 'after forwarding SIGTERM to Kong, kill it after this long' },
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
