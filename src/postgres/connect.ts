/** Postgres connection settings derived from Kong's configuration, and error classification. */
import os from 'node:os';
import pg from 'pg';
import type { KongPg } from '../kong/config.js';
import { describeTarget } from '../kong/config.js';
import { scrub } from '../report/secrets.js';
import { ExitCode, InitError } from '../errors.js';

/** Every query of ours ends within this (client side): a stalled server cannot hang a run. */
export const QUERY_TIMEOUT_MS = 15_000;
/**
 * Server-side TCP settings for our sessions: when the pod's node dies, Postgres notices within
 * ~25 s (10 s idle + 3 probes 5 s apart; tcp_user_timeout 20 s for unacknowledged data) and
 * releases the advisory lock, instead of after the server's default keepalive (~2 h).
 */
export const SERVER_KEEPALIVE = { idleS: 10, intervalS: 5, count: 3, userTimeoutMs: 20_000 };
/**
 * A database or role that does not exist yet is retried this long (Postgres operators create them
 * after the server accepts connections), within --deadline; then it is fatal (exit 10).
 */
export const MISSING_RETRY_MS = 20_000;

export function applicationName(): string {
  return `kong-db-init/${os.hostname()}`.slice(0, 63);
}

export interface Target {
  host: string;
  port: number;
}

/** pg options, plus `plainFallback`: TLS preferred but not required (Kong's pg_ssl=on, pg_ssl_required=off). */
export type ClientConfig = pg.ClientConfig & { plainFallback?: boolean };

/** pg client options that match what Kong itself would use (host, TLS, client certificate, timeout). */
export function clientConfig(k: KongPg, override?: Partial<Target>): ClientConfig {
  const host = override?.host ?? k.host;
  let ssl: pg.ClientConfig['ssl'] = false;
  if (k.ssl) {
    const client = k.clientCert && k.clientKey ? { cert: k.clientCert, key: k.clientKey } : {};
    if (k.sslVerify) {
      // exactly what Kong trusts (lua_ssl_trusted_certificate; `system` is the OS bundle, read in
      // kong/config.ts), never Node's bundled roots: a CA Kong trusts is trusted here, and only those
      ssl = { rejectUnauthorized: true, ca: k.ca, servername: host, ...client };
    } else {
      ssl = { rejectUnauthorized: false, ...client };
    }
  }
  return {
    plainFallback: k.ssl && !k.sslRequired,
    host,
    port: override?.port ?? k.port,
    user: k.user,
    password: k.password ?? '',
    database: k.db,
    ssl,
    connectionTimeoutMillis: k.timeoutMs,
    application_name: applicationName(),
    keepAlive: true,
    keepAliveInitialDelayMillis: SERVER_KEEPALIVE.idleS * 1000,
    query_timeout: QUERY_TIMEOUT_MS,
  };
}

export type ErrorClass = 'retry' | 'fatal';

export interface Classified {
  kind: ErrorClass;
  /** Retry only this long (something that does not exist yet); then it is fatal with `fix`. */
  boundedMs?: number;
  /** Short reason for progress lines, e.g. "connection refused" or "57P03 the database system is starting up". */
  reason: string;
  /** For fatal errors: what the operator should change. */
  fix?: string;
}

const RETRY_ERRNO = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'EADDRNOTAVAIL',
]);
const RETRY_SQLSTATE = new Set(['57P01', '57P02', '57P03', '53300', '53400']);
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_NOT_YET_VALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/**
 * Decide whether a connection error can heal by waiting, and say what to fix when it cannot.
 * Long on purpose: one flat table of SQLSTATEs and socket errors, each with its fix, read top to bottom.
 */
