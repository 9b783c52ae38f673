/**
 * The identity of this pod's Kong, as far as migrations go: two pods with the same identity know
 * the same set of migrations, so a state one of them verified with `kong migrations list` holds
 * for the other while `schema_meta` is unchanged.
 *
 * It depends on content only, never on where the bytes happen to sit: for every Lua root Kong
 * searches (the `lua_package_path` in effect, from KONG_LUA_PACKAGE_PATH, else kong.conf, else
 * Kong's default `./?.lua;./?/init.lua;`; KONG_LUA_PATH_OVERRIDE; the image's default roots, which
 * also stand for `;;`; LUA_PATH), in Kong's search order, the files Kong can load migrations from
 * (`kong/db/migrations/**`, `kong/plugins/<name>/migrations/**` and `migrations.lua`,
 * `kong/meta.lua`, `kong/constants.lua` with the bundled plugin list), each as its path relative to
 * the root and its bytes. Symbolic links are followed (a Kubernetes ConfigMap mount is
 * `x.lua -> ..data/x.lua`, `..data -> ..2026_12_07_10_00_00.123456789`) and the `..`-prefixed
 * internals of such a mount are skipped, so two pods with the same ConfigMap content get the same
 * identity whatever their mounts' timestamps. Also the Kong executable's bytes, kong.conf, the
 * plugins Kong loads (`plugins`), and every KONG_* setting but passwords.
 *
 * Anything it cannot read or resolve makes the identity differ, never match: the cost of a wrong
 * "differ" is one `kong migrations list`; a wrong "match" lets `kong start` refuse to start.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseKongConf, type Env } from '../kong/config.js';
import { isReference } from '../kong/vault.js';

/** Prefixed to every identity; bump it whenever what goes into the digest changes, so that records of an older format never match. */
export const IDENTITY_FORMAT = 'v2';

/** Kong 3.7.1's default `lua_package_path` (kong/templates/kong_defaults.lua). */
export const KONG_DEFAULT_LUA_PACKAGE_PATH = './?.lua;./?/init.lua;';

/**
 * The Lua roots of Kong's images when nothing else is set, in search order: ngx_lua's default
 * (OpenResty's site/lualib and lualib), then LuaJIT's compiled default (`./`, the LuaJIT share
 * directory, /usr/local/share/lua/5.1 where the Kong package installs `kong/`, LUA_ROOT's share;
 * Kong builds LuaJIT with LUA_ROOT=/usr/local/openresty/luajit). The official image sets no LUA_PATH.
 * Kong appends them to its `lua_package_path` (`kong migrations` prepends its path to resty's
 * default; the nginx template writes `${{LUA_PACKAGE_PATH}};;`), so they are always searched.
 */
export const DEFAULT_LUA_ROOTS = [
  '/usr/local/openresty/site/lualib/',
  '/usr/local/openresty/lualib/',
  './',
  '/usr/local/openresty/luajit/share/luajit-2.1/',
  '/usr/local/openresty/luajit/share/luajit-2.1.0-beta3/',
  '/usr/local/share/lua/5.1/',
  '/usr/local/openresty/luajit/share/lua/5.1/',
];

const DEFAULT_MARK = '\u0001';

/**
 * The root prefixes a Lua path names, in order: each template's text before `?`
 * (`/opt/?.lua` and `/opt/?/init.lua` give `/opt/`), relative ones resolved against `cwd`;
 * `;;` stands for `defaults` (as in Lua and ngx_lua).
 */
export function luaPathRoots(luaPath: string | undefined, cwd: string, defaults: readonly string[] = DEFAULT_LUA_ROOTS): string[] {
  const out: string[] = [];
  for (const raw of (luaPath ?? '').replaceAll(';;', `;${DEFAULT_MARK};`).split(';')) {
    const entry = raw.trim();
    if (entry === DEFAULT_MARK) {
      out.push(...defaults.map((d) => rootOf(d, cwd)).filter((r): r is string => r !== undefined));
      continue;
    }
    const r = rootOf(entry, cwd);
    if (r !== undefined) out.push(r);
  }
  return out;
}

