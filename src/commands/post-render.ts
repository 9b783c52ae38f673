/** `kong-db-init post-render`: the I/O edge of the Helm post-renderer (stdin → stdout). */
import fs from 'node:fs';
import { DEFAULT_ERROR_FILE, flagHelp, parseRenderArgs } from '../render/args.js';
import { finishInjection } from '../render/finish-sidecar.js';
import { RENDER_EXIT, RenderError } from '../render/errors.js';
import { postRender } from '../render/transform.js';

export const POST_RENDER_EXIT = RENDER_EXIT;

export const POST_RENDER_HELP = `Usage: kong-db-init post-render [flags] < manifests > manifests

A Helm post-renderer: removes the Kong chart's init-migrations Job (and the pre-upgrade
migrations Job when Helm 4 passes hooks) and injects kong-db-init into every Kong workload
that uses Postgres, built from the release's own proxy container. DB-less, data-plane and
controller-only releases pass through unchanged.

  # Helm 3 (from a checkout of kong-db-init)
  helm upgrade --install kong kong/kong -f values.yaml --set migrations.preUpgrade=false \\
    --post-renderer ./charts/post-renderer/helm3-post-render --post-renderer-args --image=REF
  # Helm 4
  helm plugin install ./charts/post-renderer/kong-db-init
  helm upgrade --install kong kong/kong -f values.yaml --post-renderer kong-db-init --post-renderer-args --image=REF

Flags (pass with --post-renderer-args):
${flagHelp('post-render')}

Exit codes: 0 ok (also: nothing to change); 2 bad flag or no --image; 20 bad input (malformed
YAML, empty input, no Kong chart workload, a Kong workload without a proxy container, a mesh or
Vault setting that would stop the init container); 1 internal error. On any error nothing is
written to stdout.
`;

export async function readStdin(): Promise<string> {
  // decoded as it arrives (no second copy of the whole stream as bytes)
  process.stdin.setEncoding('utf8');
  let text = '';
  for await (const c of process.stdin) text += c as string;
  return text;
}

function report(message: string, errorFile: string | undefined): void {
  let line = `kong-db-init post-render: ${message}`;
  if (errorFile) {
    try {
      fs.writeFileSync(errorFile, line + '\n');
      line += ` (also written to ${errorFile})`;
    } catch {
      // the message still goes to stderr
    }
  }
  process.stderr.write(line + '\n');
}

export async function writeOut(text: string): Promise<void> {
  // write and let the pipe drain: exiting early can cut stdout at 64 KiB
  await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

export async function postRenderMain(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  let opts;
  try {
    opts = parseRenderArgs('post-render', argv, env);
  } catch (e) {
    report((e as Error).message, DEFAULT_ERROR_FILE);
    return e instanceof RenderError ? e.exitCode : RENDER_EXIT.INTERNAL;
  }
  if (opts.help) {
    process.stdout.write(POST_RENDER_HELP);
    return 0;
  }
  try {
    if (opts.finishSidecar) opts.injections = [finishInjection({ ...opts.finishOptions, allInOne: Boolean(opts.allInOne) })];
    const { output, changes } = postRender(await readStdin(), opts);
    for (const c of changes) process.stderr.write(`kong-db-init post-render: ${c}\n`);
    await writeOut(output);
    if (fs.existsSync(opts.errorFile)) fs.rmSync(opts.errorFile, { force: true });
    return 0;
  } catch (e) {
    if (e instanceof RenderError) {
      report(e.message, opts.errorFile);
      return e.exitCode;
    }
    report(`internal error: ${(e as Error).stack ?? String(e)}`, opts.errorFile);
    return RENDER_EXIT.INTERNAL;
  }
}
