/**
 * The verified-state identity (src/engine/identity.ts) on the layout of the official kong:3.7.1
 * image (test/fixtures/kong-image-layout), with custom plugins mounted from ConfigMaps the way the
 * kubelet mounts them (`..data -> ..<timestamp>`, `x -> ..data/x`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_LUA_ROOTS, IDENTITY_FORMAT, kongIdentity, loadedPlugins, luaPathRoots, type IdentityInput } from '../../src/engine/identity.js';
import type { Env } from '../../src/kong/config.js';

const LAYOUT = fileURLToPath(new URL('../fixtures/kong-image-layout', import.meta.url));
const KONG_LUA = '/usr/local/share/lua/5.1';
/** What the Kong chart sets when `plugins.configMaps` is used. */
const CHART_LUA_PACKAGE_PATH = '/opt/?.lua;/opt/?/init.lua;;';
const IMAGE_ENV: Env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', KONG_VERSION: '3.7.1' };

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A pod's file system: a copy of the image layout (its own inodes and mtimes). */
function pod(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-pod-'));
  tmpDirs.push(dir);
  fs.cpSync(LAYOUT, dir, { recursive: true });
  return dir;
}

function write(root: string, logical: string, text: string): void {
  const p = path.join(root, logical);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
}

/**
 * A ConfigMap volume as the kubelet's atomic writer lays it out at `mountPath`: the data in
 * `..<timestamp>/`, `..data -> ..<timestamp>`, and one `name -> ..data/name` link per top-level
 * entry (an item with a `/` in its path gives a directory behind a link). A second call is a
 * ConfigMap update: a new timestamp directory, `..data` swapped, the old one removed.
 */
