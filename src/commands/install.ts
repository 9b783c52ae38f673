/**
 * `kong-db-init install DIR`: copy this program (its bundled files, the Node runtime running it, and
 * the C++ runtime libraries that Node links against) into DIR, with a launcher that needs nothing
 * from the environment. Used by the init container that fills the emptyDir shared with the Kong
 * image. Layout: DIR/kong-db-init (launcher), DIR/node, DIR/app/cli.js (+ chunks/), DIR/lib/.
 * Installing over an earlier copy replaces every file and removes chunks the new bundle lacks.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const LAUNCHER = `#!/bin/sh
# kong-db-init launcher: the bundled Node runtime runs the bundled program.
# Works with an empty environment (env -i) inside any glibc image.
case "$0" in
  */*) d=\${0%/*} ;;
  *) d=$(command -v -- "$0"); d=\${d%/*} ;;
esac
if [ -d "$d/lib" ]; then
  found=
  for p in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /lib64 /usr/lib64 /usr/lib /lib; do
    if [ -e "$p/libstdc++.so.6" ]; then found=1; break; fi
  done
  # the image's own C++ runtime is preferred; ours only when it has none
  [ -n "$found" ] || export LD_LIBRARY_PATH="$d/lib\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
case "$1 $* " in
  "finish "*" --then-idle "* | "finish "*" --then-idle=true "*)
    # the finish sidecar: finish runs as a child; once it is done this shell alone (about 1 MB)
    # waits for SIGTERM, so the kubelet never restarts the container and an idle pod costs little
    child= stopping= code=0
    trap 'stopping=1; [ -z "$child" ] || kill -TERM $child 2>/dev/null' TERM INT
    "$d/node" "$d/app/cli.js" "$@" --then-idle=false &
    child=$!
    [ -z "$stopping" ] || kill -TERM $child 2>/dev/null
    while :; do
      wait $child; code=$?
      kill -0 $child 2>/dev/null || break
    done
    if [ -n "$stopping" ]; then
      # a shell that reaped the child already (bash) reports the trap's 143: ask once more for Node's code
      if [ "$code" -gt 128 ]; then wait $child 2>/dev/null; c=$?; [ "$c" = 127 ] || code=$c; fi
      exit $code
    fi
    sleeper=
    trap 'kill $sleeper 2>/dev/null; exit $code' TERM INT
    while :; do
      sleep 600 & sleeper=$!
      wait $sleeper
      [ "$code" = 0 ] || echo "kong-db-init finish failed earlier in this pod (exit $code): see the lines above, kong-db-init status or the kong_db_init_history table; fix the cause and restart the pod" >&2
    done ;;
esac
exec "$d/node" "$d/app/cli.js" "$@"
`;

const RUNTIME_LIB = /^(libstdc\+\+\.so\.6[.\d]*|libgcc_s\.so\.1)$/;

/** Shared libraries of the running process that another glibc image may lack. */
export function runtimeLibraries(maps: string): string[] {
  const libs = new Set<string>();
  for (const line of maps.split('\n')) {
    const p = line.trim().split(/\s+/).at(-1) ?? '';
    if (p.startsWith('/') && RUNTIME_LIB.test(path.basename(p))) libs.add(p);
  }
  return [...libs];
}

/** The name the loader asks for (maps lists libstdc++.so.6.0.30, the loader wants libstdc++.so.6). */
export const soname = (lib: string): string => path.basename(lib).replace(/^(libstdc\+\+\.so\.6)[.\d]*$/, '$1');

/**
 * Which C++ runtime to ship: an installed copy (node next to lib/, as in the image) ships its own
 * lib/ (chosen for an old glibc floor), else the libraries the running node has loaded.
 */
export function libraryPlan(execDir: string, ownLib: string[] | undefined, maps: string | undefined): string[] {
  const own = (ownLib ?? []).filter((f) => RUNTIME_LIB.test(f)).sort();
  if (own.some((f) => soname(f) === 'libstdc++.so.6')) return own.map((f) => path.join(execDir, 'lib', f));
  return maps ? runtimeLibraries(maps).sort((a, b) => path.basename(a).localeCompare(path.basename(b))) : [];
}

/** Chunk files in an earlier install that the new bundle does not have. */
export function staleChunks(installed: string[], incoming: string[]): string[] {
  const keep = new Set(incoming);
  return installed.filter((f) => !keep.has(f));
}

/** Copy the bundle (cli.js and its chunks/) and mark it as ES modules. */
function copyProgram(from: string, to: string, top = true): void {
  fs.mkdirSync(to, { recursive: true });
  const incoming: string[] = [];
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    if (e.isDirectory() && e.name === 'chunks') copyProgram(path.join(from, e.name), path.join(to, e.name), false);
    else if (e.isFile() && e.name.endsWith('.js')) {
      copyExecutable(path.join(from, e.name), path.join(to, e.name), 0o644);
      incoming.push(e.name);
    }
  }
  if (top) writeAtomic(path.join(to, 'package.json'), '{ "type": "module" }\n', 0o644);
  else {
    const installed = fs.readdirSync(to).filter((f) => f.endsWith('.js'));
    for (const f of staleChunks(installed, incoming)) fs.rmSync(path.join(to, f), { force: true });
  }
}

function copyExecutable(src: string, dest: string, mode: number): void {
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(src, tmp);
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, dest);
}

function writeAtomic(dest: string, text: string, mode: number): void {
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, dest);
}

function readdirOrUndefined(dir: string): string[] | undefined {
  try {
    return fs.readdirSync(dir);
  } catch {
    return undefined;
  }
}

export async function installMain(args: string[]): Promise<number> {
  const dir = args[0];
  if (!dir || args.length > 1) {
    process.stderr.write('kong-db-init install: usage: kong-db-init install DIR (one directory, e.g. an emptyDir mount)\n');
    return 2;
  }
  // this file is a chunk of the bundle: dist/chunks/ (or app/chunks/ once installed)
  const programDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
  if (!fs.existsSync(path.join(programDir, 'cli.js'))) {
    process.stderr.write(`kong-db-init install: run the built program (npm run build, then dist/cli.js), not the sources\n`);
    return 2;
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    process.stderr.write(`kong-db-init install: cannot write to ${dir} (${(e as NodeJS.ErrnoException).code ?? 'error'}); mount a writable emptyDir there\n`);
    return 2;
  }
  try {
    const execDir = path.dirname(process.execPath);
    const maps = fs.existsSync('/proc/self/maps') ? fs.readFileSync('/proc/self/maps', 'utf8') : undefined;
    const libs = libraryPlan(execDir, readdirOrUndefined(path.join(execDir, 'lib')), maps);
    if (libs.length) fs.mkdirSync(path.join(dir, 'lib'), { recursive: true });
    for (const l of libs) copyExecutable(fs.realpathSync(l), path.join(dir, 'lib', soname(l)), 0o755);
    copyExecutable(process.execPath, path.join(dir, 'node'), 0o755);
    copyProgram(programDir, path.join(dir, 'app'));
    writeAtomic(path.join(dir, 'kong-db-init'), LAUNCHER, 0o755);
    const launcher = path.join(dir, 'kong-db-init');
    process.stderr.write(
      `kong-db-init install: installed into ${dir} (node ${process.version}${libs.length ? `, ${libs.map(soname).join(', ')}` : ''}); run ${launcher} migrate\n`,
    );
    return 0;
  } catch (e) {
    process.stderr.write(`kong-db-init install: copying into ${dir} failed: ${(e as Error).message}; check free space and permissions\n`);
    return 2;
  }
}