function rootOf(entry: string, cwd: string): string | undefined {
  if (entry === '') return undefined;
  const q = entry.indexOf('?');
  const prefix = q < 0 ? entry : entry.slice(0, q); // a default root is written as a directory ("/dir/")
  if (q < 0 && !prefix.endsWith('/')) return undefined; // not a template: Lua would open that one file
  const abs = prefix.startsWith('/') ? prefix : `${cwd.replace(/\/+$/, '')}/${prefix}`;
  const norm = path.posix.normalize(abs);
  return prefix === '' || prefix.endsWith('/') ? norm.replace(/\/*$/, '/') : norm;
}

/** Logical paths (as Kong sees them) mapped onto the file system; `fsRoot` re-roots them (tests). */
interface View {
  phys(p: string): string;
}

function viewOf(fsRoot: string | undefined): View {
  if (!fsRoot || fsRoot === '/') return { phys: (p) => p };
  return { phys: (p) => path.join(fsRoot, p) };
}

/** The executable `bin` resolves to (PATH lookup like execvp), as a logical path, or undefined. */
export function resolveBin(bin: string, env: Env, fsRoot?: string): string | undefined {
  const v = viewOf(fsRoot);
  const candidates = bin.includes('/')
    ? [bin]
    : (env.PATH ?? '')
        .split(':')
        .filter(Boolean)
        .map((d) => path.join(d, bin));
  for (const c of candidates) {
    try {
      fs.accessSync(v.phys(c), fs.constants.X_OK);
      if (fs.statSync(v.phys(c)).isFile()) return c;
    } catch {
      // next
    }
  }
  return undefined;
}

/** A value no other pod can produce: what could not be read never makes two identities match. */
const unique = (what: string) => `unreadable:${what}:${randomUUID()}`;

const absent = (e: unknown) => ['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '');

type Sink = (rel: string, data: string | Buffer) => void;

/**
 * Every file below `dir` (logical), as `rel/...` and its bytes, names sorted, symbolic links
 * followed (cycles cut), ConfigMap internals (`..data`, `..<timestamp>`) skipped.
 */
function walkFiles(v: View, dir: string, rel: string, sink: Sink, seen = new Set<string>(), depth = 0): void {
  let names: string[];
  let self: string;
  try {
    const st = fs.statSync(v.phys(dir));
    if (!st.isDirectory()) return;
    self = `${st.dev}:${st.ino}`;
    names = fs.readdirSync(v.phys(dir));
  } catch (e) {
    if (!absent(e)) sink(rel, unique((e as NodeJS.ErrnoException).code ?? 'error'));
    return;
  }
  seen.add(self);
  for (const name of names.sort()) {
    if (name.startsWith('..')) continue;
    const p = `${dir}/${name}`;
    const r = `${rel}/${name}`;
    let st: fs.Stats;
    try {
      st = fs.statSync(v.phys(p));
    } catch (e) {
      if (!absent(e)) sink(r, unique((e as NodeJS.ErrnoException).code ?? 'error')); // a dangling link loads nothing
      continue;
    }
    if (st.isDirectory()) {
      if (seen.has(`${st.dev}:${st.ino}`) || depth >= 8) sink(r, 'cycle-or-too-deep');
      else walkFiles(v, p, r, sink, seen, depth + 1);
    } else if (st.isFile()) {
      sink(r, readOr(v.phys(p)));
    }
  }
  seen.delete(self);
}

/** One file, if it is there (`rel` relative to the root). */
function oneFile(v: View, file: string, rel: string, sink: Sink): void {
  try {
    if (!fs.statSync(v.phys(file)).isFile()) return;
  } catch (e) {
    if (!absent(e)) sink(rel, unique((e as NodeJS.ErrnoException).code ?? 'error'));
    return;
  }
  sink(rel, readOr(v.phys(file)));
}

/** The files of one root (a prefix such as `/usr/local/share/lua/5.1/`) that Kong can load migrations from. */
function rootFiles(v: View, root: string, sink: Sink): void {
  const kong = `${root}kong`;
  for (const f of ['meta.lua', 'meta.ljbc', 'constants.lua', 'constants.ljbc']) oneFile(v, `${kong}/${f}`, `kong/${f}`, sink);
  walkFiles(v, `${kong}/db/migrations`, 'kong/db/migrations', sink);
  let plugins: string[];
  try {
    plugins = fs.readdirSync(v.phys(`${kong}/plugins`));
  } catch (e) {
    if (!absent(e)) sink('kong/plugins', unique((e as NodeJS.ErrnoException).code ?? 'error'));
    return;
  }
  for (const name of plugins.sort()) {
    if (name.startsWith('..')) continue;
    const dir = `${kong}/plugins/${name}`;
    const rel = `kong/plugins/${name}`;
    for (const f of ['migrations.lua', 'migrations.ljbc']) oneFile(v, `${dir}/${f}`, `${rel}/${f}`, sink);
    walkFiles(v, `${dir}/migrations`, `${rel}/migrations`, sink);
  }
}

/**
 * The plugins Kong loads (conf_loader's `loaded_plugins`): `off` first is none, `bundled` stands for
 * constants.lua's list (hashed with the roots). Kong runs only these plugins' migrations; the
 * identity still hashes the migrations of every plugin folder it finds (a disabled plugin's change
 * costs one `list`, never a wrong match).
 */
export function loadedPlugins(value: string): string[] {
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names[0] === 'off') return [];
  return [...new Set(names.filter((n) => n !== 'off'))].sort();
}

export interface IdentityInput {
  bin: string;
  env: Env;
  /** The kong.conf in effect (KongPg.confPath): hashed, and read for `lua_package_path` and `plugins`. */
  confPath?: string;
  /** Extra Lua roots (directories), searched after Kong's own. */
  roots?: string[];
  /**
   * The directory `./` in a Lua path stands for; default process.cwd(), the container's working
   * directory, where `kong start` looks (our own Kong steps run in their fresh, empty private
   * prefix, where `./` holds nothing: counting the working directory only ever makes a "differ").
   */
  cwd?: string;
  /** Tests: read every absolute path below this directory instead of `/` (a fixture of the image's layout). */
  fsRoot?: string;
  /** The image's default Lua roots (DEFAULT_LUA_ROOTS). */
  defaultRoots?: readonly string[];
}

/**
 * The ordered Lua roots Kong searches for `kong.*` modules, and the settings among them that are
 * vault references (their roots cannot be known here).
 */
export function kongLuaRoots(i: IdentityInput, conf: Record<string, string>): { roots: string[]; problems: string[] } {
  const cwd = i.cwd ?? process.cwd();
  const defaults = i.defaultRoots ?? DEFAULT_LUA_ROOTS;
  const problems: string[] = [];
  const lpp = i.env.KONG_LUA_PACKAGE_PATH ?? conf.lua_package_path ?? KONG_DEFAULT_LUA_PACKAGE_PATH;
  const override = i.env.KONG_LUA_PATH_OVERRIDE ?? '';
  for (const [name, v] of [
    ['lua_package_path', lpp],
    ['KONG_LUA_PATH_OVERRIDE', override],
  ] as const)
    if (isReference(v)) problems.push(name);
  // `kong migrations`: package.path = lua_package_path .. ";" .. (KONG_LUA_PATH_OVERRIDE .. "./?.lua;./?/init.lua;" .. resty's default)
  const luaPathDefault = i.env.LUA_PATH !== undefined ? luaPathRoots(i.env.LUA_PATH, cwd, defaults) : [];
  const roots = [
    ...luaPathRoots(lpp, cwd, defaults),
    ...luaPathRoots(override, cwd, defaults),
    ...luaPathRoots('./?.lua;./?/init.lua', cwd, defaults),
    ...luaPathDefault,
    ...defaults.map((d) => rootOf(d, cwd)).filter((r): r is string => r !== undefined),
    // bin/kong loads luarocks.loader: rocks in the system tree sit in /usr/local/share/lua/5.1 (above), a user's in ~/.luarocks
    ...(i.env.HOME ? [rootOf(`${i.env.HOME}/.luarocks/share/lua/5.1/`, cwd)!] : []),
    ...(i.roots ?? []).map((d) => rootOf(d.endsWith('/') ? d : `${d}/`, cwd)).filter((r): r is string => r !== undefined),
  ];
  return { roots: [...new Set(roots)], problems };
}

/**
 * `IDENTITY_FORMAT:` and a hex digest that changes whenever the set of migrations this Kong knows
 * could differ.
 */
export function kongIdentity(i: IdentityInput): string {
  const v = viewOf(i.fsRoot);
  const h = createHash('sha256');
  const add = (label: string, data: string | Buffer) => {
    const b = typeof data === 'string' ? Buffer.from(data) : data;
    h.update(`${label}\0${b.length}\0`).update(b);
  };
  add('format', IDENTITY_FORMAT);

  const bin = resolveBin(i.bin, i.env, i.fsRoot);
  add('bin', bin ? readOr(v.phys(bin)) : `unresolved:${i.bin}`);

  const settings = Object.keys(i.env)
    .filter((k) => k.startsWith('KONG_') && !k.startsWith('KONG_DB_INIT_') && !/PASSWORD/.test(k))
    .sort();
  for (const k of settings) add(`env:${k}`, i.env[k] ?? '');
  if (i.env.LUA_PATH !== undefined) add('env:LUA_PATH', i.env.LUA_PATH);

  let conf: Record<string, string> = {};
  if (i.confPath) {
    const text = readOr(v.phys(i.confPath));
    add('conf', text);
    try {
      conf = parseKongConf(text.toString(), i.confPath);
    } catch {
      add('conf-unparsed', unique('conf'));
    }
  }

  const plugins = i.env.KONG_PLUGINS ?? conf.plugins ?? 'bundled';
  add('plugins', isReference(plugins) ? unique('plugins') : loadedPlugins(plugins).join(','));

  const { roots, problems } = kongLuaRoots(i, conf);
  for (const p of problems) add(`unresolved:${p}`, unique(p));
  add('roots', roots.join(';'));
  for (const root of roots) rootFiles(v, root, (rel, data) => add(`${root}\0${rel}`, data));
  return `${IDENTITY_FORMAT}:${h.digest('hex')}`;
}

function readOr(p: string): Buffer | string {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    return unique((e as NodeJS.ErrnoException).code ?? 'error');
  }
}
