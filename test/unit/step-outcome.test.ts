/** The classification of a Kong step's outcome (plan.ts) from the facts kong.ts reads, on recorded Kong 3.7.1 output. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { childEnv, kongError, LISTENERS_OFF, parseList, readStepOutput } from '../../src/kong/cli.js';
import { classifyStep, planOrRefuse, retryDelay, type SchemaState } from '../../src/engine/plan.js';
import { FIXTURES } from '../helpers/harness.js';

const rec = (name: string) => {
  const r = (f: string) => fs.readFileSync(path.join(FIXTURES, name, f), 'utf8');
  return { exitCode: Number(r('exit').trim()), stdout: r('stdout'), stderr: r('stderr') };
};
const list = (name: string): SchemaState => {
  const r = rec(name);
  return parseList(r.exitCode, r.stdout);
};
const empty = list('01-empty.list');
const current = list('05-current.list');
const fresh = list('09-new.list');
const pending = list('11-pending.list');

describe("readStepOutput: Kong's words as facts", () => {
  it('21: a concurrent `up` loser that aborted', () => {
    expect(readStepOutput(rec('21-concurrent-up.loser'))).toEqual({ notLeader: true, lockWaitTimedOut: false, raceError: false });
  });
  it('23: a concurrent bootstrap loser with a race error', () => {
    expect(readStepOutput(rec('23-concurrent-bootstrap.loser-exit1'))).toEqual({ notLeader: false, lockWaitTimedOut: false, raceError: true });
  });
  it('22: a concurrent `up` loser that found pending migrations: no race fact', () => {
    expect(readStepOutput(rec('22-concurrent-up.loser-exit1'))).toEqual({ notLeader: false, lockWaitTimedOut: false, raceError: false });
  });
  it("30/33: `up` that gave up waiting for another Kong's lock row (real stderr)", () => {
    expect(readStepOutput(rec('30-new-foreignlock.up-exit1'))).toEqual({ notLeader: false, lockWaitTimedOut: true, raceError: false });
    expect(readStepOutput(rec('33-new-foreignlock.up-lock-timeout-5'))).toEqual({ notLeader: false, lockWaitTimedOut: true, raceError: false });
  });
  it('30/31: `up` that waited until the row went, `finish` on a taken row: aborted (exit 0)', () => {
    expect(readStepOutput(rec('30-new-foreignlock.up')).notLeader).toBe(true);
    expect(readStepOutput(rec('31-pending-foreignlock.finish')).notLeader).toBe(true);
  });
  it('34: a migration that timed out is no lock-wait timeout (Kong wraps it and prints a traceback)', () => {
    expect(readStepOutput(rec('34-new-stalled-mid-migration.up'))).toEqual({ notLeader: false, lockWaitTimedOut: false, raceError: false });
  });
});

describe('classifyStep (recorded runs 21-23, 30-37)', () => {
  const step = (name: string, before: SchemaState, after: SchemaState, kongLockHeld = false) => {
    const r = rec(name);
    return classifyStep({ exitCode: r.exitCode, facts: readStepOutput(r), before, after, kongLockHeld });
  };
  it('21 aborted (exit 0, nothing changed) → aborted', () => {
    expect(step('21-concurrent-up.loser', fresh, fresh, true)).toBe('aborted');
  });
  it('21 aborted, but the other node finished meanwhile → progressed', () => {
    expect(step('21-concurrent-up.loser', fresh, pending)).toBe('progressed');
  });
  it('23 race error, nothing changed → race (retry)', () => {
    expect(step('23-concurrent-bootstrap.loser-exit1', empty, empty)).toBe('race');
  });
  it('23 race error while the winner bootstrapped → progressed-after-race', () => {
    expect(step('23-concurrent-bootstrap.loser-exit1', empty, current)).toBe('progressed-after-race');
  });
  it('22 exit 1 "pending migrations" → failed', () => {
    expect(step('22-concurrent-up.loser-exit1', fresh, pending)).toBe('failed');
  });
  it('a successful step → progressed; exit 0 with no change → stuck', () => {
    expect(
      classifyStep({ exitCode: 0, facts: { notLeader: false, lockWaitTimedOut: false, raceError: false }, before: fresh, after: pending, kongLockHeld: false }),
    ).toBe('progressed');
    expect(
      classifyStep({ exitCode: 0, facts: { notLeader: false, lockWaitTimedOut: false, raceError: false }, before: fresh, after: fresh, kongLockHeld: false }),
    ).toBe('stuck');
  });
  it("30: `up`'s lock-wait timeout is aborted (retry) whether or not the row is still there when we look (its holder may have just deleted it)", () => {
    expect(step('30-new-foreignlock.up-exit1', fresh, fresh, true)).toBe('aborted');
    expect(step('30-new-foreignlock.up-exit1', fresh, fresh, false)).toBe('aborted');
  });
  it('31: finish aborted on a taken row → aborted; 35: the loser that found nothing pending → progressed', () => {
    expect(step('31-pending-foreignlock.finish', pending, pending, true)).toBe('aborted');
    expect(step('35-concurrent-finish.loser-nopending', pending, current)).toBe('progressed');
  });
  it("34 (stalled mid-migration), 37 (no locks table): failed, and the message is Kong's Error line, not its traceback", () => {
    expect(step('34-new-stalled-mid-migration.up', fresh, fresh)).toBe('failed');
    expect(kongError(rec('34-new-stalled-mid-migration.up').stderr)).toMatch(/^Error: \[PostgreSQL error\] failed to run migration '023_360_to_370' up: /);
    expect(kongError(rec('34-new-stalled-mid-migration.up').stderr)).not.toMatch(/stack traceback|cluster_mutex/);
    const noLocks = list('37-bootstrap-killed-no-locks-table.04-list');
    expect(step('37-bootstrap-killed-no-locks-table.05-up', noLocks, noLocks)).toBe('failed');
    expect(kongError(rec('37-bootstrap-killed-no-locks-table.05-up').stderr)).toBe(
      'Error: [PostgreSQL error] failed to insert cluster lock: ERROR: relation "locks" does not exist (22)',
    );
  });
});

describe('retryDelay', () => {
  it("waits out Kong's lock row (plus 250 ms, at most 65 s: a dead Kong's row lives 60 s)", () => {
    expect(retryDelay(1200, 1)).toBe(1450);
    expect(retryDelay(59_800, 1)).toBe(60_050);
    expect(retryDelay(120_000, 1)).toBe(65_000);
  });
  it('otherwise a jittered backoff from 500 ms, capped at 5 s, never under 250 ms', () => {
    expect([1, 2, 3, 4, 5, 9].map((n) => retryDelay(undefined, n, () => 0.999999))).toEqual([499, 999, 1999, 3999, 4999, 4999]);
    expect(retryDelay(undefined, 3, () => 0)).toBe(250);
  });
});

describe('planOrRefuse', () => {
  it('returns the plan, or throws the CONFIG error with the refusal', () => {
    expect(planOrRefuse(fresh, 'auto').actions).toEqual(['up']);
    const both: SchemaState = { ...pending, new: { core: ['023_360_to_370'] } };
    expect(() => planOrRefuse(both, 'never')).toThrow(expect.objectContaining({ exitCode: 2, message: expect.stringMatching(/--finish=never/) }));
  });
});

describe('parseList with the prefix-creation line that Kong prints on stdout after the rest', () => {
  it('29 + "prefix directory … not found" parses as up to date with every migration', () => {
    const r = rec('29-after-up.list');
    const s = parseList(r.exitCode, `${r.stdout}prefix directory /tmp/p not found, trying to create it\n`);
    expect(s).toEqual(parseList(r.exitCode, r.stdout));
    expect(Object.values(s.executed).flat()).toHaveLength(66);
  });
  it('24 pending + new', () => {
    const s = list('24-pendingnew.list');
    expect(s.pending).toEqual({ 'ai-proxy': ['001_360_to_370'] });
    expect(s.new).toEqual({ core: ['023_360_to_370'] });
  });
});

describe('childEnv', () => {
  it('turns every listener off, sets the private prefix and the resolved password, drops the password file', () => {
    const env = childEnv({ KONG_PROXY_LISTEN: '0.0.0.0:8443 ssl', KONG_PG_PASSWORD_FILE: '/secret', PATH: '/bin' }, { password: 'pw' } as never, '/tmp/p');
    expect(env).toMatchObject({ ...LISTENERS_OFF, KONG_PREFIX: '/tmp/p', KONG_PG_PASSWORD: 'pw', PATH: '/bin' });
    expect(env.KONG_PG_PASSWORD_FILE).toBeUndefined();
  });
});
