/** A session-level Postgres advisory lock so that only one pod migrates at a time. */
import { createHash } from 'node:crypto';
import type pg from 'pg';

export const LOCK_NAMESPACE = 'kong-db-init/migrations/v1';

/** 64-bit lock key from a fixed namespace, the database and the schema: every pod agrees. */
export function lockKey(database: string, schema: string | undefined): bigint {
  const h = createHash('sha256').update(`${LOCK_NAMESPACE}\0${database}\0${schema ?? 'public'}`).digest();
  return h.readBigInt64BE(0);
}

export interface Holder {
  pid: number;
  application_name: string;
  client_addr: string | null;
  since: string | null;
}

const HOLDER_SQL = `
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start::text AS since
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
 LIMIT 1`;

export class AdvisoryLock {
  private held = false;
  private lostHandlers: Array<(reason: string) => void> = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private lostReason: string | undefined;

  constructor(
    private readonly client: pg.Client,
    readonly key: bigint,
  ) {
    const lost = (reason: string) => {
      if (!this.held || this.lostReason) return;
      this.lostReason = reason;
      for (const h of this.lostHandlers) h(reason);
    };
    client.on('error', (e) => lost(`lock connection error: ${e.message}`));
    client.on('end', () => lost('lock connection closed'));
    this.markLost = lost;
  }

  private markLost: (reason: string) => void;

  get isHeld(): boolean {
    return this.held && !this.lostReason;
  }

  get lost(): string | undefined {
    return this.lostReason;
  }

  onLost(h: (reason: string) => void): void {
    this.lostHandlers.push(h);
  }

  private keyParts(): [string, string] {
    const u = BigInt.asUintN(64, this.key);
    return [(u >> 32n).toString(), (u & 0xffffffffn).toString()];
  }

  async tryAcquire(): Promise<boolean> {
    const r = await this.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [this.key.toString()]);
    this.held = r.rows[0]?.ok === true;
    if (this.held) this.startHeartbeat();
    return this.held;
  }

  async holder(): Promise<Holder | null> {
    const r = await this.client.query<Holder>(HOLDER_SQL, this.keyParts());
    return r.rows[0] ?? null;
  }

  private startHeartbeat(): void {
    this.heartbeat = setInterval(() => {
      this.client.query('SELECT 1').catch((e: Error) => this.markLost(`lock connection failed: ${e.message}`));
    }, 1000);
    this.heartbeat.unref();
  }

  async release(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (!this.held) return;
    this.held = false;
    if (this.lostReason) return;
    await this.client.query('SELECT pg_advisory_unlock($1::bigint)', [this.key.toString()]).catch(() => {});
  }
}
