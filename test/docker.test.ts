/**
 * The image as a user runs it, every container started through testcontainers: our image
 * (kong-db-init:ci), Postgres and the Kong images in a network of their own, and minbase Debian
 * root filesystems for the glibc matrix. By default the Kong and Postgres images are the stand-ins
 * `.ci/docker.sh up` builds (test/kong-standin in an image with /bin/sh and Node; Debian's
 * postgresql-15), and the test names say so. `KDI_KONG_IMAGE=kong:3.7.1` runs the same tests
 * against the real Kong images (kong:3.6 for the upgrade; KDI_KONG_OLD_IMAGE), and postgres:15
 * (KDI_PG_IMAGE), pulled when absent, where a registry is reachable.
 * In CI (CI=true or KDI_REQUIRE_DOCKER=1) a missing engine or image fails the suite; elsewhere
 * the suite is skipped with a one-line reason.
 *
 * Ryuk, testcontainers' reaper, is an image no registry here serves: it is off
 * (TESTCONTAINERS_RYUK_DISABLED=true unless set otherwise), and every container, network and
 * directory made here is removed by afterAll (containers as soon as their run is read).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import {
  GenericContainer,
  getContainerRuntimeClient,
  ImageName,
  Network,
  Wait,
  type StartedNetwork,
  type StartedTestContainer,
  type WaitStrategy,
} from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIMIT_MB, pushedSize } from '../bench/image-size.js';

process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';

const IMAGE = process.env.KDI_IMAGE ?? 'kong-db-init:ci';
const KONG = process.env.KDI_KONG_IMAGE ?? 'kdi-standin/kong:3.7.1';
const STANDIN = KONG.startsWith('kdi-standin/');
const KONG_OLD = process.env.KDI_KONG_OLD_IMAGE ?? (STANDIN ? 'kdi-standin/kong:3.6' : 'kong:3.6');
const PG = process.env.KDI_PG_IMAGE ?? (STANDIN ? 'kdi-standin/postgres:15' : 'postgres:15');
/** [image, its glibc]: the installed copy must run in both, with and without their libstdc++. */
const GLIBC: [string, string][] = [
  [process.env.KDI_BULLSEYE_IMAGE ?? 'kdi-standin/debian:bullseye', '2.31'],
  [process.env.KDI_BOOKWORM_IMAGE ?? 'kdi-standin/debian:bookworm', '2.36'],
];
const REQUIRED = process.env.CI === 'true' || process.env.KDI_REQUIRE_DOCKER === '1';
const PW = 'Dock3r-kong-pw-Xy7!';
/** Appended to every suite's name: which Kong and Postgres ran, and which of them were stand-ins. */
const STANDINS = [KONG_OLD, KONG, PG].filter((i) => i.startsWith('kdi-standin/'));
const AGAINST = STANDINS.length ? ` [against stand-in images: ${STANDINS.join(', ')}]` : ` [against ${KONG_OLD}, ${KONG}, ${PG}]`;

/** Images not made here (KDI_KONG_IMAGE=kong:3.7.1 …) are pulled once when absent. */
async function present(image: string): Promise<boolean> {
  const client = await getContainerRuntimeClient();
  const name = ImageName.fromString(image);
  if (await client.image.exists(name)) return true;
  if (image.startsWith('kdi-standin/') || image === IMAGE) return false;
  await client.image.pull(name).catch(() => undefined);
  return client.image.exists(name);
}

async function missing(): Promise<string | undefined> {
  try {
    await getContainerRuntimeClient();
  } catch (e) {
    return `no Docker engine (testcontainers: ${(e as Error).message.split('\n')[0]}; \`.ci/docker.sh up\` installs and starts one)`;
  }
  const images = [IMAGE, KONG, KONG_OLD, PG, ...GLIBC.map(([i]) => i)];
  const absent: string[] = [];
  for (const i of images) if (!(await present(i))) absent.push(i);
  if (!absent.length) return undefined;
  const made = absent.filter((i) => i.startsWith('kdi-standin/') || i === IMAGE);
  const pulled = absent.filter((i) => !made.includes(i));
  return `images missing: ${[made.length ? `${made.join(', ')} (build them with .ci/docker.sh up)` : '', pulled.length ? `${pulled.join(', ')} (could not pull them)` : ''].filter(Boolean).join('; ')}`;
}