function mountConfigMap(root: string, mountPath: string, items: Record<string, string>, timestamp: string): void {
  const dir = path.join(root, mountPath);
  fs.mkdirSync(dir, { recursive: true });
  const old = fs.readdirSync(dir).filter((n) => n.startsWith('..') && n !== '..data');
  const ts = `..${timestamp}`;
  for (const [rel, text] of Object.entries(items)) write(path.join(root, mountPath, ts), rel, text);
  fs.symlinkSync(ts, path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  for (const top of new Set(Object.keys(items).map((r) => r.split('/')[0]!))) {
    if (!fs.existsSync(path.join(dir, top))) fs.symlinkSync(`..data/${top}`, path.join(dir, top));
  }
  for (const o of old) fs.rmSync(path.join(dir, o), { recursive: true, force: true });
}

const MYHEADER = {
  'handler.lua': 'return { PRIORITY = 1000, VERSION = "1.0.0" }\n',
  'schema.lua': 'return { name = "myheader", fields = {} }\n',
  'migrations/init.lua': 'return { "000_base_myheader" }\n',
  'migrations/000_base_myheader.lua': 'return { postgres = { up = [[ CREATE TABLE IF NOT EXISTS myheader (id uuid PRIMARY KEY); ]] } }\n',
};

/** The chart's layout: the plugin's ConfigMap at /opt/kong/plugins/<name> (items with `migrations/...` paths). */
function withPlugin(root: string, timestamp: string, items: Record<string, string> = MYHEADER): string {
  mountConfigMap(root, '/opt/kong/plugins/myheader', items, timestamp);
  return root;
}

function identity(root: string, env: Env = {}, extra: Partial<IdentityInput> = {}): string {
  const confPath = fs.existsSync(path.join(root, 'etc/kong/kong.conf')) ? '/etc/kong/kong.conf' : undefined;
  return kongIdentity({ bin: 'kong', env: { ...IMAGE_ENV, ...env }, confPath, cwd: '/', fsRoot: root, ...extra });
}

const PLUGIN_ENV: Env = { KONG_LUA_PACKAGE_PATH: CHART_LUA_PACKAGE_PATH, KONG_PLUGINS: 'bundled,myheader' };

describe('kongIdentity on the kong:3.7.1 image layout', () => {
  it('carries a format version: records of an older format never match', () => {
    const id = identity(pod());
    expect(id).toMatch(new RegExp(`^${IDENTITY_FORMAT}:[0-9a-f]{64}$`));
    expect(IDENTITY_FORMAT).toBe('v2');
  });

  it('two pods with the same content get the same identity (fresh copies: other inodes, mtimes)', () => {
    expect(identity(pod())).toBe(identity(pod()));
  });

  it('identical content in two differently-timestamped ConfigMap mounts: same identity', () => {
    const a = withPlugin(pod(), '2026_12_07_10_00_00.123456789');
    const b = withPlugin(pod(), '2026_12_07_10_05_13.987654321');
    expect(identity(a, PLUGIN_ENV)).toBe(identity(b, PLUGIN_ENV));
    // an update of the ConfigMap with the same content (new timestamp, `..data` swapped) changes nothing either
    const before = identity(a, PLUGIN_ENV);
    withPlugin(a, '2026_12_08_09_00_00.000000001');
    expect(fs.readdirSync(path.join(a, 'opt/kong/plugins/myheader')).filter((n) => n.startsWith('..2026'))).toEqual(['..2026_12_08_09_00_00.000000001']);
    expect(identity(a, PLUGIN_ENV)).toBe(before);
    // and the plugin's migrations are counted (behind the `migrations -> ..data/migrations` directory link)
    const changed = withPlugin(pod(), '2026_12_07_10_00_00.123456789', { ...MYHEADER, 'migrations/000_base_myheader.lua': '-- other\n' });
    expect(identity(changed, PLUGIN_ENV)).not.toBe(before);
    expect(identity(pod(), PLUGIN_ENV)).not.toBe(before); // no plugin mounted
  });

  it("the chart's `subdirectories` layout too: a ConfigMap per directory, each file a link", () => {
    const mount = (root: string, ts: string, mig: string) => {
      mountConfigMap(root, '/opt/kong/plugins/myheader', { 'handler.lua': MYHEADER['handler.lua'], 'schema.lua': MYHEADER['schema.lua'] }, ts);
      mountConfigMap(root, '/opt/kong/plugins/myheader/migrations', { 'init.lua': MYHEADER['migrations/init.lua'], '000_base_myheader.lua': mig }, ts);
      return root;
    };
    const m = MYHEADER['migrations/000_base_myheader.lua'];
    const a = identity(mount(pod(), '2026_12_07_10_00_00.123456789', m), PLUGIN_ENV);
    expect(identity(mount(pod(), '2026_12_07_11_11_11.111111111', m), PLUGIN_ENV)).toBe(a);
    expect(identity(mount(pod(), '2026_12_07_11_11_11.111111111', `${m}-- 001 added\n`), PLUGIN_ENV)).not.toBe(a);
  });

  it('a changed custom plugin migration (ConfigMap updated, pod template unchanged): different identity', () => {
    const root = withPlugin(pod(), '2026_12_07_10_00_00.123456789');
    const before = identity(root, PLUGIN_ENV);
    withPlugin(root, '2026_12_07_10_30_00.000000000', {
      ...MYHEADER,
      'migrations/init.lua': 'return { "000_base_myheader", "001_add_column" }\n',
      'migrations/001_add_column.lua': 'return { postgres = { up = [[ ALTER TABLE myheader ADD COLUMN x text; ]] } }\n',
    });
    expect(identity(root, PLUGIN_ENV)).not.toBe(before);
  });

  it('a plugin root named only in kong.conf `lua_package_path` is counted', () => {
    const conf = (root: string) => {
      write(
        root,
        '/etc/kong/kong.conf',
        `${fs.readFileSync(path.join(root, 'etc/kong/kong.conf.default'), 'utf8')}\nplugins = bundled,audit\nlua_package_path = /srv/kong-plugins/?.lua;/srv/kong-plugins/?/init.lua;;\n`,
      );
      write(root, '/srv/kong-plugins/kong/plugins/audit/handler.lua', 'return {}\n');
      write(root, '/srv/kong-plugins/kong/plugins/audit/migrations/init.lua', 'return { "000_base_audit" }\n');
      write(root, '/srv/kong-plugins/kong/plugins/audit/migrations/000_base_audit.lua', 'return { postgres = { up = "" } }\n');
      return root;
    };
    const a = conf(pod());
    const before = identity(a);
    expect(identity(conf(pod()))).toBe(before);
    write(a, '/srv/kong-plugins/kong/plugins/audit/migrations/001_more.lua', 'return { postgres = { up = "" } }\n');
    expect(identity(a)).not.toBe(before);
    // KONG_LUA_PACKAGE_PATH replaces the conf's value, as in Kong: then that root is not searched
    const env = { KONG_LUA_PACKAGE_PATH: '/elsewhere/?.lua;;' };
    const b = conf(pod());
    const envBefore = identity(b, env);
    write(b, '/srv/kong-plugins/kong/plugins/audit/migrations/001_more.lua', 'return { postgres = { up = "" } }\n');
    expect(identity(b, env)).toBe(envBefore);
  });

  it('a changed core migration in a nested folder (kong/db/migrations/core/*.lua): different identity', () => {
    const root = pod();
    const before = identity(root);
    fs.appendFileSync(path.join(root, KONG_LUA, 'kong/db/migrations/core/023_360_to_370.lua'), '-- patched\n');
    expect(identity(root)).not.toBe(before);
    const other = pod();
    write(other, `${KONG_LUA}/kong/db/migrations/core/024_370_to_380.lua`, 'return {}\n');
    expect(identity(other)).not.toBe(before);
    const plugin = pod();
    fs.appendFileSync(path.join(plugin, KONG_LUA, 'kong/plugins/acl/migrations/004_212_to_213.lua'), '-- patched\n');
    expect(identity(plugin)).not.toBe(before);
  });

  it('the image roots count without any setting: OpenResty site/lualib, `./` (the working directory)', () => {
    const before = identity(pod());
    const site = pod();
    write(site, '/usr/local/openresty/site/lualib/kong/plugins/sitewide/migrations/000_base_sitewide.lua', 'return {}\n');
    expect(identity(site)).not.toBe(before);
    const cwd = pod();
    write(cwd, '/kong/plugins/local/migrations/000_base_local.lua', 'return {}\n');
    expect(identity(cwd)).not.toBe(before);
  });

  it('files that are no migrations (handlers, schemas) do not count; the plugin list does', () => {
    const root = pod();
    const before = identity(root);
    fs.appendFileSync(path.join(root, KONG_LUA, 'kong/plugins/acl/handler.lua'), '-- patched\n');
    expect(identity(root)).toBe(before);
    expect(identity(root, { KONG_PLUGINS: 'bundled,myheader' })).not.toBe(before);
    write(root, '/etc/kong/kong.conf', 'plugins = bundled,myheader\n');
    expect(identity(root)).not.toBe(before);
  });

  it('kong.conf and the Kong executable count; passwords and our own settings do not', () => {
    const root = pod();
    const before = identity(root);
    expect(identity(root, { KONG_PG_PASSWORD: 'x' })).toBe(before);
    expect(identity(root, { KONG_DB_INIT_DEADLINE: '5m' })).toBe(before);
    expect(identity(root, { KONG_PG_HOST: 'db' })).not.toBe(before);
    fs.appendFileSync(path.join(root, 'usr/local/bin/kong'), '-- other\n');
    expect(identity(root)).not.toBe(before);
  });

  it('a symbolic link cycle under a migrations folder ends', () => {
    const root = withPlugin(pod(), '2026_12_07_10_00_00.123456789');
    fs.symlinkSync('..', path.join(root, KONG_LUA, 'kong/db/migrations/core/loop'));
    expect(identity(root, PLUGIN_ENV)).toMatch(/^v2:/);
  });

  it('a setting that is a vault reference never matches (the roots it names are unknown)', () => {
    const root = pod();
    const env = { KONG_LUA_PACKAGE_PATH: '{vault://env/lua-path}' };
    expect(identity(root, env)).not.toBe(identity(root, env));
  });

  it('is cheap: measured on the image layout with a ConfigMap plugin and ~900 other Lua files under kong/', () => {
    const root = withPlugin(pod(), '2026_12_07_10_00_00.123456789');
    // the real image has ~900 Lua files under kong/; the identity reads none but the migration folders
    for (let i = 0; i < 800; i++) write(root, `${KONG_LUA}/kong/${['db/schema', 'runloop', 'pdk', 'tools'][i % 4]}/filler_${i}.lua`, `return ${i}\n`);
    identity(root, PLUGIN_ENV); // warm the page cache, as a restarted pod has it
    const runs = 20;
    const t0 = performance.now();
    for (let i = 0; i < runs; i++) identity(root, PLUGIN_ENV);
    const ms = (performance.now() - t0) / runs;
    console.log(`kongIdentity on the kong:3.7.1 layout (+ ConfigMap plugin, 800 filler files): ${ms.toFixed(2)} ms per call (mean of ${runs})`);
    expect(ms).toBeLessThan(250);
  });
});

describe('Lua path roots', () => {
  it("`;;` stands for the image's default roots; relative templates resolve against the working directory", () => {
    expect(luaPathRoots('/opt/?.lua;/opt/?/init.lua', '/')).toEqual(['/opt/', '/opt/']);
    expect(luaPathRoots('./?.lua;./?/init.lua;', '/work')).toEqual(['/work/', '/work/']);
    expect(luaPathRoots('/opt/?.lua;;', '/')).toEqual(['/opt/', ...DEFAULT_LUA_ROOTS.map((r) => (r === './' ? '/' : r))]);
    expect(luaPathRoots('/srv/x_?.lua', '/')).toEqual(['/srv/x_']);
    expect(DEFAULT_LUA_ROOTS).toEqual(
      expect.arrayContaining(['/usr/local/share/lua/5.1/', '/usr/local/openresty/lualib/', '/usr/local/openresty/site/lualib/']),
    );
  });

  it("plugins: Kong's loaded_plugins rules", () => {
    expect(loadedPlugins('bundled')).toEqual(['bundled']);
    expect(loadedPlugins(' myheader , bundled,myheader')).toEqual(['bundled', 'myheader']);
    expect(loadedPlugins('off')).toEqual([]);
    expect(loadedPlugins('off,myheader')).toEqual([]);
  });
});
