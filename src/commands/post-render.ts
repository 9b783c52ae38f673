/** `kong-db-init post-render`: the I/O edge of the Helm post-renderer (stdin → stdout). */
import fs from 'node:fs';
import path from 'node:path';
import { defaultErrorFile, flagHelp, parseRenderArgs, type RenderArgs } from '../render/args.js';
import { finishInjection } from '../render/finish-sidecar.js';
import { RENDER_EXIT, RenderError } from '../render/errors.js';
import { scrubSecretValues } from '../render/secrets.js';
import { postRender } from '../render/transform.js';

export const POST_RENDER_HELP = `Usage: kong-db-init post-render [flags] < manifests > manifests

A Helm post-renderer: removes the Kong chart's init-migrations Job (and the pre-upgrade
migrations Job when Helm 4 passes hooks) and injects kong-db-init into every Kong workload
that uses Postgres, built from the release's own proxy container. DB-less, data-plane and
controller-only releases pass through unchanged.

  # Helm 3 (from a checkout of kong-db-init)
  helm upgrade --install kong kong/kong -f values.yaml --set migrations.preUpgrade=false \\
    --post-renderer ./charts/post-renderer/helm3-post-render --post-renderer-args --image=REF
  # Helm 3 with the finish sidecar: the chart's post-upgrade Job off, and say so
  helm upgrade --install kong kong/kong -f values.yaml --set migrations.preUpgrade=false --set migrations.postUpgrade=false \\
    --post-renderer ./charts/post-renderer/helm3-post-render --post-renderer-args --image=REF \\
    --post-renderer-args --finish-sidecar --post-renderer-args --post-upgrade-off
  # Helm 4
  helm plugin install ./charts/post-renderer/kong-db-init
  helm upgrade --install kong kong/kong -f values.yaml --post-renderer kong-db-init --post-renderer-args --image=REF

Flags (pass with --post-renderer-args):
${flagHelp('post-render')}

Exit codes: 0 ok (also: nothing to change); 2 bad flag or no --image; 20 bad input (malformed
YAML, empty input, no Kong chart workload, a Kong workload without a proxy container, a mesh or
Vault setting that would stop the init container, --finish-sidecar on a pod running as the
"default" ServiceAccount or, without hooks (Helm 3), without --post-upgrade-off); 1 internal
error. On any error nothing is written to stdout. No message shows a literal secret of the input.
`;

export async function readStdin(): Promise<string> {
  // decoded as it arrives (no second copy of the whole stream as bytes)
  process.stdin.setEncoding('utf8');
  let text = '';
  for await (const c of process.stdin) text += c as string;
  return text;
}

const uid = () => process.getuid?.() ?? -1;

/** Our own private directory for the default error file: created 0700, or refused when it is not ours. */
function privateDir(dir: string): string | undefined {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return `cannot create ${dir}: ${(e as NodeJS.ErrnoException).code}`;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid() || (st.mode & 0o077) !== 0) return `${dir} is not a private directory of this user (mode 0700)`;
  return undefined;
}

/**
 * Write the error file afresh: a new file (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600), never through a
 * symlink and never into someone else's file. A previous file or link of ours is removed first.
 * Returns why it could not be written, or undefined.
 */
export function writeErrorFile(file: string, text: string, isDefault: boolean): string | undefined {
  try {
    if (isDefault) {
      const problem = privateDir(path.dirname(file));
      if (problem) return problem;
    }
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(file);
    } catch {
      st = undefined;
    }
    if (st) {
      if (!(st.isFile() || st.isSymbolicLink()) || st.uid !== uid()) return `${file} exists and is not a file of this user`;
      fs.unlinkSync(file);
    }
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    try {
      fs.writeSync(fd, text);
    } finally {
      fs.closeSync(fd);
    }
    return undefined;
  } catch (e) {
    return `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/** Remove an error file left by an earlier failed run (only a file or link of ours). */
function clearErrorFile(file: string): void {
  try {
    const st = fs.lstatSync(file);
    if ((st.isFile() || st.isSymbolicLink()) && st.uid === uid()) fs.unlinkSync(file);
  } catch {
    // none
  }
}

/**
 * An error: to stderr and the error file. When the Helm 4 plugin script has pointed our stderr at
 * Helm's own stderr and that is a regular file Helm writes without O_APPEND (`helm … 2> log`),
 * Helm's own error, written after we exit at its own file offset (before our text), would
 * overwrite ours: KDI_STDERR_PAD (set by the script) puts our text that many bytes further on,
 * behind a line of spaces that Helm's message overwrites instead.
 */
function report(message: string, errorFile: string | undefined, env: Record<string, string | undefined>): void {
  const file = errorFile ?? defaultErrorFile(env);
  let line = `kong-db-init post-render: ${message}`;
  const problem = writeErrorFile(file, line + '\n', errorFile === undefined);
  line += problem ? ` (not written to an error file: ${problem})` : ` (also written to ${file})`;
  const pad = Math.min(Number(env.KDI_STDERR_PAD) || 0, 65536);
  process.stderr.write((pad > 1 ? ' '.repeat(pad - 1) + '\n' : '') + line + '\n');
}

export async function writeOut(text: string): Promise<void> {
  // write and let the pipe drain: exiting early can cut stdout at 64 KiB
  await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

export async function postRenderMain(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  let opts: RenderArgs;
  try {
    opts = parseRenderArgs('post-render', argv, env);
  } catch (e) {
    report((e as Error).message, undefined, env);
    return e instanceof RenderError ? e.exitCode : RENDER_EXIT.INTERNAL;
  }
  if (opts.help) {
    process.stdout.write(POST_RENDER_HELP);
    return 0;
  }
  let input: string | undefined;
  try {
    if (opts.finishSidecar) opts.injections = [finishInjection({ ...opts.finishOptions, allInOne: opts.allInOne, pullPolicy: opts.pullPolicy })];
    input = await readStdin();
    const { output, changes } = postRender(input, opts);
    for (const c of changes) process.stderr.write(`kong-db-init post-render: ${c}\n`);
    await writeOut(output);
    clearErrorFile(opts.errorFile ?? defaultErrorFile(env));
    return 0;
  } catch (e) {
    // the release's env is copied as it is (Helm applies it; it is never committed), but no message shows a value of it
    if (e instanceof RenderError) {
      report(scrubSecretValues(e.message, input), opts.errorFile, env);
      return e.exitCode;
    }
    report(scrubSecretValues(`internal error: ${(e as Error).stack ?? String(e)}`, input), opts.errorFile, env);
    return RENDER_EXIT.INTERNAL;
  }
}
