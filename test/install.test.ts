/** `install DIR`: the copy runs with an empty environment and only needs glibc from the image. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { CLI, createDb, listCode } from './helpers/harness.js';

async function installTo(): Promise<string> {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-install-')), 'bin');
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
    const libs = ldd.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
    for (const l of libs) expect(l).toMatch(/^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libstdc\+\+\.so\.6|libgcc_s\.so\.1|\/lib64\/ld-linux-x86-64\.so\.2|\/lib\/ld-linux-aarch64\.so\.1)$/);
    // the bundled C++ runtime is loadable in place of the image's own
    const bundled = await execa('env', ['-i', `LD_LIBRARY_PATH=${dir}/lib`, 'ldd', path.join(dir, 'node')], { env: {}, extendEnv: false });
    expect(bundled.stdout).toContain(`${dir}/lib/libstdc++.so.6`);
  });

  it('the installed copy migrates with nothing but Kong\'s own variables', async () => {
    const dir = await installTo();
    const db = await createDb();
    const env = db.env();
    const only = Object.entries(env).filter(([k]) => k.startsWith('KONG_') || k === 'PATH').map(([k, v]) => `${k}=${v}`);
    const r = await execa('env', ['-i', ...only, path.join(dir, 'kong-db-init'), 'migrate'], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
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
