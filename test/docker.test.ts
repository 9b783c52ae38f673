/**
 * With a Docker engine only (skipped otherwise, with the reason): build our image, install the
 * program into a shared directory, and migrate a real PostgreSQL with the real Kong 3.7.1 image.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/harness.js';

function dockerEngine(): string | undefined {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 });
    return undefined;
  } catch {
    return 'no Docker engine (docker info failed)';
  }
}
const reason = dockerEngine();
if (reason) console.warn(`skipping the image / real Kong suite: ${reason}`);

describe.skipIf(reason)(`image and real Kong 3.7.1${reason ? ` (skipped: ${reason})` : ''}`, () => {
  it('builds, installs into a shared dir, and migrates Postgres from inside kong:3.7.1', { timeout: 900_000 }, async () => {
    const { GenericContainer, Network, Wait } = await import('testcontainers');
    const image = await GenericContainer.fromDockerfile(ROOT).build('kong-db-init:test', { deleteOnExit: false });
    const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-shared-'));
    fs.chmodSync(shared, 0o777);
    const inst = await image.withBindMounts([{ source: shared, target: '/kong-db-init' }]).withCommand(['install', '/kong-db-init']).withWaitStrategy(Wait.forOneShotStartup()).start();
    await inst.stop();
    const net = await new Network().start();
    const pg = await new GenericContainer('postgres:15').withNetwork(net).withNetworkAliases('db')
      .withEnvironment({ POSTGRES_USER: 'kong', POSTGRES_PASSWORD: 'kongpw', POSTGRES_DB: 'kong' }).start();
    const env = { KONG_DATABASE: 'postgres', KONG_PG_HOST: 'db', KONG_PG_PASSWORD: 'kongpw' };
    const kong = await new GenericContainer('kong:3.7.1').withNetwork(net).withEnvironment(env)
      .withBindMounts([{ source: shared, target: '/kong-db-init', mode: 'ro' }])
      .withEntrypoint(['/kong-db-init/kong-db-init']).withCommand(['migrate', '--status-file', '-'])
      .withWaitStrategy(Wait.forOneShotStartup()).withStartupTimeout(300_000).start();
    const logs = await kong.logs();
    let out = '';
    await new Promise<void>((resolve) => logs.on('data', (d: Buffer) => (out += d.toString())).on('end', resolve));
    expect(out).toMatch(/"outcome":"ok"/);
    expect(out).toMatch(/"state_after":"up-to-date"/);
    await pg.stop();
    await net.stop();
  });
});
