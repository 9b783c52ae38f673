/** Once per test run: build dist/ (the tests run the shipped program) and start a real Postgres. */
import { execFileSync } from 'node:child_process';
import { embeddedServer, type Server } from './embedded.js';

let server: Server | undefined;

export async function setup(): Promise<void> {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (process.env.TEST_DATABASE_URL) {
    process.env.KDI_TEST_PG_URL = process.env.TEST_DATABASE_URL;
    return;
  }
  server = await embeddedServer();
  process.env.KDI_TEST_PG_URL = `postgres://${server.user}:${encodeURIComponent(server.password)}@127.0.0.1:${server.port}/postgres`;
}

export async function teardown(): Promise<void> {
  await server?.destroy();
}
