/**
 * The identity of this pod's Kong, as far as migrations go: two pods with the same identity know
 * the same set of migrations, so a state one of them verified with `kong migrations list` holds
 * for the other while `schema_meta` is unchanged. It covers the Kong executable, Kong's version file
 * and every migration file Kong can load (core and bundled plugins under the Lua roots, custom
 * plugins under KONG_LUA_PACKAGE_PATH, e.g. a plugin ConfigMap changed without a pod-template
 * change), kong.conf, and every KONG_* setting (KONG_PLUGINS among them). Anything it cannot read
 * makes the identity differ, never match: the cost of a wrong "differ" is one `kong migrations list`.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Env } from '../kong/config.js';

/** Where Kong's Lua modules live in the Kong images. */
export const LUA_ROOTS = ['/usr/local/share/lua/5.1', '/usr/local/openresty/lualib', '/usr/local/openresty/site/lualib'];

/** Roots named by a Lua path (`/dir/?.lua;/dir2/?/init.lua;;`). */
export function luaPathRoots(luaPath: string | undefined): string[] {
  return (luaPath ?? '').split(';').map((e) => e.replace(/\/?\?.*$/, '').trim()).filter(Boolean);
}

/** The executable `bin` resolves to (PATH lookup like execvp), or undefined. */
export function resolveBin(bin: string, env: Env): string | undefined {
  const candidates = bin.includes('/') ? [bin] : (env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, bin));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return fs.realpathSync(c);
    } catch {
      // next
    }
  }
  return undefined;
}

/** Files under `root` that define migrations or the version, as relative paths, sorted. */
function migrationFiles(root: string): string[] {
  const out: string[] = [];
  const kong = path.join(root, 'kong');
  const walk = (dir: string, rel: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory() && depth < 6) walk(path.join(dir, e.name), r, depth + 1);
      else if (/\/migrations\/[^/]+\.lua$/.test(r) || r === 'kong/meta.lua') out.push(r);
    }
  };
  walk(kong, 'kong', 0);
  return out.sort();
}

export interface IdentityInput {
  bin: string;
  env: Env;
  confPath?: string;
  /** Extra Lua roots (tests); the Kong image's roots are always included. */
  roots?: string[];
}

/** A hex digest that changes whenever the set of migrations this Kong knows could differ. */
export function kongIdentity(i: IdentityInput): string {
  const h = createHash('sha256');
  const add = (label: string, data: string | Buffer) => h.update(`${label}\0`).update(data).update('\0');
  const bin = resolveBin(i.bin, i.env);
  add('bin', bin ?? `unresolved:${i.bin}`);
  if (bin) add('bin-content', readOr(bin));
  const settings = Object.keys(i.env).filter((k) => k.startsWith('KONG_') && !k.startsWith('KONG_DB_INIT_') && !/PASSWORD/.test(k)).sort();
  for (const k of settings) add(`env:${k}`, i.env[k] ?? '');
  if (i.confPath) add('conf', readOr(i.confPath));
  const roots = [...new Set([...LUA_ROOTS, ...luaPathRoots(i.env.KONG_LUA_PACKAGE_PATH), ...luaPathRoots(i.env.LUA_PATH), ...(i.roots ?? [])])];
  for (const root of roots) for (const f of migrationFiles(root)) add(`${root}:${f}`, readOr(path.join(root, f)));
  return h.digest('hex');
}

function readOr(p: string): Buffer | string {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    return `unreadable:${(e as NodeJS.ErrnoException).code ?? 'error'}:${Math.random()}`;
  }
}
