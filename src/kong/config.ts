/**
 * Kong's own settings (defaults, kong.conf, KONG_* variables, *_FILE, {vault://env/…}) as Kong
 * reads them, resolved to what our Postgres sessions and the Kong child need. Pure functions:
 * file reads are injected so that the rules can be unit tested.
 */
import { configError } from '../errors.js';
import { readPem, SYSTEM_CA_PATHS, trustedCertificates } from './trust.js';
import { isReference, resolveReference } from './vault.js';

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
  /** pg_ssl_required: with pg_ssl on, refuse a server without TLS (off: plain text, as Kong's pgmoon falls back). */
  sslRequired: boolean;
  /**
   * PEM certificates Kong trusts (lua_ssl_trusted_certificate, `system` read from the operating
   * system's bundle as Kong reads it), when verifying; they replace Node's bundled roots.
   */
  ca: string[] | undefined;
  /** PEM contents of pg_ssl_cert / pg_ssl_cert_key (client certificate), when set and pg_ssl is on. */
  clientCert: string | undefined;
  clientKey: string | undefined;
  /** The kong.conf file in effect, if any (passed to the Kong CLI with -c when explicit). */
  confPath: string | undefined;
  confExplicit: boolean;
  /** KONG_* variables read from their *_FILE companions (the Kong image's entrypoint): the Kong child gets them as values. */
  fromFiles?: Record<string, string>;
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
  pg_ssl_required: 'off',
  lua_ssl_trusted_certificate: 'system',
};

const KONG_DEFAULT_CONF_PATHS = ['/etc/kong/kong.conf', '/etc/kong.conf'];

/** A kong.conf line is shown in an error only when it cannot hold a secret. */
function showLine(raw: string): string {
  const line = raw.trim();
  if (/pass|secret|key|token|cred/i.test(line))
    return `a line starting with ${JSON.stringify(line.split(/[\s=:]/)[0]!.slice(0, 40))} (not shown: it may hold a secret)`;
  return JSON.stringify(line.slice(0, 60));
}