export function classify(err: unknown, k: Pick<KongPg, 'host' | 'port' | 'db' | 'user' | 'ssl' | 'sslVerify'>): Classified {
  const e = err as { code?: string; message?: string; errno?: number; severity?: string };
  const code = e?.code ?? '';
  const msg = scrub(String(e?.message ?? err)); // text from Postgres: scrubbed before it goes into a field
  if (code === '28P01')
    return {
      kind: 'fatal',
      reason: `${code} password authentication failed`,
      fix: 'check KONG_PG_USER and KONG_PG_PASSWORD (or KONG_PG_PASSWORD_FILE) against the Postgres role',
    };
  if (code === '28000' && /role .* does not exist/.test(msg)) {
    return {
      kind: 'retry',
      boundedMs: MISSING_RETRY_MS,
      reason: `${code} role "${k.user}" does not exist (yet)`,
      fix: `create the role ${k.user} or fix KONG_PG_USER`,
    };
  }
  if (code === '28000') {
    const noEnc = /no encryption/.test(msg);
    return {
      kind: 'fatal',
      reason: `${code} ${msg}`,
      fix: noEnc ? 'the server requires TLS: set KONG_PG_SSL=on' : "check KONG_PG_USER and the server's pg_hba.conf",
    };
  }
  if (code === '3D000')
    return {
      kind: 'retry',
      boundedMs: MISSING_RETRY_MS,
      reason: `${code} database "${k.db}" does not exist`,
      fix: `create the database (CREATE DATABASE ${k.db} OWNER ${k.user}) or fix KONG_PG_DATABASE`,
    };
  if (code === '42501')
    return { kind: 'fatal', reason: `${code} ${msg}`, fix: `grant the role ${k.user} the privileges it needs (CONNECT, CREATE on the schema)` };
  if (TLS_CODES.has(code) || /certificate|self[- ]signed|SSL routines/i.test(msg)) {
    return {
      kind: 'fatal',
      reason: `TLS: ${msg}`,
      fix: "trust the server's CA with KONG_LUA_SSL_TRUSTED_CERTIFICATE, fix the host name, or set KONG_PG_SSL_VERIFY=off",
    };
  }
  if (/does not support SSL/i.test(msg))
    return {
      kind: 'fatal',
      reason: 'TLS: the server does not support SSL connections',
      fix: 'enable ssl on the Postgres server, or set KONG_PG_SSL_REQUIRED=off (plain text when the server has no TLS) or KONG_PG_SSL=off',
    };
  if (RETRY_SQLSTATE.has(code) || code.startsWith('08')) return { kind: 'retry', reason: `${code} ${msg}` };
  if (RETRY_ERRNO.has(code)) {
    const what: Record<string, string> = {
      ECONNREFUSED: 'connection refused',
      ENOTFOUND: `host ${k.host} not resolvable (yet)`,
      EAI_AGAIN: `host ${k.host} not resolvable (yet)`,
      ETIMEDOUT: 'connection timed out',
      ECONNRESET: 'connection reset',
    };
    return { kind: 'retry', reason: what[code] ?? code };
  }
  if (/timeout|terminated|ended unexpectedly|Connection terminated/i.test(msg)) return { kind: 'retry', reason: msg };
  if (/^[0-9A-Z]{5}$/.test(code)) return { kind: 'fatal', reason: `${code} ${msg}`, fix: 'see the Postgres error above' };
  return { kind: 'retry', reason: msg || String(err) };
}

export function fatalMessage(c: Classified, k: KongPg): string {
  return `cannot use Postgres at ${describeTarget(k)}: ${c.reason}; fix: ${c.fix ?? 'see above'}`;
}

/** Whether an error came from Postgres or the connection to it (not from our own logic). */
export function isDbError(e: unknown): boolean {
  const x = e as { code?: unknown; message?: unknown } | undefined;
  if (typeof x?.code === 'string' && (/^[0-9A-Z]{5}$/.test(x.code) || /^E[A-Z]+$/.test(x.code))) return true;
  return /Connection terminated|Query read timeout|Client has encountered a connection error|not queryable|ended unexpectedly/i.test(String(x?.message ?? ''));
}

/**
 * A Postgres error after connecting, as a documented outcome: permanent ones (privileges, …)
 * exit 10 naming the fix; a lost connection that was not regained exits 15. Never exit 1.
 */
export function dbFailure(e: unknown, k: KongPg, doing: string): InitError {
  const c = classify(e, k);
  if (c.kind === 'fatal' || c.boundedMs) {
    return new InitError(ExitCode.DB_FATAL, `Postgres refused ${doing} at ${describeTarget(k)}: ${c.reason}; fix: ${c.fix ?? 'see the Postgres error'}`);
  }
  return new InitError(
    ExitCode.DB_LOST,
    `lost the connection to Postgres at ${describeTarget(k)} while ${doing}: ${c.reason}; check Postgres (restart, failover, network) and rerun (a rerun continues where this one stopped)`,
  );
}

/**
 * Connect one client and check that it answers queries. With TLS preferred but not required, a
 * server that answers the TLS request with "no" is used in plain text, as Kong's pgmoon does.
 */
export async function connectChecked(cfg: ClientConfig): Promise<pg.Client> {
  const { plainFallback, ...options } = cfg;
  const c = new pg.Client(options);
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query('SELECT 1');
  } catch (e) {
    destroyClient(c);
    if (plainFallback && options.ssl && /does not support SSL/i.test(String((e as Error)?.message))) return connectChecked({ ...options, ssl: false });
    throw e;
  }
  await boundSession(c);
  return c;
}

/**
 * Bound our session on the server side (SERVER_KEEPALIVE); ignored where it does not apply (Unix
 * sockets, a pooler that refuses it, Postgres < 12 for tcp_user_timeout).
 */
async function boundSession(c: pg.Client): Promise<void> {
  const ka = SERVER_KEEPALIVE;
  await c
    .query(
      `SELECT set_config('tcp_keepalives_idle', '${ka.idleS}', false), set_config('tcp_keepalives_interval', '${ka.intervalS}', false), set_config('tcp_keepalives_count', '${ka.count}', false)`,
    )
    .catch(() => {});
  await c.query(`SELECT set_config('tcp_user_timeout', '${ka.userTimeoutMs}', false)`).catch(() => {});
}

/** Close the socket at once: for a connection that may hang (stalled server, lost session). */
export function destroyClient(c: pg.Client): void {
  const conn = (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection;
  conn?.stream?.destroy();
}

/** End a client politely, but never wait for a stalled server longer than `ms`. */
export async function closeClient(c: pg.Client | undefined, ms = 500): Promise<void> {
  if (!c) return;
  let t: NodeJS.Timeout | undefined;
  await Promise.race([c.end().catch(() => {}), new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
  destroyClient(c);
}

export function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}
