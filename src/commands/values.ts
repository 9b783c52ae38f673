/** `kong-db-init values`: the I/O edge (render on stdin, overlay on stdout, or `--check FILE`). */
import fs from 'node:fs';
import { flagHelp, parseRenderArgs } from '../render/args.js';
import { RENDER_EXIT, RenderError } from '../render/errors.js';
import { scrubSecretValues } from '../render/secrets.js';
import { readStdin, writeOut } from './post-render.js';
import { checkOverlay, overlayFor, overlayText } from '../render/overlay.js';

export const VALUES_HELP = `Usage: helm template REL kong/kong -f values.yaml | kong-db-init values [flags] > kong-db-init-values.yaml

Writes a Kong chart values overlay with the same init containers the post-renderer would inject
(for Argo CD, Flux and anyone who cannot run a post-renderer). It keeps your own
deployment.initContainers and userDefinedVolumes (Helm replaces lists) and copies the rendered
proxy container's image, env, envFrom and mounts into the migrate container, so regenerate it
whenever your values or the chart version change; \`--check\` tells you when (in CI).

Flags:
${flagHelp('values')}

A release without a Postgres-backed Kong gateway (DB-less, hybrid data plane, controller only)
gets an empty overlay and a note, as the post-renderer passes it through unchanged.

Exit codes: 0 ok (or up to date, or nothing to add); 2 bad flag, no --image, or volumes or
--finish-sidecar that need -f; 20 bad input (malformed YAML, no Kong chart workload unless
--allow-no-kong, several Postgres-backed Kong workloads, mesh or Vault settings, a literal secret
that would be written into the overlay, --finish-sidecar on a pod running as the "default"
ServiceAccount); 21 --check: the committed overlay is stale (a diff is printed); 1 internal error.
No message shows a literal secret of the render.
`;

export async function valuesMain(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  let input: string | undefined;
  try {
    const o = parseRenderArgs('values', argv, env);
    if (o.help) {
      process.stdout.write(VALUES_HELP);
      return 0;
    }
    const read = (f: string) => {
      try {
        return fs.readFileSync(f, 'utf8');
      } catch (e) {
        throw new RenderError(`cannot read ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; pass an existing file`, RENDER_EXIT.USAGE);
      }
    };
    const userValues = o.valuesFiles.map((file) => ({ file, text: read(file) }));
    const committed = o.check !== undefined ? read(o.check) : undefined;
    input = await readStdin();
    const result = overlayFor(input, o, userValues);
    for (const n of result.notes) process.stderr.write(`kong-db-init values: ${n}\n`);
    const overlay = overlayText(result.overlay);
    if (committed === undefined) {
      await writeOut(overlay);
      return 0;
    }
    const r = checkOverlay(committed, overlay, o.check!);
    process.stderr.write(`kong-db-init values: ${r.report}\n`);
    return r.stale ? RENDER_EXIT.STALE : 0;
  } catch (e) {
    if (e instanceof RenderError) {
      process.stderr.write(`kong-db-init values: ${scrubSecretValues(e.message, input)}\n`);
      return e.exitCode;
    }
    process.stderr.write(`kong-db-init values: internal error: ${scrubSecretValues((e as Error).stack ?? String(e), input)}\n`);
    return RENDER_EXIT.INTERNAL;
  }
}
