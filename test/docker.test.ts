/**
 * The image as a user runs it, with a Docker engine and the images `.ci/docker.sh up` builds:
 * our image (kong-db-init:ci), stand-ins for Kong (test/kong-standin in an image with /bin/sh and
 * Node) and Postgres (Debian's postgresql-15), and minbase Debian root filesystems for the glibc
 * matrix. Test names say which images ran. `KDI_KONG_IMAGE=kong:3.7.1` runs the same tests against
 * the real Kong images (kong:3.6 for the upgrade, postgres:15), where a registry is reachable.
 * In CI (CI=true or KDI_REQUIRE_DOCKER=1) a missing engine or image fails the suite; elsewhere
 * the suite is skipped with a one-line reason.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

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

async function docker(args: string[], timeout = 120_000) {
  return execa('docker', args, { reject: false, timeout, all: true });
}

/** Images not made here (KDI_KONG_IMAGE=kong:3.7.1 …) are pulled once when absent. */
async function present(image: string): Promise<boolean> {
  if ((await docker(['image', 'inspect', image], 20_000)).exitCode === 0) return true;
  if (image.startsWith('kdi-standin/') || image === IMAGE) return false;
  return (await docker(['pull', '-q', image], 600_000)).exitCode === 0;
}

async function missing(): Promise<string | undefined> {
  const info = await docker(['info', '--format', '{{.ServerVersion}}'], 20_000).catch(() => undefined);
  if (!info || info.exitCode !== 0) return 'no Docker engine (`docker info` failed; `.ci/docker.sh up` installs and starts one)';
  const images = [IMAGE, KONG, KONG_OLD, PG, ...GLIBC.map(([i]) => i)];
  const absent: string[] = [];
  for (const i of images) if (!(await present(i))) absent.push(i);
  return absent.length ? `images missing: ${absent.join(', ')} (build them with .ci/docker.sh up)` : undefined;
}

const reason = await missing();
if (reason && !REQUIRED) console.warn(`skipping the image suite: ${reason}`);

const cleanups: (() => Promise<unknown>)[] = [];
/** A directory the container's arbitrary uid can write, like an emptyDir (emptied as root afterwards). */
function sharedDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-docker-'));
  fs.chmodSync(d, 0o777);
  cleanups.push(async () => {
    await docker(['run', '--rm', '--network', 'none', '-v', `${d}:/d`, '--entrypoint', 'sh', GLIBC[1]![0], '-c', 'rm -rf /d/* /d/.[!.]*']);
    fs.rmSync(d, { recursive: true, force: true });
  });
  return d;
}
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** `install /kdi` from our image into a fresh host directory, as an OpenShift-style uid. */
async function installFromImage(dir = sharedDir()) {
  const r = await docker(['run', '--rm', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    '--user', '1000680000:0', '--network', 'none', '-v', `${dir}:/kdi`, IMAGE, 'install', '/kdi']);
  return { dir, r };
}

function lastJson(out: string): Record<string, unknown> {
  const line = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
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

describe.skipIf(reason)(`image ${IMAGE}`, () => {
  it('--version, --help, and help by default', async () => {
    const v = await docker(['run', '--rm', '--read-only', IMAGE, '--version']);
    expect(v.exitCode, v.all).toBe(0);
    expect(v.stdout).toMatch(/^kong-db-init \d+\.\d+\.\d+$/);
    for (const args of [['--help'], []]) {
      const h = await docker(['run', '--rm', '--read-only', IMAGE, ...args]);
      expect(h.exitCode, h.all).toBe(0);
      expect(h.stdout).toMatch(/^Usage: kong-db-init <command>/m);
      expect(h.stdout).toMatch(/^ {2}install +install DIR/m);
    }
  });

  it('runs as a non-root user and holds a stripped node with a C++ runtime for glibc 2.28', async () => {
    const u = await docker(['image', 'inspect', '--format', '{{.Config.User}}', IMAGE]);
    expect(u.stdout.trim()).toBe('65532:65532');
    const { dir, r } = await installFromImage();
    expect(r.exitCode, r.all).toBe(0);
    // the copy is the image's /opt/kong-db-init, so these are the image's files
    expect(glibcNeeded(path.join(dir, 'node'))).toBe(28);
    for (const lib of ['libstdc++.so.6', 'libgcc_s.so.1']) expect(glibcNeeded(path.join(dir, 'lib', lib)), lib).toBeLessThanOrEqual(28);
    const sections = sectionNames(path.join(dir, 'node'));
    expect(sections).toContain('.dynsym');
    expect(sections.filter((n) => n === '.symtab' || n.startsWith('.debug'))).toEqual([]);
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
    const r = await docker(['run', '--rm', '--read-only', '--network', 'none', '-e', 'KONG_DATABASE=off', IMAGE, 'migrate', '--status-file', '-']);
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stderr).toMatch(/KONG_DATABASE=off \(DB-less or hybrid data plane\): nothing to migrate/);
    expect(lastJson(r.stdout)).toMatchObject({ outcome: 'skipped', exit_code: 0 });
  });

  it('migrate against a Postgres it cannot reach exits 11 at its --deadline, without the password', async () => {
    const r = await docker(['run', '--rm', '--read-only', '--network', 'none', '-e', 'KONG_PG_HOST=127.0.0.1',
      '-e', `KONG_PG_PASSWORD=${PW}`, IMAGE, 'migrate', '--deadline', '3s', '--status-file', '-']);
    expect(r.exitCode, r.all).toBe(11);
    expect(lastJson(r.stdout)).toMatchObject({ outcome: 'failed', exit_code: 11 });
    expect(r.all).not.toContain(PW);
  });
});

