/** `kong-db-init post-render`: the I/O edge of the Helm post-renderer (stdin → stdout). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FINISH_POLICIES, type FinishPolicy } from './config.js';
import { postRender, RenderError, type RenderOptions } from './render.js';

declare const __KDI_VERSION__: string | undefined;
export const DEFAULT_IMAGE = `ghcr.io/kong-db-init/kong-db-init:${typeof __KDI_VERSION__ === 'string' && __KDI_VERSION__ ? __KDI_VERSION__ : 'latest'}`;
export const POST_RENDER_EXIT = { OK: 0, USAGE: 2, BAD_INPUT: 20 } as const;

export const POST_RENDER_HELP = `Usage: kong-db-init post-render [flags] < manifests > manifests

A Helm post-renderer: removes the Kong chart's init-migrations Job (and the pre-upgrade
migrations Job when Helm 4 passes hooks) and injects kong-db-init into every Kong workload
that uses Postgres, built from the release's own proxy container.

  helm install kong kong/kong -f values.yaml --post-renderer ./helm/post-render            # Helm 3
  helm plugin install ./helm/plugin && helm install kong kong/kong --post-renderer kong-db-init   # Helm 4

Flags (pass with --post-renderer-args):
  --image REF            our image, copied into an emptyDir (default ${DEFAULT_IMAGE})
  --all-in-one REF       use one image built FROM your Kong image with kong-db-init inside instead
  --finish POLICY        auto | always | never (default auto)
  --replace-wait         also swap the chart's wait-for-db for \`kong-db-init wait\`
  --requests k=v,...     resources.requests of the migrate container (default: the proxy's)
  --limits k=v,...       resources.limits of the migrate container (default: the proxy's)
  --allow-no-kong        pass releases without a Postgres-backed Kong workload through unchanged
  --error-file PATH      also write errors here (Helm 4 discards stderr; default ${path.join(os.tmpdir(), 'kong-db-init-post-render.err')})

Exit codes: 0 ok; 2 bad flag; 20 bad input (malformed YAML, empty input, no Kong workload,
a Kong workload without a proxy container). On any error nothing is written to stdout.
`;

function parseKv(v: string, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',').filter(Boolean)) {
    const [k, val] = part.split('=');
    if (!k || !val || !/^[a-z-]+$/i.test(k)) throw new UsageError(`${flag} ${JSON.stringify(v)}: expected key=value pairs like cpu=50m,memory=64Mi`);
    out[k.trim()] = val.trim();
  }
  return out;
}

class UsageError extends Error {}

export function parsePostRenderArgs(argv: string[]): RenderOptions & { errorFile: string; help: boolean } {
  const o: RenderOptions & { errorFile: string; help: boolean } = {
    image: DEFAULT_IMAGE,
    finish: 'auto',
    replaceWait: false,
    allowNoKong: false,
    errorFile: path.join(os.tmpdir(), 'kong-db-init-post-render.err'),
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    const eq = raw.indexOf('=');
    const flag = raw.startsWith('--') && eq > 0 ? raw.slice(0, eq) : raw;
    const value = (): string => {
      if (raw.startsWith('--') && eq > 0) return raw.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined || v === '') throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--help':
      case '-h':
        o.help = true;
        break;
      case '--image':
        o.image = value();
        break;
      case '--all-in-one':
        o.allInOne = value();
        break;
      case '--finish': {
        const v = value();
        if (!(FINISH_POLICIES as readonly string[]).includes(v)) throw new UsageError(`--finish ${JSON.stringify(v)} is invalid; use auto, always or never`);
        o.finish = v as FinishPolicy;
        break;
      }
      case '--replace-wait':
        o.replaceWait = true;
        break;
      case '--requests':
        o.requests = parseKv(value(), '--requests');
        break;
      case '--limits':
        o.limits = parseKv(value(), '--limits');
        break;
      case '--allow-no-kong':
        o.allowNoKong = true;
        break;
      case '--error-file':
        o.errorFile = value();
        break;
      default:
        throw new UsageError(`unknown flag ${flag}; run "kong-db-init post-render --help"`);
    }
  }
  return o;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
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

export async function postRenderMain(argv: string[], _env: Record<string, string | undefined>): Promise<number> {
  let opts;
  try {
    opts = parsePostRenderArgs(argv);
  } catch (e) {
    report((e as Error).message, path.join(os.tmpdir(), 'kong-db-init-post-render.err'));
    return POST_RENDER_EXIT.USAGE;
  }
  if (opts.help) {
    process.stdout.write(POST_RENDER_HELP);
    return 0;
  }
  try {
    const { output, changes } = postRender(await readStdin(), opts);
    for (const c of changes) process.stderr.write(`kong-db-init post-render: ${c}\n`);
    // write and let the pipe drain: exiting early can cut stdout at 64 KiB
    await new Promise<void>((resolve, reject) => process.stdout.write(output, (err) => (err ? reject(err) : resolve())));
    if (fs.existsSync(opts.errorFile)) fs.rmSync(opts.errorFile, { force: true });
    return 0;
  } catch (e) {
    if (e instanceof RenderError) {
      report(e.message, opts.errorFile);
      return POST_RENDER_EXIT.BAD_INPUT;
    }
    report(`internal error: ${(e as Error).stack ?? String(e)}`, opts.errorFile);
    return 1;
  }
}