const reason = await missing();
if (reason && !REQUIRED) console.warn(`skipping the image suite: ${reason}`);

/** Containers not yet removed (a failed test leaves some), then networks and directories. */
const live = new Set<StartedTestContainer>();
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  const warn = (e: Error) => console.warn(`cleanup: ${e.message}`);
  for (const c of live) await c.stop({ remove: true, timeout: 0 }).catch(warn);
  for (const c of cleanups.reverse()) await c().catch(warn);
});

/** GenericContainer with the `docker run` options testcontainers has no method for. */
class Container extends GenericContainer {
  /** --read-only */
  withReadOnlyRootFilesystem(): this {
    this.hostConfig.ReadonlyRootfs = true;
    return this;
  }

  /** --security-opt no-new-privileges */
  withNoNewPrivileges(): this {
    this.hostConfig.SecurityOpt = [...(this.hostConfig.SecurityOpt ?? []), 'no-new-privileges'];
    return this;
  }
}

/** Ready once the container has exited, whatever its status: one-shot runs read the status themselves. */
class UntilExited implements WaitStrategy {
  private timeoutMs = 120_000;
  private timeoutSet = false;

  async waitUntilReady(container: Parameters<WaitStrategy['waitUntilReady']>[0]): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`container ${container.id.slice(0, 12)} still running after ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      await Promise.race([container.wait(), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  withStartupTimeout(ms: number): this {
    this.timeoutMs = ms;
    this.timeoutSet = true;
    return this;
  }

  isStartupTimeoutSet(): boolean {
    return this.timeoutSet;
  }

  getStartupTimeout(): number {
    return this.timeoutMs;
  }
}

interface Run {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved as written */
  all: string;
}

/**
 * stdout and stderr of a container without a TTY: Docker's multiplexed frames (type, 3 zero bytes,
 * length). Like execa, without the final newline.
 */
function demux(buf: Buffer): Omit<Run, 'exitCode'> {
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], all: [] as Buffer[] };
  for (let i = 0; i + 8 <= buf.length; ) {
    const size = buf.readUInt32BE(i + 4);
    const chunk = buf.subarray(i + 8, i + 8 + size);
    (buf[i] === 2 ? out.stderr : out.stdout).push(chunk);
    out.all.push(chunk);
    i += 8 + size;
  }
  const text = (chunks: Buffer[]) =>
    Buffer.concat(chunks)
      .toString()
      .replace(/\r?\n$/, '');
  return { stdout: text(out.stdout), stderr: text(out.stderr), all: text(out.all) };
}

/** Track a started container: removed by afterAll unless removed before. */
function tracked(c: StartedTestContainer): StartedTestContainer {
  live.add(c);
  return c;
}

async function remove(c: StartedTestContainer): Promise<void> {
  live.delete(c);
  await c.stop({ remove: true, timeout: 0 });
}

/** The exit status and output of a container that has exited; the container is removed. */
async function finished(c: StartedTestContainer, timeoutMs = 120_000): Promise<Run> {
  const client = await getContainerRuntimeClient();
  const docker = client.container.getById(c.getId());
  await new UntilExited().withStartupTimeout(timeoutMs).waitUntilReady(docker);
  const state = (await docker.inspect()).State;
  const logs = demux((await docker.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer);
  await remove(c);
  return { exitCode: state.ExitCode, ...logs };
}

/** Run a container to its end, like `docker run --rm`: its exit status and output. */
async function run(container: Container, timeoutMs = 120_000): Promise<Run> {
  const c = tracked(await container.withWaitStrategy(new UntilExited()).withStartupTimeout(timeoutMs).start());
  return finished(c, timeoutMs);
}

/** Our image with these arguments, read-only and without a network unless changed. */
const ours = (...args: string[]) => new Container(IMAGE).withCommand(args).withReadOnlyRootFilesystem().withNetworkMode('none');

/** A directory the container's arbitrary uid can write, like an emptyDir (emptied as root afterwards). */
function sharedDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-docker-'));
  fs.chmodSync(d, 0o777);
  cleanups.push(async () => {
    await run(
      new Container(GLIBC[1]![0])
        .withNetworkMode('none')
        .withBindMounts([{ source: d, target: '/d', mode: 'rw' }])
        .withEntrypoint(['sh', '-c', 'rm -rf /d/* /d/.[!.]*']),
    );
    fs.rmSync(d, { recursive: true, force: true });
  });
  return d;
}

/** `install /kdi` from our image into a host directory, as an OpenShift-style uid. */
async function installFromImage(dir = sharedDir()) {
  const r = await run(
    ours('install', '/kdi')
      .withDroppedCapabilities('ALL')
      .withNoNewPrivileges()
      .withUser('1000680000:0')
      .withBindMounts([{ source: dir, target: '/kdi', mode: 'rw' }]),
  );
  return { dir, r };
}

function lastJson(out: string): Record<string, unknown> {
  const line = out
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  expect(line, out).toBeDefined();
  return JSON.parse(line!) as Record<string, unknown>;
}

/** The highest GLIBC_2.x symbol version a binary asks for (version-need names sit in .dynstr). */
function glibcNeeded(file: string): number {
  const buf = fs.readFileSync(file);
  let max = -1;
  for (let i = buf.indexOf('GLIBC_2.'); i >= 0; i = buf.indexOf('GLIBC_2.', i + 8)) {
    const m = /^\d+/.exec(buf.subarray(i + 8, i + 12).toString('latin1'));
    if (m) max = Math.max(max, Number(m[0]));
  }
  return max;
}

/** ELF section names (to tell a stripped binary: no .symtab, no .debug_*). */
function sectionNames(file: string): string[] {
  const b = fs.readFileSync(file);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const [size, count, strndx] = [b.readUInt16LE(0x3a), b.readUInt16LE(0x3c), b.readUInt16LE(0x3e)];
  const strtab = Number(b.readBigUInt64LE(shoff + strndx * size + 0x18));
  return Array.from({ length: count }, (_, i) => {
    const start = strtab + b.readUInt32LE(shoff + i * size);
    return b.subarray(start, b.indexOf(0, start)).toString('latin1');
  });
}

if (reason && REQUIRED) {
  describe('image suite in CI', () => {
    it('has a Docker engine and the images', () => {
      expect.fail(`${reason}`);
    });
  });
}

describe.skipIf(reason)(`image ${IMAGE}${AGAINST}`, () => {
  it('--version, --help, and help by default', async () => {
    const v = await run(ours('--version'));
    expect(v.exitCode, v.all).toBe(0);
    expect(v.stdout).toMatch(/^kong-db-init \d+\.\d+\.\d+$/);
    for (const args of [['--help'], []]) {
      const h = await run(args.length ? ours(...args) : new Container(IMAGE).withReadOnlyRootFilesystem().withNetworkMode('none'));
      expect(h.exitCode, h.all).toBe(0);
      expect(h.stdout).toMatch(/^Usage: kong-db-init <command>/m);
      expect(h.stdout).toMatch(/^ {2}install +install DIR/m);
    }
  });

  it('runs as a non-root user and holds a stripped node with a C++ runtime for glibc 2.28', async () => {
    const client = await getContainerRuntimeClient();
    expect((await client.image.inspect(ImageName.fromString(IMAGE))).Config.User).toBe('65532:65532');
    const { dir, r } = await installFromImage();
    expect(r.exitCode, r.all).toBe(0);
    // the copy is the image's /opt/kong-db-init, so these are the image's files
    expect(glibcNeeded(path.join(dir, 'node'))).toBe(28);
    for (const lib of ['libstdc++.so.6', 'libgcc_s.so.1']) expect(glibcNeeded(path.join(dir, 'lib', lib)), lib).toBeLessThanOrEqual(28);
    const sections = sectionNames(path.join(dir, 'node'));
    expect(sections).toContain('.dynsym');
    expect(sections.filter((n) => n === '.symtab' || n.startsWith('.debug'))).toEqual([]);
  });

  it("the image's node runs on the one C++ runtime, /opt/kong-db-init/lib's (no second copy in the base)", async () => {
    const script = `const fs = require('fs');
      const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/).pop()).filter((p) => /\\/lib(stdc\\+\\+|gcc_s)\\.so/.test(p));
      const copies = ['/lib', '/usr/lib', '/lib64', '/usr/lib64'].flatMap((d) => { try { return fs.readdirSync(d, { recursive: true }).map((f) => d + '/' + f); } catch { return []; } })
        .filter((f) => /\\/lib(stdc\\+\\+\\.so\\.6|gcc_s\\.so\\.1)/.test(f) && !fs.lstatSync(f).isSymbolicLink());
      console.log(JSON.stringify({ loaded: [...new Set(maps)].sort(), copies }));`;
    const r = await run(new Container(IMAGE).withEntrypoint(['/opt/kong-db-init/node', '-e', script]).withReadOnlyRootFilesystem().withNetworkMode('none'));
    expect(r.exitCode, r.all).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ loaded: ['/opt/kong-db-init/lib/libgcc_s.so.1', '/opt/kong-db-init/lib/libstdc++.so.6'], copies: [] });
  });

  it(`as pushed (each layer gzipped as docker push does) it is at most ${LIMIT_MB} MB: the 50 MB target less a 2 MB margin`, { timeout: 300_000 }, async () => {
    const s = await pushedSize(IMAGE);
    const table = s.layers.map((l) => `${(l.pushed / 1e6).toFixed(2)} MB  ${l.createdBy}`).join('\n');
    expect(s.pushedBytes, `${(s.pushedBytes / 1e6).toFixed(2)} MB as pushed (${s.tool}):\n${table}`).toBeLessThanOrEqual(LIMIT_MB * 1e6);
  });

  it('install DIR into a volume: --read-only, --cap-drop ALL, uid 1000680000:0, twice (stale chunks replaced)', async () => {
    const { dir, r } = await installFromImage();
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stderr).toMatch(/installed into \/kdi \(node v24\.[\d.]+, libgcc_s\.so\.1, libstdc\+\+\.so\.6\)/);
    expect(fs.readdirSync(dir).sort()).toEqual(['app', 'kong-db-init', 'lib', 'node']);
    expect(fs.statSync(path.join(dir, 'node')).uid).toBe(1000680000);
    const chunks = path.join(dir, 'app/chunks');
    const names = fs.readdirSync(chunks).sort();
    expect(names.length).toBeGreaterThan(0);
    const original = fs.readFileSync(path.join(chunks, names[0]!));
    // an earlier version's leftovers: a damaged chunk, a chunk the new bundle lacks, a stale launcher
    fs.writeFileSync(path.join(chunks, names[0]!), 'throw new Error("stale chunk");\n');
    fs.writeFileSync(path.join(chunks, 'old-deadbeef.js'), 'export {};\n');
    fs.writeFileSync(path.join(dir, 'kong-db-init'), '#!/bin/sh\nexit 99\n');
    const again = await installFromImage(dir);
    expect(again.r.exitCode, again.r.all).toBe(0);
    expect(fs.readdirSync(chunks).sort()).toEqual(names);
    expect(fs.readFileSync(path.join(chunks, names[0]!)).equals(original)).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const v = await execa('env', ['-i', path.join(dir, 'kong-db-init'), '--version'], { reject: false });
    expect(v.exitCode, v.stderr).toBe(0);
  });

  it('migrate with KONG_DATABASE=off exits 0 at once and says why', async () => {
    const r = await run(ours('migrate', '--status-file', '-').withEnvironment({ KONG_DATABASE: 'off' }));
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stderr).toMatch(/KONG_DATABASE=off \(DB-less or hybrid data plane\): nothing to (migrate|do for migrate)/);
    expect(lastJson(r.stdout)).toMatchObject({ outcome: 'skipped', exit_code: 0 });
  });

  it('migrate against a Postgres it cannot reach exits 11 at its --deadline, without the password', async () => {
    const r = await run(ours('migrate', '--deadline', '3s', '--status-file', '-').withEnvironment({ KONG_PG_HOST: '127.0.0.1', KONG_PG_PASSWORD: PW }));
    expect(r.exitCode, r.all).toBe(11);
    expect(lastJson(r.stdout)).toMatchObject({ outcome: 'failed', exit_code: 11 });
    expect(r.all).not.toContain(PW);
  });
});

describe.skipIf(reason)(`the installed copy under env -i in other root filesystems (${GLIBC.map(([i]) => i).join(', ')})${AGAINST}`, () => {
  let dir = '';
  beforeAll(async () => {
    const i = await installFromImage();
    expect(i.r.exitCode, i.r.all).toBe(0);
    dir = i.dir;
  });
  const cases = GLIBC.flatMap(([image, glibc]) => ['with', 'without'].map((own) => [image, glibc, own] as const));
  it.each(cases)('%s (glibc %s) %s its own libstdc++', async (image, glibc, own) => {
    const remove = own === 'with' ? '' : 'rm -f /usr/lib/*-linux-gnu/libstdc++.so.6* /lib/*-linux-gnu/libstdc++.so.6*; ';
    const script = `${remove}getconf GNU_LIBC_VERSION; if /kdi/node --version >/dev/null 2>&1; then echo bare-node-ok; else echo bare-node-fails; fi; exec env -i /kdi/kong-db-init migrate --help`;
    const r = await run(
      new Container(image)
        .withNetworkMode('none')
        .withBindMounts([{ source: dir, target: '/kdi', mode: 'ro' }])
        .withEntrypoint(['sh', '-c', script]),
    );
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stdout).toContain(`glibc ${glibc}`);
    // without the image's libstdc++ the bare node cannot start: the launcher's fallback is what runs
    expect(r.stdout).toContain(own === 'with' ? 'bare-node-ok' : 'bare-node-fails');
    expect(r.stdout).toMatch(/^kong-db-init migrate: /m);
  });
});

describe.skipIf(reason)(`migrate from inside ${KONG_OLD} then ${KONG} (installed copy, ${PG})${AGAINST}`, () => {
  let dir = '';
  let network: StartedNetwork;
  beforeAll(async () => {
    const i = await installFromImage();
    expect(i.r.exitCode, i.r.all).toBe(0);
    dir = i.dir;
    network = await new Network().start();
    cleanups.push(() => network.stop());
  });

  /** Kong's container as the chart runs it: read-only root, an emptyDir on /tmp, our copy mounted. */
  const kongMigrate = (image: string) =>
    new Container(image)
      .withNetwork(network)
      .withReadOnlyRootFilesystem()
      .withTmpFs({ '/tmp': 'rw' })
      .withDroppedCapabilities('ALL')
      .withBindMounts([{ source: dir, target: '/kong-db-init', mode: 'ro' }])
      .withEnvironment({ KONG_DATABASE: 'postgres', KONG_PG_HOST: 'db', KONG_PG_PASSWORD: PW })
      .withEntrypoint(['/kong-db-init/kong-db-init'])
      .withCommand(['migrate', '--deadline', '2m', '--status-file', '-']);

  it(`${KONG_OLD} bootstraps (started before Postgres, it waits for it), ${KONG} runs up, a rerun does nothing`, { timeout: 900_000 }, async () => {
    // Kong's container first: `db` does not even resolve yet, and migrate says it is waiting
    const booting = tracked(
      await kongMigrate(KONG_OLD)
        .withWaitStrategy(Wait.forLogMessage(/waiting for postgres/))
        .withStartupTimeout(120_000)
        .start(),
    );
    const pg = await new Container(PG)
      .withNetwork(network)
      .withNetworkAliases('db')
      .withEnvironment({ POSTGRES_USER: 'kong', POSTGRES_PASSWORD: PW, POSTGRES_DB: 'kong' })
      .withWaitStrategy(Wait.forSuccessfulCommand('pg_isready -h 127.0.0.1 -p 5432 -U kong -d kong'))
      .withStartupTimeout(180_000)
      .start();
    tracked(pg);
    const boot = await finished(booting, 300_000);
    expect(boot.exitCode, boot.all).toBe(0);
    expect(boot.all).toMatch(/postgres is ready/);
    expect(lastJson(boot.stdout)).toMatchObject({ outcome: 'ok', state_before: 'needs-bootstrap', state_after: 'up-to-date' });
    const up = await run(kongMigrate(KONG), 300_000);
    expect(up.exitCode, up.all).toBe(0);
    const s = lastJson(up.stdout);
    expect(s).toMatchObject({ outcome: 'ok', state_before: 'new' });
    expect((s.actions as { action: string }[]).map((a) => a.action)).toContain('up');
    const again = await run(kongMigrate(KONG), 300_000);
    expect(again.exitCode, again.all).toBe(0);
    expect(lastJson(again.stdout)).toMatchObject({ outcome: 'ok', actions: [] });
    for (const r of [boot, up, again]) expect(r.all).not.toContain(PW);
  });
});