describe.skipIf(reason)(`the installed copy under env -i in other root filesystems (${GLIBC.map(([i]) => i).join(', ')})`, () => {
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
    const r = await docker(['run', '--rm', '--network', 'none', '-v', `${dir}:/kdi:ro`, '--entrypoint', 'sh', image, '-c', script]);
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stdout).toContain(`glibc ${glibc}`);
    // without the image's libstdc++ the bare node cannot start: the launcher's fallback is what runs
    expect(r.stdout).toContain(own === 'with' ? 'bare-node-ok' : 'bare-node-fails');
    expect(r.stdout).toMatch(/^kong-db-init migrate: /m);
  });
});

describe.skipIf(reason)(`migrate from inside ${KONG_OLD} then ${KONG} (installed copy, ${PG})`, () => {
  const id = randomBytes(4).toString('hex');
  const net = `kdi-net-${id}`;
  const db = `kdi-pg-${id}`;
  let dir = '';
  beforeAll(async () => {
    const i = await installFromImage();
    expect(i.r.exitCode, i.r.all).toBe(0);
    dir = i.dir;
    expect((await docker(['network', 'create', net])).exitCode).toBe(0);
    cleanups.push(() => docker(['network', 'rm', net]));
    const pg = await docker(['run', '-d', '--name', db, '--network', net, '--network-alias', 'db',
      '-e', 'POSTGRES_USER=kong', '-e', `POSTGRES_PASSWORD=${PW}`, '-e', 'POSTGRES_DB=kong', PG]);
    expect(pg.exitCode, pg.all).toBe(0);
    cleanups.push(() => docker(['rm', '-f', db]));
  });

  /** Kong's container as the chart runs it: read-only root, an emptyDir on /tmp, our copy mounted. */
  const kongMigrate = (image: string) => docker(['run', '--rm', '--network', net, '--read-only', '--tmpfs', '/tmp',
    '--cap-drop', 'ALL', '-v', `${dir}:/kong-db-init:ro`, '-e', 'KONG_DATABASE=postgres', '-e', 'KONG_PG_HOST=db',
    '-e', `KONG_PG_PASSWORD=${PW}`, '--entrypoint', '/kong-db-init/kong-db-init', image,
    'migrate', '--deadline', '2m', '--status-file', '-'], 300_000);

  it(`${KONG_OLD} bootstraps (waiting for Postgres to start), ${KONG} runs up, a rerun does nothing`, { timeout: 900_000 }, async () => {
    const boot = await kongMigrate(KONG_OLD);
    expect(boot.exitCode, boot.all).toBe(0);
    expect(lastJson(boot.stdout)).toMatchObject({ outcome: 'ok', state_before: 'needs-bootstrap', state_after: 'up-to-date' });
    const up = await kongMigrate(KONG);
    expect(up.exitCode, up.all).toBe(0);
    const s = lastJson(up.stdout);
    expect(s).toMatchObject({ outcome: 'ok', state_before: 'new' });
    expect((s.actions as { action: string }[]).map((a) => a.action)).toContain('up');
    const again = await kongMigrate(KONG);
    expect(again.exitCode, again.all).toBe(0);
    expect(lastJson(again.stdout)).toMatchObject({ outcome: 'ok', actions: [] });
    for (const r of [boot, up, again]) expect(r.all).not.toContain(PW);
  });
});
