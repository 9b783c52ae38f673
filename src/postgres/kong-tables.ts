/** Reading Kong's own tables with SQL: its `locks` row and a fingerprint of `schema_meta`. */
import type pg from 'pg';
import { quoteIdent } from './connect.js';
import type { SchemaState } from '../engine/plan.js';

export interface KongLockRow {
  owner: string;
  ttl: string;
  ms_left: number;
}

/** Kong's unexpired "migrations" row in its `locks` table (held by a running Kong, or left by a killed one). */
export async function kongLockRow(c: pg.Client | undefined, schema: string | undefined): Promise<KongLockRow | undefined> {
  if (!c) return undefined;
  try {
    const t = schema ? `${quoteIdent(schema)}.locks` : 'locks';
    const r = await c.query<KongLockRow>(
      // Kong ignores (and deletes on its next lock) a row whose ttl has passed: so do we
      `SELECT owner, ttl::text, (EXTRACT(EPOCH FROM (ttl - now())) * 1000)::float8 AS ms_left FROM ${t} WHERE key = 'migrations' AND ttl >= now()`,
    );
    return r.rows[0];
  } catch {
    return undefined;
  }
}

/**
 * A cheap fingerprint of Kong's `schema_meta` rows, read with SQL: `kong migrations list` is a pure
 * function of these rows (for one Kong installation), so an unchanged fingerprint means an
 * unchanged state and saves starting Kong. `absent` (no schema_meta in Kong's schema) means
 * "needs bootstrap" for every Kong version, exactly as Kong decides it.
 */
export async function schemaFingerprint(c: pg.Client, schema: string | undefined): Promise<string> {
  const t = await c.query<{ s: string }>(
    // pg_catalog, not information_schema: a table we may not read must fail (42501), not look absent
    `SELECT n.nspname AS s FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = 'schema_meta' AND c.relkind IN ('r', 'p')`,
    [schema ?? null],
  );
  const s = t.rows[0]?.s;
  if (!s) return 'absent';
  const r = await c.query<{ h: string }>(
    `SELECT md5(COALESCE(string_agg(subsystem || ':' || COALESCE(last_executed, '') || ':' || COALESCE(array_to_string(executed, ','), '') || ':' ||
            COALESCE(array_to_string(pending, ','), ''), ';' ORDER BY subsystem), '')) AS h FROM ${quoteIdent(s)}.schema_meta WHERE key = 'schema_meta'`,
  );
  return r.rows[0]?.h ?? 'empty';
}

/** Where a state verified with `kong migrations list` is kept for other pods with an identical Kong. */
export const VERIFIED_TABLE = 'kong_db_init_verified';

function verifiedTable(schema: string | undefined): string {
  return schema ? `${quoteIdent(schema)}.${VERIFIED_TABLE}` : VERIFIED_TABLE;
}

/**
 * The state an identical Kong (same `identity`, see identity.ts) verified while `schema_meta` had
 * this fingerprint; undefined when there is none (or the table cannot be read).
 */
export async function verifiedState(c: pg.Client, schema: string | undefined, identity: string, fp: string): Promise<SchemaState | undefined> {
  try {
    const r = await c.query<{ state: SchemaState }>(`SELECT state FROM ${verifiedTable(schema)} WHERE identity = $1 AND fingerprint = $2`, [identity, fp]);
    return r.rows[0]?.state;
  } catch {
    return undefined;
  }
}

/**
 * Record what `kong migrations list` said while `schema_meta` had fingerprint `fp`. Best effort:
 * without the table (and without CREATE to make it) pods simply run `list` themselves.
 */
export async function recordVerified(c: pg.Client, schema: string | undefined, identity: string, fp: string, state: SchemaState): Promise<void> {
  const t = verifiedTable(schema);
  const upsert = () =>
    c.query(
      `INSERT INTO ${t} (identity, fingerprint, state, verified_at) VALUES ($1, $2, $3::jsonb, now())
       ON CONFLICT (identity) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, state = EXCLUDED.state, verified_at = now()`,
      [identity, fp, JSON.stringify(state)],
    );
  try {
    await upsert();
  } catch (e) {
    if ((e as { code?: string }).code !== '42P01') return;
    try {
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${t} (identity text PRIMARY KEY, fingerprint text NOT NULL, state jsonb NOT NULL, verified_at timestamptz NOT NULL)`,
      );
      await upsert();
    } catch {
      // best effort
    }
  }
}
