/** Running Kong's own CLI (`kong migrations …`) with execa, and parsing what `list` prints. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import type { Env, KongPg } from '../kong/config.js';
import { ExitCode, InitError, Interrupted } from '../errors.js';
import type { Logger } from '../report/log.js';
import { scrub } from '../report/secrets.js';
import type { Migrations, SchemaState, StepFacts } from '../engine/plan.js';
import { groupAlive, stopGroup, trackGroup, untrackGroup } from './process-group.js';

export const NOT_LEADER = 'aborted: another node is performing database changes';
/**
 * What `kong migrations up` prints when Kong's own `locks` row stayed held for its whole
 * --lock-timeout (its wait loop gives up with this error instead of "aborted").
 */
export const KONG_LOCK_WAIT_TIMEOUT = /^Error: \[PostgreSQL error\] timeout\s*$/m;
/** PostgreSQL errors that a concurrent Kong bootstrap (not ours) can cause; retrying heals them. */
export const RACE_ERRORS = [
  /tuple concurrently updated/,
  /failed to bootstrap database: .*already exists/,
  /duplicate key value violates unique constraint "pg_type_typname_nsp_index"/,
];

/** Parse `kong migrations list` output into a typed state. Throws when the exit status is not 0/3/4/5. */
export function parseList(exitCode: number, stdout: string, stderr = ''): SchemaState {
  if (![0, 3, 4, 5].includes(exitCode)) {
    throw new InitError(ExitCode.KONG_FAILED, `\`kong migrations list\` exited ${exitCode}: ${kongError(stderr || stdout, 6)}`);
  }
  const state: SchemaState = { code: exitCode as SchemaState['code'], executed: {}, pending: {}, new: {} };
  if (exitCode === 3) return state;
  let section: Migrations | undefined;
  for (const raw of stdout.split(/\r?\n/)) {
    const line = raw.trimEnd();
    if (/^Executed migrations:/.test(line)) section = state.executed;
    else if (/^Pending migrations:/.test(line)) section = state.pending;
    else if (/^New migrations available:/.test(line)) section = state.new;
    else if (line.trim() === '') section = undefined;
    else if (section) {
      const m = /^\s*([A-Za-z0-9_.-]+):\s*(.*)$/.exec(line);
      if (m)
        section[m[1]!] = m[2]!
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
    }
  }
  return state;
}

export function lastLines(text: string, n: number): string {
  return text
    .trim()
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .slice(-n)
    .join(' | ');
}

/**
 * What Kong said went wrong: its `Error: …` line (Kong prints a Lua stack traceback after it, even
 * without --v, when a query times out or fails), else its last lines.
 */
export function kongError(text: string, n = 8): string {
  const lines = text.split(/\r?\n/);
  const i = lines.findIndex((l) => /^Error: /.test(l));
  if (i < 0) return lastLines(text, n);
  const end = lines.findIndex((l, j) => j > i && (/^\s*stack traceback:/.test(l) || l.trim() === ''));
  // Kong wraps what failed inside its lock: "cluster_mutex callback threw an error: <file>:<line>: <error>"
  return lines
    .slice(i, end < 0 ? i + 3 : end)
    .join(' | ')
    .replace(/cluster_mutex callback threw an error: \S+:\d+: (\[PostgreSQL error\] )?/, '');
}

export interface KongResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  signal?: string;
  /** We stopped Kong's process group (after a signal and the grace period): the step was cut. */
  killed?: boolean;
}

export interface KongRunnerOptions {
  bin: string;
  kong: KongPg;
  env: Env;
  log: Logger;
  /** After SIGTERM, how long a running migration step may go on before its group is stopped. */
  graceMs: number;
  /** Extra arguments for every `kong migrations` call (timeouts). */
  migrationArgs?: string[];
}

/** After SIGTERM to Kong's group, SIGKILL follows this much later. */
export const KILL_AFTER_MS = 1000;

