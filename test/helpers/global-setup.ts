/**
 * Once per test run: build the program (the tests run the shipped bundle) into a directory of this
 * run's own, so that two runs on one machine never delete each other's build, and start a real
 * Postgres (or use TEST_DATABASE_URL).
 */
import fs from 'node:fs';
import path from 'node:path';
import { embeddedServer, type Server } from './embedded.js';
import { buildDist, ROOT } from './build.js';

let server: Server | undefined;
const outDir = path.join(ROOT, '.tmp', `test-dist-${process.pid}`);

export async function setup(): Promise<void> {
  if (process.env.KDI_PROBE === 'setup') throw new Error('probe: global setup fails on purpose');
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
  if (process.env.KDI_PROBE === 'teardown') throw new Error('probe: global teardown fails on purpose');
}
