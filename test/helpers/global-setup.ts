/** Once per test run: build dist/ (the tests run the shipped program) and start a real Postgres. */
import { embeddedServer, type Server } from './embedded.js';
import { buildDist } from './build.js';

let server: Server | undefined;

export async function setup(): Promise<void> {
  buildDist();
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