/**
 * Listeners a migration never opens. Preparing a fresh prefix makes TLS keys for every SSL
 * listener (real Kong 3.7.1: `list` 1.53 s in a new prefix, 0.40-0.46 s with these off).
 * `kong migrations` reads only the database settings: kong/cmd/migrations.lua `execute` loads the
 * configuration (where `off` is a valid value for every listener), builds DB.new(conf), inits the
 * connector and reads the schema state; no migration opens or reads a listener.
 */
export const LISTENERS_OFF: Record<string, string> = {
  KONG_PROXY_LISTEN: 'off',
  KONG_ADMIN_LISTEN: 'off',
  KONG_ADMIN_GUI_LISTEN: 'off',
  KONG_STATUS_LISTEN: 'off',
  KONG_STREAM_LISTEN: 'off',
};

/** Environment for the Kong child: ours, with the resolved password, a private prefix, no listeners. */
export function childEnv(env: Env, k: KongPg, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(env)) if (v !== undefined) out[key] = v;
  for (const [name, v] of Object.entries(k.fromFiles ?? {})) out[name] = v; // read from *_FILE, like the Kong image's entrypoint
  for (const name of Object.keys(out)) if (/^KONG_PG_(PASSWORD|USER|DATABASE)_FILE$/.test(name)) delete out[name];
  if (k.password !== undefined) out.KONG_PG_PASSWORD = k.password;
  Object.assign(out, LISTENERS_OFF);
  out.KONG_PREFIX = prefix;
  return out;
}

/** Facts from a step's output, in Kong's words (plan.ts `classifyStep` decides from them). */
export function readStepOutput(r: Pick<KongResult, 'stdout' | 'stderr'>): StepFacts {
  return {
    notLeader: `${r.stdout}\n${r.stderr}`.includes(NOT_LEADER),
    lockWaitTimedOut: KONG_LOCK_WAIT_TIMEOUT.test(r.stderr),
    raceError: RACE_ERRORS.some((re) => re.test(r.stderr)),
  };
}

export interface RunOptions {
  signal?: AbortSignal;
  quiet?: boolean;
  graceMs?: number;
}

export class KongCli {
  private prefix: string | undefined;
  constructor(private readonly o: KongRunnerOptions) {}

