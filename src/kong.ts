/** Running Kong's own CLI (`kong migrations …`) with execa, and parsing what `list` prints. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { execa } from 'execa';
import type { Env, KongPg } from './config.js';
import { ExitCode, InitError } from './errors.js';
import type { Logger } from './log.js';
import type { Migrations, SchemaState } from './plan.js';

export const NOT_LEADER = 'aborted: another node is performing database changes';
/**
 * What `kong migrations up` prints when Kong's own `locks` row stayed held for its whole
 * --lock-timeout (its wait loop gives up with this error instead of "aborted").
 */
export const KONG_LOCK_WAIT_TIMEOUT = /^Error: \[PostgreSQL error\] timeout\s*$/m;
/** PostgreSQL errors that a concurrent Kong bootstrap (not ours) can cause; retrying heals them. */
export const RACE_ERRORS = [/tuple concurrently updated/, /failed to bootstrap database: .*already exists/, /duplicate key value violates unique constraint "pg_type_typname_nsp_index"/];

/** Parse `kong migrations list` output into a typed state. Throws when the exit status is not 0/3/4/5. */
export function parseList(exitCode: number, stdout: string, stderr = ''): SchemaState {
  if (![0, 3, 4, 5].includes(exitCode)) {
    throw new InitError(ExitCode.KONG_FAILED, `\`kong migrations list\` exited ${exitCode}: ${lastLines(stderr || stdout, 6)}`);
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
      if (m) section[m[1]!] = m[2]!.split(',').map((s) => s.trim()).filter(Boolean);
    }
  }
  return state;
}

export function lastLines(text: string, n: number): string {
  return text.trim().split(/\r?\n/).filter((l) => l.trim() !== '').slice(-n).join(' | ');
}

export interface KongResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  signal?: string;
}

export interface KongRunnerOptions {
  bin: string;
  kong: KongPg;
  env: Env;
  log: Logger;
  graceMs: number;
  /** Extra arguments for every `kong migrations` call (timeouts). */
  migrationArgs?: string[];
}

/** Environment for the Kong child: ours, with the resolved password and a private prefix. */
export function childEnv(env: Env, k: KongPg, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(env)) if (v !== undefined) out[key] = v;
  delete out.KONG_PG_PASSWORD_FILE;
  if (k.password !== undefined) out.KONG_PG_PASSWORD = k.password;
  out.KONG_PREFIX = prefix;
  return out;
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

  /** Run `kong <args>`; stream its output into our log; never through a shell. */
  async run(args: string[], opts: { signal?: AbortSignal; quiet?: boolean } = {}): Promise<KongResult> {
    const start = Date.now();
    const confArgs = this.o.kong.confExplicit && this.o.kong.confPath ? ['-c', this.o.kong.confPath] : [];
    const fullArgs = [...args, ...confArgs];
    const child = execa(this.o.bin, fullArgs, {
      env: childEnv(this.o.env, this.o.kong, this.getPrefix()),
      extendEnv: false,
      reject: false,
      stdin: 'ignore',
      cancelSignal: opts.signal,
      forceKillAfterDelay: this.o.graceMs,
      cwd: this.getPrefix(),
    });
    const cmd = `kong ${args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--')).join(' ')}`;
    if (!opts.quiet) {
      for (const [stream, level] of [[child.stdout, 'info'], [child.stderr, 'warn']] as const) {
        if (!stream) continue;
        readline.createInterface({ input: stream }).on('line', (line) => {
          if (line.trim() !== '') this.o.log[level === 'info' ? 'info' : 'warn'](`[${cmd}] ${line}`);
        });
      }
    }
    const r = await child;
    const cause = (r as unknown as { cause?: NodeJS.ErrnoException }).cause;
    const code = cause?.code;
    if (code === 'ENOENT') {
      throw new InitError(ExitCode.CONFIG, `Kong executable "${this.o.bin}" not found${this.o.bin.includes('/') ? '' : ' on PATH'}; set --kong-bin or KONG_DB_INIT_KONG_BIN to the kong binary (run inside the Kong image)`);
    }
    if (code === 'EACCES') {
      throw new InitError(ExitCode.CONFIG, `Kong executable "${this.o.bin}" is not executable (EACCES); fix its permissions or point --kong-bin at the real kong binary`);
    }
    return {
      exitCode: typeof r.exitCode === 'number' ? r.exitCode : 1,
      stdout: String(r.stdout ?? ''),
      stderr: String(r.stderr ?? ''),
      durationMs: Date.now() - start,
      signal: r.signal ?? undefined,
    };
  }

  /** `kong migrations <action>` with our --db-timeout/--lock-timeout, output streamed into the log. */
  migrations(action: 'bootstrap' | 'up' | 'finish', signal?: AbortSignal): Promise<KongResult> {
    return this.run(['migrations', action, ...(this.o.migrationArgs ?? [])], { signal });
  }

  async list(signal?: AbortSignal): Promise<SchemaState> {
    const r = await this.run(['migrations', 'list', ...(this.o.migrationArgs ?? [])], { signal, quiet: true });
    if (signal?.aborted) throw new InitError(ExitCode.INTERRUPTED, 'interrupted');
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
