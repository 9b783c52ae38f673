/** `kong-db-init values`: the I/O edge (render on stdin, overlay on stdout, or `--check FILE`). */
import fs from 'node:fs';
import { flagHelp, parseRenderArgs } from '../render/args.js';
import { RENDER_EXIT, RenderError } from '../render/errors.js';
import { readStdin, writeOut } from './post-render.js';
import { checkOverlay, valuesOverlay } from '../render/overlay.js';

export const VALUES_HELP = `Usage: helm template REL kong/kong -f values.yaml | kong-db-init values [flags] > kong-db-init-values.yaml

Writes a Kong chart values overlay with the same init containers the post-renderer would inject
(for Argo CD, Flux and anyone who cannot run a post-renderer). It keeps your own
deployment.initContainers and userDefinedVolumes (Helm replaces lists) and copies the rendered
proxy container's image, env, envFrom and mounts into the migrate container, so regenerate it
whenever your values or the chart version change; \`--check\` tells you when (in CI).

Flags:
${flagHelp('values')}

Exit codes: 0 ok (or up to date); 2 bad flag, no --image, or volumes that need -f; 20 bad input
(malformed YAML, no or several Postgres-backed Kong workloads, mesh or Vault settings);
21 --check: the committed overlay is stale (a diff is printed); 1 internal error.
`;

export async function valuesMain(argv: string[], env: Record<string, string | undefined>): Promise<number> {
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
    const overlay = valuesOverlay(await readStdin(), o, userValues);
    if (committed === undefined) {
      await writeOut(overlay);
      return 0;
    }
    const r = checkOverlay(committed, overlay, o.check!);
    process.stderr.write(`kong-db-init values: ${r.report}\n`);
    return r.stale ? RENDER_EXIT.STALE : 0;
  } catch (e) {
    if (e instanceof RenderError) {
      process.stderr.write(`kong-db-init values: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`kong-db-init values: internal error: ${(e as Error).stack ?? String(e)}\n`);
    return RENDER_EXIT.INTERNAL;
  }
}
