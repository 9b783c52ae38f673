/** The schema state reported by `kong migrations list`, and the pure decision of what to run next. */
import { ExitCode, InitError } from '../errors.js';

/** When to run `kong migrations finish`: auto (only before a new `up`), always, never. */
export const FINISH_POLICIES = ['auto', 'always', 'never'] as const;
export type FinishPolicy = (typeof FINISH_POLICIES)[number];

export type Migrations = Record<string, string[]>;

export interface SchemaState {
  /** Exit status of `kong migrations list`: 0 up to date, 3 needs bootstrap, 4 pending, 5 new. */
  code: 0 | 3 | 4 | 5;
  executed: Migrations;
  pending: Migrations;
  new: Migrations;
}

export type StateName = 'up-to-date' | 'needs-bootstrap' | 'pending' | 'new' | 'pending+new';
export type Action = 'bootstrap' | 'up' | 'finish';

export function count(m: Migrations): number {
  return Object.values(m).reduce((n, l) => n + l.length, 0);
}

export function stateName(s: SchemaState): StateName {
  if (s.code === 3) return 'needs-bootstrap';
  if (s.code === 0) return 'up-to-date';
  if (s.code === 5) return 'new';
  return count(s.new) > 0 ? 'pending+new' : 'pending';
}

/** A short key of a state's counts: two states with the same key mean a step made no progress. */
export function progressKey(s: SchemaState): string {
  return `${s.code}:${count(s.executed)}:${count(s.pending)}:${count(s.new)}`;
}

/**
 * Whether `kong start` (the chart's wait-for-db loop) accepts this state: up to date, or pending
 * alone. Kong 3.7.1 refuses pending+new (`check_state` raises on any new migration) although
 * `list` exits 4 for it.
 */
export function kongStartAccepts(s: SchemaState): boolean {
  return s.code === 0 || (s.code === 4 && count(s.new) === 0);
}

export interface Plan {
  state: StateName;
  actions: Action[];
  reason: string;
  /** Set when the policy forbids what the state requires; the run fails with this message. */
  refused?: string;
}

/**
 * Decide what to run from the state `list` reported. Pure: re-run after every step.
 * - needs bootstrap → bootstrap; new → up
 * - pending + new (a previous upgrade never ran finish) → finish then up (refused under `never`)
 * - pending only → finish under `always`; otherwise nothing: Kong starts with pending migrations,
 *   and finishing early breaks old pods still running during a rolling upgrade
 * - up to date → nothing
 */
export function decide(s: SchemaState, policy: FinishPolicy): Plan {
  const state = stateName(s);
  switch (state) {
    case 'needs-bootstrap':
      return { state, actions: ['bootstrap'], reason: 'the database needs bootstrapping' };
    case 'new':
      return { state, actions: ['up'], reason: `${count(s.new)} new migration(s) to run` };
    case 'pending+new':
      if (policy === 'never') {
        return {
          state,
          actions: [],
          reason: 'pending migrations from a previous upgrade block new ones',
          refused:
            `the database has ${count(s.pending)} pending migration(s) from a previous upgrade and ${count(s.new)} new one(s); ` +
            '`kong migrations up` cannot run before `finish`, and --finish=never forbids it: run `kong migrations finish` once every pod runs the new version, or use --finish=auto',
        };
      }
      return {
        state,
        actions: ['finish', 'up'],
        reason: `finish ${count(s.pending)} pending migration(s) from a previous upgrade, then run ${count(s.new)} new one(s)`,
      };
    case 'pending':
      if (policy === 'always') return { state, actions: ['finish'], reason: `--finish=always: finish ${count(s.pending)} pending migration(s)` };
      return {
        state,
        actions: [],
        reason: `${count(s.pending)} pending migration(s) left for \`kong migrations finish\` after the rollout (Kong starts with them)`,
      };
    case 'up-to-date':
      return { state, actions: [], reason: 'the database is up to date' };
  }
}

/** Refuse what the policy forbids: the CONFIG error carries the plan's message. */
export function planOrRefuse(s: SchemaState, policy: FinishPolicy): Plan {
  const plan = decide(s, policy);
  if (plan.refused) throw new InitError(ExitCode.CONFIG, plan.refused);
  return plan;
}

/** What Kong's output said, in Kong's words turned into facts (kong.ts `readStepOutput`). */
export interface StepFacts {
  /** "aborted: another node is performing database changes" (exit 0, nothing done). */
  notLeader: boolean;
  /** `up` gave up waiting for Kong's own `locks` row ("[PostgreSQL error] timeout"). */
  lockWaitTimedOut: boolean;
  /** One of the PostgreSQL errors a concurrent Kong bootstrap causes (recorded run 23). */
  raceError: boolean;
}

export interface StepRun {
  exitCode: number;
  facts: StepFacts;
  before: SchemaState;
  after: SchemaState;
  /** Kong's `locks` row was there when we looked after the step. */
  kongLockHeld: boolean;
}

/**
 * - progressed: the state moved on and Kong exited 0
 * - progressed-after-race: the state moved on although Kong failed with a race error
 * - aborted: Kong's own lock was held (another Kong, or a killed run's row): retry after its TTL
 * - race: a concurrent change broke this attempt and nothing moved: retry
 * - failed: Kong exited non-zero for any other reason
 * - stuck: Kong exited 0 but the state did not move
 */
export type StepOutcome = 'progressed' | 'progressed-after-race' | 'aborted' | 'race' | 'failed' | 'stuck';

/** Classify one Kong step from its exit status, what it printed, and the states around it. Pure. */
export function classifyStep(r: StepRun): StepOutcome {
  // `up`'s lock-wait "timeout" means it waited the whole --lock-timeout on another Kong's row and did
  // nothing, whether or not the row is still there when we look (recorded runs 30, 33)
  const aborted = r.facts.notLeader || (r.exitCode !== 0 && r.facts.lockWaitTimedOut);
  const race = r.exitCode !== 0 && !aborted && r.facts.raceError;
  const progressed = progressKey(r.after) !== progressKey(r.before);
  if (r.exitCode !== 0 && !race && !aborted) return 'failed';
  if (progressed) return race ? 'progressed-after-race' : 'progressed';
  if (aborted) return 'aborted';
  if (race) return 'race';
  return 'stuck';
}

/**
 * How long to wait before retrying an aborted or raced step: until Kong's lock row expires (plus
 * a margin; at most 65 s, Kong's default ttl of 60 s and a margin: a `finish` started earlier only
 * aborts again), else a jittered backoff from 500 ms capped at 5 s.
 */
export function retryDelay(kongLockMsLeft: number | undefined, attempt: number, random: () => number = Math.random): number {
  if (kongLockMsLeft !== undefined) return Math.min(Math.ceil(kongLockMsLeft) + 250, 65_000);
  const ceiling = Math.min(5000, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.max(250, Math.floor(random() * ceiling));
}
