/**
 * A real PgBouncer (Debian's `pgbouncer` package) in front of the test Postgres, for the pooler
 * tests: one process on 127.0.0.1 (a free port), its configuration and userlist in a temporary
 * directory of its own, its log on stderr (kept in memory, for failure messages).
 *
 * PgBouncer refuses to run as root: as root it is started with `user = nobody` (it drops to that
 * user after reading its configuration), and its directory belongs to that user.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './embedded.js';

/** The package that provides it, for messages. */
export const PGBOUNCER_FIX = 'install PgBouncer: `apt-get install -y pgbouncer` (Debian; .ci/run does it), or put `pgbouncer` on PATH / set KDI_PGBOUNCER_BIN';

/** The pgbouncer executable: KDI_PGBOUNCER_BIN when set (only it), else PATH or Debian's /usr/sbin/pgbouncer; or undefined. */
export function findPgBouncer(): string | undefined {
  const candidates = process.env.KDI_PGBOUNCER_BIN
    ? [process.env.KDI_PGBOUNCER_BIN]
    : [
        ...(process.env.PATH ?? '')
          .split(':')
          .filter(Boolean)
          .map((d) => path.join(d, 'pgbouncer')),
        '/usr/sbin/pgbouncer',
        '/usr/bin/pgbouncer',
      ];
  for (const p of candidates) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not this one
    }
  }
  return undefined;
}

/** `pgbouncer --version`'s first line, e.g. "PgBouncer 1.18.0". */
export function pgBouncerVersion(bin: string): string {
  return execFileSync(bin, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
}

export interface PgBouncerOptions {
  /** Where the server connections go (the test Postgres). */
  target: { host: string; port: number };
  poolMode: 'session' | 'transaction' | 'statement';
  /** The roles that may log in through it (plain passwords in the userlist; md5 with the client). */
  users: Array<{ user: string; password: string }>;
  /** More `[pgbouncer]` settings (name → value), e.g. server_round_robin. */
  settings?: Record<string, string | number>;
}

export interface PgBouncer {
  host: string;
  port: number;
  bin: string;
  version: string;
  /** Its log so far (stderr). */
  log(): string;
  /** Stop it (SIGTERM, then SIGKILL after 5 s), wait for it to exit, remove its directory. */
  stop(): Promise<void>;
}

function quote(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Start PgBouncer; resolves once it accepts connections (a port taken meanwhile: another port, up to 3 tries). */
export async function startPgBouncer(o: PgBouncerOptions): Promise<PgBouncer> {
  const bin = findPgBouncer();
  if (!bin) throw new Error(`pgbouncer not found: ${PGBOUNCER_FIX}`);
  const version = pgBouncerVersion(bin);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-pgbouncer-'));
  const asRoot = process.getuid?.() === 0;
  let lastError = '';
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const settings: Record<string, string | number> = {
        listen_addr: '127.0.0.1',
        listen_port: port,
        unix_socket_dir: '',
        auth_type: 'md5',
        auth_file: path.join(dir, 'userlist.txt'),
        pool_mode: o.poolMode,
        max_client_conn: 200,
        default_pool_size: 20,
        // what a client may send at startup beyond what PgBouncer tracks itself (node-postgres sends none)
        ignore_startup_parameters: 'extra_float_digits',
        ...(asRoot ? { user: 'nobody' } : {}),
        ...o.settings,
      };
      const ini = [
        '[databases]',
        `* = host=${o.target.host} port=${o.target.port}`,
        '',
        '[pgbouncer]',
        ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
        '',
      ].join('\n');
      fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), ini, { mode: 0o600 });
      fs.writeFileSync(path.join(dir, 'userlist.txt'), o.users.map((u) => `${quote(u.user)} ${quote(u.password)}`).join('\n') + '\n', { mode: 0o600 });
      if (asRoot) {
        const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
        const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
        for (const f of [dir, path.join(dir, 'pgbouncer.ini'), path.join(dir, 'userlist.txt')]) fs.chownSync(f, uid, gid);
      }
      fs.chmodSync(dir, 0o700);

      let log = '';
      const child = spawn(bin, [path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      child.on('error', (e) => (log += `spawn error: ${e.message}\n`));

      const end = Date.now() + 10_000;
      let up = false;
      while (Date.now() < end && child.exitCode === null && child.signalCode === null) {
        if (/process up/.test(log) && (await answers(port))) {
          up = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 25));
      }
      if (up) {
        return {
          host: '127.0.0.1',
          port,
          bin,
          version,
          log: () => log,
          async stop() {
            if (!(await exited(child, 0))) {
              child.kill('SIGTERM');
              if (!(await exited(child, 5000))) {
                child.kill('SIGKILL');
                await exited(child, 5000);
              }
            }
            fs.rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      child.kill('SIGKILL');
      await exited(child, 5000);
      lastError = log.trim().split('\n').slice(-5).join('\n');
      if (!/Address already in use|could not bind|bind\(\)/i.test(log)) break;
    }
    throw new Error(`pgbouncer (${version}) did not start:\n${lastError}`);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Make the pool of (database, user) hold `n` server connections: `n` clients through the pooler,
 * each inside a transaction at the same time (so each needs a server connection of its own), then
 * all closed. Returns the distinct backend pids seen. A pooler serving a fleet has such a pool;
 * with `server_round_robin = 1` consecutive transactions of one client then go to different ones.
 */
export async function warmPool(b: PgBouncer, login: { user: string; password: string; database: string }, n: number): Promise<number[]> {
  const clients = Array.from({ length: n }, () => new pg.Client({ host: b.host, port: b.port, ...login }));
  try {
    await Promise.all(clients.map((c) => c.connect()));
    await Promise.all(clients.map((c) => c.query('BEGIN')));
    const pids = await Promise.all(clients.map(async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid));
    await Promise.all(clients.map((c) => c.query('COMMIT')));
    return [...new Set(pids)];
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
}