/** Parse kong.conf: `key = value` lines, `#` starts a comment unless escaped as `\#`. */
export function parseKongConf(text: string, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw
      .replace(/(^|[^\\])#.*$/, '$1')
      .replace(/\\#/g, '#')
      .trim();
    if (line === '') return;
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq).trim() : '';
    if (eq <= 0 || !/^[a-z0-9_]+$/i.test(key)) {
      throw configError(`${path}:${i + 1}: expected "key = value", got ${showLine(raw)}; fix or remove that line`);
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

export function parseIntIn(value: string, name: string, min: number, max: number): number {
  if (!/^\s*\d+\s*$/.test(value)) throw configError(`${name}=${JSON.stringify(value)} is not a number; set it to an integer between ${min} and ${max}`);
  const n = Number(value);
  if (n < min || n > max) throw configError(`${name}=${value} is out of range; set it to an integer between ${min} and ${max}`);
  return n;
}

/**
 * Variables the Kong image's entrypoint (docker-kong `file_env`) reads from `<NAME>_FILE`:
 * only when the file variable is non-empty; both set is an error; the value is the file's
 * content with its trailing newlines removed (bash `$(< file)`), nothing else trimmed.
 */
export const FILE_VARIABLES = ['KONG_PG_PASSWORD', 'KONG_PG_USER', 'KONG_PG_DATABASE'] as const;

export function readFileVariables(env: Env, files: FileReader): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FILE_VARIABLES) {
    const file = env[`${name}_FILE`];
    if (!file) continue;
    if (env[name]) {
      throw configError(`both ${name} and ${name}_FILE are set, but they are exclusive (the Kong image refuses this too); unset one of them`);
    }
    if (!files.exists(file)) {
      throw configError(`${name}_FILE=${file}: file not found; mount the secret at that path or unset ${name}_FILE`);
    }
    try {
      out[name] = files.read(file).replace(/\n+$/, '');
    } catch (e) {
      throw configError(`${name}_FILE=${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'}); make it readable by the container's user`);
    }
  }
  return out;
}

interface Layered {
  values: Record<string, string>;
  source: Record<string, string>;
  confPath: string | undefined;
  explicitConf: string | undefined;
}

/** Kong's layering: defaults, then kong.conf, then KONG_* variables (with *_FILE values). */
function layerKongValues(env: Env, confFlag: string | undefined, files: FileReader, fromFiles: Record<string, string>): Layered {
  const values: Record<string, string> = { ...KONG_DEFAULTS };
  const source: Record<string, string> = {};
  for (const k of Object.keys(values)) source[k] = `default ${k}`;

  const explicitConf = confFlag ?? (env.KONG_CONF || undefined);
  let confPath: string | undefined;
  if (explicitConf) {
    if (!files.exists(explicitConf)) {
      throw configError(
        `kong.conf not found at ${explicitConf} (from ${confFlag && confFlag !== env.KONG_CONF ? '--conf' : 'KONG_CONF'}); mount the file or unset the setting`,
      );
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
  for (const [name, v] of Object.entries({ ...env, ...fromFiles })) {
    if (!name.startsWith('KONG_') || name.startsWith('KONG_DB_INIT_') || v === undefined) continue;
    const key = name.slice(5).toLowerCase();
    values[key] = v;
    source[key] = name in fromFiles ? `${name}_FILE` : name;
  }
  return { values, source, confPath, explicitConf };
}

/** The settings kong-db-init reads; a `{vault://…}` reference in any of them is resolved. */
const USED_SETTINGS = [
  'database',
  'pg_host',
  'pg_port',
  'pg_user',
  'pg_password',
  'pg_database',
  'pg_schema',
  'pg_timeout',
  'pg_ssl',
  'pg_ssl_verify',
  'pg_ssl_required',
  'pg_ssl_cert',
  'pg_ssl_cert_key',
  'lua_ssl_trusted_certificate',
] as const;

export interface LoadOptions {
  /** Where `system` in lua_ssl_trusted_certificate looks (SYSTEM_CA_PATHS; tests point it elsewhere). */
  systemCaPaths?: readonly string[];
}

type Getter = { values: Record<string, string | undefined>; get(k: string): string; src(k: string): string };

/** `{vault://…}` references in the settings we use, resolved as Kong's env vault would. */
function resolveVaults(g: Getter, env: Env, fromFiles: Record<string, string>): void {
  const { values, src } = g;
  const vaults = (values.vaults ?? 'bundled').split(',').map((v) => v.trim());
  for (const k of USED_SETTINGS) {
    const v = values[k];
    if (!isReference(v)) continue;
    if (!vaults.includes('bundled') && !vaults.includes('env')) {
      throw configError(
        `${src(k)} (${v}): ${src('vaults')}=${values.vaults} turns Kong's env vault off, so Kong would not resolve this reference; add "bundled" (Kong's default) to it, or set the value itself`,
      );
    }
    values[k] = resolveReference(v, src(k), { ...env, ...fromFiles }, values.vault_env_prefix);
  }
}

/** A required name (host, user, database) when Postgres is used. */
function required(g: Getter, k: string, pgUsed: boolean, what: string): string {
  const v = g.get(k).trim();
  if (pgUsed && v === '') throw configError(`${g.src(k)} is empty; set ${what}`);
  return v;
}

/** The client certificate and key (pg_ssl_cert, pg_ssl_cert_key): both or neither, PEM. */
function clientCertificate(g: Getter, files: FileReader, pgUsed: boolean, ssl: boolean): { clientCert: string | undefined; clientKey: string | undefined } {
  const none = { clientCert: undefined, clientKey: undefined };
  const { values, src } = g;
  const certFile = values.pg_ssl_cert?.trim() || undefined;
  const keyFile = values.pg_ssl_cert_key?.trim() || undefined;
  if (!pgUsed || (!certFile && !keyFile)) return none;
  if (!certFile) throw configError(`${src('pg_ssl_cert_key')} is set but pg_ssl_cert is not; set KONG_PG_SSL_CERT to the client certificate, or unset the key`);
  if (!keyFile) throw configError(`${src('pg_ssl_cert')} is set but pg_ssl_cert_key is not; set KONG_PG_SSL_CERT_KEY to the client certificate's private key`);
  if (!ssl) return none;
  const clientCert = readPem(files, certFile, src('pg_ssl_cert'), 'client certificate');
  const clientKey = readPem(files, keyFile, src('pg_ssl_cert_key'), 'client key');
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(clientCert))
    throw configError(`${src('pg_ssl_cert')}: ${certFile} is not a PEM certificate; point it at the client certificate (PEM)`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(clientKey))
    throw configError(`${src('pg_ssl_cert_key')}: ${keyFile} is not a PEM private key; point it at the client certificate's key (PEM, unencrypted)`);
  return { clientCert, clientKey };
}

/** Resolve the settings Kong itself would use to reach Postgres. */
export function loadKongConfig(env: Env, confFlag: string | undefined, files: FileReader, opts: LoadOptions = {}): KongPg {
  const fromFiles = readFileVariables(env, files);
  const { values, source, confPath, explicitConf } = layerKongValues(env, confFlag, files, fromFiles);
  const g: Getter = { values, get: (k) => values[k] ?? '', src: (k) => source[k] ?? `KONG_${k.toUpperCase()}` };
  resolveVaults(g, env, fromFiles);
  const { get, src } = g;
  const database = get('database').trim().toLowerCase();
  if (database !== 'postgres' && database !== 'off') {
    throw configError(`${src('database')}=${JSON.stringify(get('database'))} is not supported; Kong 3.x uses "postgres" (or "off" for DB-less)`);
  }
  const pgUsed = database === 'postgres';
  const ssl = parseBool(get('pg_ssl'), src('pg_ssl'));
  const sslVerify = parseBool(get('pg_ssl_verify'), src('pg_ssl_verify'));
  const host = required(g, 'pg_host', pgUsed, 'it to the Postgres host name');
  return {
    database: database as 'postgres' | 'off',
    host,
    port: parseIntIn(get('pg_port'), src('pg_port'), 1, 65535),
    user: required(g, 'pg_user', pgUsed, 'the Postgres user name'),
    password: values.pg_password,
    db: required(g, 'pg_database', pgUsed, 'the Postgres database name'),
    schema: values.pg_schema?.trim() || undefined,
    timeoutMs: parseIntIn(get('pg_timeout'), src('pg_timeout'), 1, 3_600_000),
    ssl,
    sslVerify,
    sslRequired: parseBool(get('pg_ssl_required'), src('pg_ssl_required')),
    ca:
      pgUsed && ssl && sslVerify
        ? trustedCertificates(get('lua_ssl_trusted_certificate'), src('lua_ssl_trusted_certificate'), files, opts.systemCaPaths ?? SYSTEM_CA_PATHS)
        : undefined,
    ...clientCertificate(g, files, pgUsed, ssl),
    confPath,
    confExplicit: Boolean(explicitConf),
    fromFiles,
  };
}

/** Where a target is, for messages: never includes the password. */
export function describeTarget(pg: Pick<KongPg, 'host' | 'port' | 'db' | 'user'>): string {
  return `host=${pg.host} port=${pg.port} database=${pg.db} user=${pg.user}`;
}
