/**
 * Reading the schema state, starting Kong only when it must: no `schema_meta` means "needs
 * bootstrap"; a state that an identical Kong (engine/identity.ts) verified at the same
 * `schema_meta` fingerprint holds; otherwise `kong migrations list`, whose answer is recorded
 * for the next pods. The reader keeps the fingerprint it last saw, so that waiters can tell
 * whether the lock holder changed anything.
 */
import type pg from 'pg';
import type { KongCli } from '../kong/cli.js';
import { holderOf } from '../postgres/lock.js';
import { recordVerified, schemaFingerprint, verifiedState } from '../postgres/kong-tables.js';
import type { Logger } from '../report/log.js';
import { stateName, type SchemaState } from './plan.js';

export const NEEDS_BOOTSTRAP: SchemaState = { code: 3, executed: {}, pending: {}, new: {} };

export interface StateSource {
  cli: KongCli;
  log: Logger;
  signal: AbortSignal;
  schema: string | undefined;
  lockKey: bigint;
  /** The identity of this pod's Kong (engine/identity.ts). */
  identity: string;
}

export class StateReader {
  /** The `schema_meta` fingerprint at the last read ('absent' before bootstrap). */
  seen: string | undefined;
  /** The state at the last read (undefined: deferred while another pod migrates). */
  state: SchemaState | undefined;

  constructor(private readonly src: StateSource) {}

  /**
   * The state on connection `c`. `defer`: while another pod holds the lock, leave it unknown
   * (wait for that pod) rather than run `kong migrations list` on a moving schema.
   */
  async read(c: pg.Client, defer = false): Promise<SchemaState | undefined> {
    const { cli, log, signal, schema, identity } = this.src;
    this.seen = await schemaFingerprint(c, schema);
    if (this.seen === 'absent') return (this.state = NEEDS_BOOTSTRAP);
    const known = await verifiedState(c, schema, identity, this.seen);
    if (known) {
      log.info('state verified earlier by an identical Kong; not starting Kong', { state: stateName(known) });
      return (this.state = known);
    }
    if (defer && (await holderOf(c, this.src.lockKey))) return (this.state = undefined);
    const listed = await cli.list(signal);
    if ((await schemaFingerprint(c, schema)) === this.seen) await recordVerified(c, schema, identity, this.seen, listed);
    return (this.state = listed);
  }

  /** Read again only when the rows changed since the last read (or nothing was read). */
  async refresh(c: pg.Client): Promise<SchemaState> {
    if (this.state && (await schemaFingerprint(c, this.src.schema)) === this.seen) return this.state;
    return (await this.read(c))!;
  }

  /** After our own steps: record the final state for waiters with an identical Kong. */
  async recordFinal(c: pg.Client, state: SchemaState): Promise<void> {
    await recordVerified(c, this.src.schema, this.src.identity, await schemaFingerprint(c, this.src.schema), state);
  }
}
