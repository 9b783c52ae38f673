/** Postgres connection settings derived from Kong's configuration, and error classification. */
import tls from 'node:tls';
import os from 'node:os';
import pg from 'pg';
import type { KongPg } from './config.js';
import { describeTarget } from './config.js';

export function applicationName(): string {
  return `kong-db-init/${os.hostname()}`.slice(0, 63);
}

export interface Target {
  host: string;
  port: number;
}

/** pg client options that match what Kong itself would use (host, TLS, timeout). */
export function clientConfig(k: KongPg, override?: Partial<Target>): pg.ClientConfig {
  const host = override?.host ?? k.host;
  let ssl: pg.ClientConfig['ssl'] = false;
  if (k.ssl) {
    if (k.sslVerify) {
      const ca = k.ca ? k.ca.flatMap((c) => (c === 'system' ? [...tls.rootCertificates] : [c])) : undefined;
      ssl = { rejectUnauthorized: true, ca, servername: host };
    } else {
      ssl = { rejectUnauthorized: false };
    }
  }
  return {
    host,
    port: override?.port ?? k.port,
    user: k.user,
    password: k.password ?? '',
    database: k.db,
    ssl,
    connectionTimeoutMillis: k.timeoutMs,
    application_name: applicationName(),
    keepAlive: true,
  };
}

export type ErrorClass = 'retry' | 'fatal';

export interface Classified {
  kind: ErrorClass;
  /** Short reason for progress lines, e.g. "connection refused" or "57P03 the database system is starting up". */
  reason: string;
  /** For fatal errors: what the operator should change. */
  fix?: string;
}

const RETRY_ERRNO = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ECONNABORTED', 'EADDRNOTAVAIL']);
const RETRY_SQLSTATE = new Set(['57P01', '57P02', '57P03', '53300', '53400']);
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_NOT_YET_VALID', 'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/** Decide whether a connection error can heal by waiting, and say what to fix when it cannot. */
export function classify(err: unknown, k: Pick<KongPg, 'host' | 'port' | 'db' | 'user' | 'ssl' | 'sslVerify'>): Classified {
  const e = err as { code?: string; message?: string; errno?: number; severity?: string };
  const code = e?.code ?? '';
  const msg = String(e?.message ?? err);
  if (code === '28P01') return { kind: 'fatal', reason: `${code} password authentication failed`, fix: 'check KONG_PG_USER and KONG_PG_PASSWORD (or KONG_PG_PASSWORD_FILE) against the Postgres role' };
  if (code === '28000') {
    const noEnc = /no encryption/.test(msg);
    return { kind: 'fatal', reason: `${code} ${msg}`, fix: noEnc ? 'the server requires TLS: set KONG_PG_SSL=on' : 'check KONG_PG_USER and the server\'s pg_hba.conf' };
  }
  if (code === '3D000') return { kind: 'fatal', reason: `${code} database "${k.db}" does not exist`, fix: `create the database (CREATE DATABASE ${k.db} OWNER ${k.user}) or fix KONG_PG_DATABASE` };
  if (code === '42501') return { kind: 'fatal', reason: `${code} ${msg}`, fix: `grant the role ${k.user} the privileges it needs (CONNECT, CREATE on the schema)` };
  if (TLS_CODES.has(code) || /certificate|self[- ]signed|SSL routines/i.test(msg)) {
    return { kind: 'fatal', reason: `TLS: ${msg}`, fix: 'trust the server\'s CA with KONG_LUA_SSL_TRUSTED_CERTIFICATE, fix the host name, or set KONG_PG_SSL_VERIFY=off' };
  }
  if (/does not support SSL/i.test(msg)) return { kind: 'fatal', reason: 'TLS: the server does not support SSL connections', fix: 'enable ssl on the Postgres server or set KONG_PG_SSL=off' };
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

/** Connect one client and check that it answers queries. */
export async function connectChecked(cfg: pg.ClientConfig): Promise<pg.Client> {
  const c = new pg.Client(cfg);
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query('SELECT 1');
    return c;
  } catch (e) {
    c.end().catch(() => {});
    throw e;
  }
}

export function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}