  private getPrefix(): string {
    if (!this.prefix) this.prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'kong-db-init-prefix-'));
    return this.prefix;
  }

  cleanup(): void {
    if (this.prefix) fs.rmSync(this.prefix, { recursive: true, force: true });
    this.prefix = undefined;
  }

  /** Kong's stdout and stderr, line by line, into our log (scrubbed before anything stores them). */
  private stream(child: ResultPromise, cmd: string): void {
    for (const [stream, level] of [
      [child.stdout, 'info'],
      [child.stderr, 'warn'],
    ] as const) {
      if (!stream) continue;
      readline.createInterface({ input: stream }).on('line', (line) => {
        if (line.trim() !== '') this.o.log[level](`[${cmd}] ${scrub(line)}`);
      });
    }
  }

  /** On abort: `graceMs` for the group to finish on its own, then SIGTERM and SIGKILL to it. */
  private armAbort(pgid: number | undefined, cmd: string, opts: RunOptions): { stopping(): Promise<boolean> | undefined; disarm(): void } {
    let stopping: Promise<boolean> | undefined;
    let timer: NodeJS.Timeout | undefined;
    const grace = opts.graceMs ?? 0;
    const onAbort = () => {
      if (grace > 0 && !opts.quiet) this.o.log.warn(`letting ${cmd} finish (up to --grace-period ${Math.round(grace / 100) / 10} s)`);
      timer = setTimeout(() => {
        if (pgid === undefined) return;
        if (grace > 0) this.o.log.warn(`${cmd} still runs after --grace-period: stopping its process group`, { pgid });
        stopping = stopGroup(pgid, KILL_AFTER_MS);
      }, grace);
    };
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    return {
      stopping: () => stopping,
      disarm: () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      },
    };
  }

  /** An orphaned worker (the spawned process died, the rest of the chain did not) keeps migrating: wait for it. */
  private async waitForGroup(pgid: number | undefined, cmd: string, stopping: () => Promise<boolean> | undefined): Promise<void> {
    let warned = false;
    while (pgid !== undefined && !stopping() && groupAlive(pgid)) {
      if (!warned) this.o.log.warn(`${cmd} exited but processes of its group still run; waiting for them`, { pgid });
      warned = true;
      await new Promise((res) => setTimeout(res, 25));
    }
  }

  /**
   * Run `kong <args>` in a process group of its own; stream its output into our log; never
   * through a shell. When `signal` aborts, the group gets `graceMs` to finish on its own, then
   * SIGTERM and SIGKILL. Returns only when no process of the group is left.
   */
  async run(args: string[], opts: RunOptions = {}): Promise<KongResult> {
    const start = Date.now();
    const confArgs = this.o.kong.confExplicit && this.o.kong.confPath ? ['-c', this.o.kong.confPath] : [];
    const child = execa(this.o.bin, [...args, ...confArgs], {
      env: childEnv(this.o.env, this.o.kong, this.getPrefix()),
      extendEnv: false,
      reject: false,
      stdin: 'ignore',
      detached: true,
      cwd: this.getPrefix(),
    });
    const cmd = `kong ${args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--')).join(' ')}`;
    if (!opts.quiet) this.stream(child, cmd);
    const pgid = child.pid;
    if (pgid !== undefined) trackGroup(pgid);
    const abort = this.armAbort(pgid, cmd, opts);
    const r = await child;
    await this.waitForGroup(pgid, cmd, abort.stopping);
    const stopping = abort.stopping();
    if (stopping && !(await stopping)) this.o.log.error(`a process of ${cmd}'s group did not stop after SIGKILL`, { pgid });
    abort.disarm();
    if (pgid !== undefined) untrackGroup(pgid);
    this.spawnError((r as unknown as { cause?: NodeJS.ErrnoException }).cause?.code);
    return {
      exitCode: typeof r.exitCode === 'number' ? r.exitCode : 1,
      stdout: scrub(String(r.stdout ?? '')),
      stderr: scrub(String(r.stderr ?? '')),
      durationMs: Date.now() - start,
      signal: r.signal ?? undefined,
      killed: stopping !== undefined,
    };
  }

  /** A Kong executable that cannot be started is a configuration error naming the fix. */
  private spawnError(code: string | undefined): void {
    if (code === 'ENOENT') {
      throw new InitError(
        ExitCode.CONFIG,
        `Kong executable "${this.o.bin}" not found${this.o.bin.includes('/') ? '' : ' on PATH'}; set --kong-bin or KONG_DB_INIT_KONG_BIN to the kong binary (run inside the Kong image)`,
      );
    }
    if (code === 'EACCES') {
      throw new InitError(
        ExitCode.CONFIG,
        `Kong executable "${this.o.bin}" is not executable (EACCES); fix its permissions or point --kong-bin at the real kong binary`,
      );
    }
  }

  /** `kong migrations <action>` with our --db-timeout/--lock-timeout, output streamed into the log. */
  migrations(action: 'bootstrap' | 'up' | 'finish', signal?: AbortSignal): Promise<KongResult> {
    return this.run(['migrations', action, ...(this.o.migrationArgs ?? [])], { signal, graceMs: this.o.graceMs });
  }

  async list(signal?: AbortSignal): Promise<SchemaState> {
    const r = await this.run(['migrations', 'list', ...(this.o.migrationArgs ?? [])], { signal, quiet: true });
    if (signal?.aborted) throw new Interrupted();
    try {
      return parseList(r.exitCode, r.stdout, r.stderr);
    } catch (e) {
      this.o.log.error('kong migrations list failed', { exit: r.exitCode, stderr: lastLines(r.stderr, 6) });
      throw e;
    }
  }

  async version(): Promise<string | undefined> {
    const r = await this.run(['version'], { quiet: true });
    return /(\d+\.\d+\.\d+[^\s]*)/.exec(r.stdout)?.[1];
  }
}
