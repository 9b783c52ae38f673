/** `install DIR`: the copy runs with an empty environment and only needs glibc from the image. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { libraryPlan, runtimeLibraries, soname, staleChunks } from '../src/commands/install.js';
import { CLI, createDb, listCode, seed, until } from './helpers/harness.js';

const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

async function installTo(): Promise<string> {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-install-'));
  made.push(top);
  const dir = path.join(top, 'bin');
  const r = await execa(process.execPath, [CLI, 'install', dir], { reject: false });
  expect(r.exitCode, r.stderr).toBe(0);
  return dir;
}

describe('install DIR', () => {
  it('copies the launcher, the program, the Node runtime and its C++ runtime libraries', async () => {
    const dir = await installTo();
    expect(fs.readdirSync(dir).sort()).toEqual(['app', 'kong-db-init', 'lib', 'node']);
    expect(fs.readdirSync(path.join(dir, 'app')).sort()).toEqual(['chunks', 'cli.js', 'package.json']);
    expect(fs.statSync(path.join(dir, 'kong-db-init')).mode & 0o111).not.toBe(0);
    expect(fs.readdirSync(path.join(dir, 'lib')).sort()).toEqual(['libgcc_s.so.1', 'libstdc++.so.6']);
  });

  it('runs under env -i (no PATH, no HOME), and links only against glibc and the C++ runtime', async () => {
    const dir = await installTo();
    const v = await execa('env', ['-i', path.join(dir, 'kong-db-init'), '--version'], { reject: false });
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/^kong-db-init \d+\.\d+\.\d+/);
    const h = await execa('env', ['-i', path.join(dir, 'kong-db-init'), 'migrate', '--help'], { reject: false });
    expect(h.stdout).toMatch(/--finish/);
    const ldd = await execa('ldd', [path.join(dir, 'node')]);
    console.log(`what the installed node links against:\n${ldd.stdout}`);
    const libs = ldd.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0]!)
      .filter(Boolean);
    for (const l of libs)
      expect(l).toMatch(
        /^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libstdc\+\+\.so\.6|libgcc_s\.so\.1|\/lib64\/ld-linux-x86-64\.so\.2|\/lib\/ld-linux-aarch64\.so\.1)$/,
      );
    // the bundled C++ runtime is loadable in place of the image's own
    const bundled = await execa('env', ['-i', `LD_LIBRARY_PATH=${dir}/lib`, 'ldd', path.join(dir, 'node')], { env: {}, extendEnv: false });
    expect(bundled.stdout).toContain(`${dir}/lib/libstdc++.so.6`);
  });

  it("the installed copy migrates with nothing but Kong's own variables", async () => {
    const dir = await installTo();
    const db = await createDb();
    const env = db.env();
    const only = Object.entries(env)
      .filter(([k]) => k.startsWith('KONG_') || k === 'PATH')
      .map(([k, v]) => `${k}=${v}`);
    const r = await execa('env', ['-i', ...only, path.join(dir, 'kong-db-init'), 'migrate'], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
  });

  it('the finish sidecar (--then-idle) through the launcher: Node exits once finish is done, a shell idles, SIGTERM stops it at once', async () => {
    const dir = await installTo();
    const db = await createDb();
    await seed(db, 'pending');
    const env = Object.entries(db.env())
      .filter(([k]) => k.startsWith('KONG_') || k === 'PATH')
      .map(([k, v]) => `${k}=${v}`);
    const child = execa('env', ['-i', ...env, path.join(dir, 'kong-db-init'), 'finish', '--then-idle', '--rollout=skip'], { reject: false });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    await until(() => /kong migrations finish done/.test(err), 30_000, 'finish to be done');
    // the launcher's shell is left, with a sleep; no Node process any more
    const tree = () => execa('ps', ['-o', 'pid=,rss=,comm=', '--ppid', String(child.pid)], { reject: false }).then((r) => r.stdout);
    await until(async () => !/\bnode\b/.test(await tree()), 10_000, 'node to exit');
    expect(await tree()).toMatch(/\bsleep\b/);
    const rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]);
    console.log(`idle finish sidecar: the launcher shell's RSS ${rss} kB (node exited)`);
    expect(await listCode(db)).toBe(0);
    const t = Date.now();
    child.kill('SIGTERM');
    const r = await child;
    console.log(`stopped ${Date.now() - t} ms after SIGTERM`);
    expect(r.exitCode).toBe(0);
    expect(await tree()).toBe('');
  });

  it('installing over an earlier copy replaces damaged files and removes chunks the new bundle lacks', async () => {
    const dir = await installTo();
    const chunks = path.join(dir, 'app/chunks');
    const names = fs.readdirSync(chunks).sort();
    const original = fs.readFileSync(path.join(chunks, names[0]!));
    fs.writeFileSync(path.join(chunks, names[0]!), 'throw new Error("stale chunk");\n');
    fs.writeFileSync(path.join(chunks, 'old-deadbeef.js'), 'export {};\n');
    fs.writeFileSync(path.join(dir, 'kong-db-init'), '#!/bin/sh\nexit 99\n');
    const r = await execa(process.execPath, [CLI, 'install', dir], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readdirSync(chunks).sort()).toEqual(names);
    expect(fs.readFileSync(path.join(chunks, names[0]!)).equals(original)).toBe(true);
    expect(fs.readdirSync(dir).sort()).toEqual(['app', 'kong-db-init', 'lib', 'node']);
    const v = await execa('env', ['-i', path.join(dir, 'kong-db-init'), '--version'], { reject: false });
    expect(v.exitCode, v.stderr).toBe(0);
  });

  it("an installed copy ships its own lib/ again (the image's old C++ runtime), not the loaded one", async () => {
    const first = await installTo();
    fs.writeFileSync(path.join(first, 'lib', 'libstdc++.so.6'), "marker: the copy's own library\n");
    const second = path.join(path.dirname(first), 'again');
    const r = await execa(path.join(first, 'node'), [path.join(first, 'app/cli.js'), 'install', second], { reject: false, env: { LD_LIBRARY_PATH: '' } });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(second, 'lib', 'libstdc++.so.6'), 'utf8')).toBe("marker: the copy's own library\n");
  });

  it.each([
    [[], /usage: kong-db-init install DIR/],
    [['/etc/hostname/sub'], /cannot write to \/etc\/hostname\/sub \(ENOTDIR\); mount a writable emptyDir there/],
  ])('bad input %j → exit 2 with the fix', async (args, re) => {
    const r = await execa(process.execPath, [CLI, 'install', ...args], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(re);
  });
});

describe('install: which files', () => {
  const maps = [
    '7f00-7f01 r-xp 00000000 fd:01 1 /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30',
    '7f01-7f02 r--p 00000000 fd:01 1 /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30',
    '7f02-7f03 r-xp 00000000 fd:01 2 /lib/x86_64-linux-gnu/libgcc_s.so.1',
    '7f03-7f04 r-xp 00000000 fd:01 3 /lib/x86_64-linux-gnu/libc.so.6',
    '7f04-7f05 rw-p 00000000 00:00 0 [heap]',
  ].join('\n');

  it('the loaded C++ runtime, once each, under the names the loader asks for', () => {
    expect(runtimeLibraries(maps)).toEqual(['/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30', '/lib/x86_64-linux-gnu/libgcc_s.so.1']);
    expect(runtimeLibraries(maps).map(soname)).toEqual(['libstdc++.so.6', 'libgcc_s.so.1']);
  });

  it("an installed copy's own lib/ wins over the loaded libraries; without a libstdc++ there, the loaded ones", () => {
    expect(libraryPlan('/opt/kdi', ['libstdc++.so.6', 'libgcc_s.so.1', 'README'], maps)).toEqual(['/opt/kdi/lib/libgcc_s.so.1', '/opt/kdi/lib/libstdc++.so.6']);
    expect(libraryPlan('/usr/bin', undefined, maps)).toEqual(['/lib/x86_64-linux-gnu/libgcc_s.so.1', '/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30']);
    expect(libraryPlan('/usr/bin', ['libgcc_s.so.1'], maps)).toHaveLength(2);
    expect(libraryPlan('/usr/bin', undefined, undefined)).toEqual([]);
  });

  it('chunks of an earlier install that the new bundle lacks are stale', () => {
    expect(staleChunks(['a-1.js', 'b-2.js', 'b-1.js'], ['a-1.js', 'b-2.js'])).toEqual(['b-1.js']);
    expect(staleChunks([], ['a.js'])).toEqual([]);
  });
});
