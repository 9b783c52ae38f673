/**
 * Flags of `post-render` and `values`, from one table: parsing, environment variables and help.
 * Flags win over environment variables (Helm passes a plugin's environment through).
 */
import os from 'node:os';
import path from 'node:path';
import { FINISH_POLICIES, type FinishPolicy } from '../engine/plan.js';
import { PULL_POLICIES, type PullPolicy } from './containers.js';
import { RENDER_EXIT, RenderError } from './errors.js';
import type { RenderOptions } from './transform.js';
import type { FinishRenderOptions } from './finish-sidecar.js';

export interface RenderArgs extends RenderOptions {
  /** `--finish-sidecar`: options of the finish sidecar (src/render-finish.ts). */
  finishOptions?: FinishRenderOptions;
  errorFile: string;
  help: boolean;
  /** `values` only: the user's own values files (-f), in Helm's order. */
  valuesFiles: string[];
  /** `values --check FILE`: compare with a committed overlay instead of printing. */
  check?: string;
}

type Cmd = 'post-render' | 'values';
interface FlagSpec {
  flag: string;
  alias?: string;
  env?: string;
  arg?: string;
  help: string;
  commands: Cmd[];
  apply: (o: RenderArgs, v: string) => void;
}

export const DEFAULT_ERROR_FILE = path.join(os.tmpdir(), 'kong-db-init-post-render.err');

function parseKv(v: string, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',').filter(Boolean)) {
    const [k, val] = part.split('=');
    if (!k || !val || !/^[a-z-]+$/i.test(k.trim())) throw usage(`${flag} ${JSON.stringify(v)}: expected key=value pairs like cpu=50m,memory=64Mi`);
    out[k.trim()] = val.trim();
  }
  return out;
}

const usage = (m: string) => new RenderError(m, RENDER_EXIT.USAGE);
const BOTH: Cmd[] = ['post-render', 'values'];

export const FLAGS: FlagSpec[] = [
  { flag: '--image', env: 'KONG_DB_INIT_IMAGE', arg: 'REF', commands: BOTH, help: 'our image, for the init container that copies the program (required unless --all-in-one; no default: build and push it from the Dockerfile)', apply: (o, v) => (o.image = v) },
  {
    flag: '--pull-policy',
    env: 'KONG_DB_INIT_PULL_POLICY',
    arg: 'POLICY',
    commands: BOTH,
    help: 'imagePullPolicy of our install container: Always | IfNotPresent | Never (default IfNotPresent)',
    apply: (o, v) => {
      if (!(PULL_POLICIES as readonly string[]).includes(v)) throw usage(`--pull-policy ${JSON.stringify(v)} is invalid; use Always, IfNotPresent or Never`);
      o.pullPolicy = v as PullPolicy;
    },
  },
  { flag: '--all-in-one', arg: 'REF', commands: BOTH, help: 'use one image built FROM your Kong image with kong-db-init inside instead of --image', apply: (o, v) => (o.allInOne = v) },
  {
    flag: '--finish',
    arg: 'POLICY',
    commands: BOTH,
    help: 'auto | always | never (default auto)',
    apply: (o, v) => {
      if (!(FINISH_POLICIES as readonly string[]).includes(v)) throw usage(`--finish ${JSON.stringify(v)} is invalid; use auto, always or never`);
      o.finish = v as FinishPolicy;
    },
  },
  { flag: '--replace-wait', commands: ['post-render'], help: "also swap the chart's wait-for-db for `kong-db-init wait`", apply: (o) => (o.replaceWait = true) },
  { flag: '--requests', arg: 'k=v,...', commands: BOTH, help: "resources.requests of the migrate container (default: the proxy's, or cpu=100m,memory=256Mi when it has none)", apply: (o, v) => (o.requests = parseKv(v, '--requests')) },
  { flag: '--limits', arg: 'k=v,...', commands: BOTH, help: "resources.limits of the migrate container (default: the proxy's, or memory=512Mi when it has none)", apply: (o, v) => (o.limits = parseKv(v, '--limits')) },
  { flag: '--mesh-ready', commands: BOTH, help: 'the pod has no mesh sidecar that starts after init containers (native sidecars, or Postgres excluded from the mesh)', apply: (o) => (o.meshReady = true) },
  {
    flag: '--finish-sidecar',
    commands: BOTH,
    help: "run `kong migrations finish` after the rollout: a finish sidecar in each Kong pod, a Role/RoleBinding that may only list workloads and pods, and the chart's post-upgrade Job removed",
    apply: (o) => {
      o.finishSidecar = true;
      o.finishOptions ??= {};
    },
  },
  { flag: '--finish-group', arg: 'NAME', commands: BOTH, help: 'with --finish-sidecar: the group of Kong workloads on one database that finish waits for (default "default")', apply: (o, v) => ((o.finishOptions ??= {}).group = v) },
  { flag: '--finish-namespaces', arg: 'NS,...', commands: BOTH, help: 'with --finish-sidecar: other namespaces with Kong workloads on the same database', apply: (o, v) => ((o.finishOptions ??= {}).namespaces = v.split(',').filter(Boolean)) },
  { flag: '--namespace', arg: 'NS', env: 'HELM_NAMESPACE', commands: BOTH, help: "with --finish-sidecar: the release namespace, for workloads rendered without metadata.namespace (Helm passes it to plugins as HELM_NAMESPACE)", apply: (o, v) => ((o.finishOptions ??= {}).namespace = v) },
  { flag: '--allow-no-kong', commands: ['post-render'], help: 'pass input without any Kong chart workload through unchanged', apply: (o) => (o.allowNoKong = true) },
  { flag: '--error-file', arg: 'PATH', commands: ['post-render'], help: `also write errors here (Helm 4 discards a plugin's stderr; default ${DEFAULT_ERROR_FILE})`, apply: (o, v) => (o.errorFile = v) },
  { flag: '--values', alias: '-f', arg: 'FILE', commands: ['values'], help: 'your own values file, as given to helm (repeat in the same order): your deployment.initContainers and userDefinedVolumes are kept from it', apply: (o, v) => o.valuesFiles.push(v) },
  { flag: '--check', arg: 'FILE', commands: ['values'], help: 'compare with a committed overlay: exit 21 with a diff when it is stale', apply: (o, v) => (o.check = v) },
];

export function defaults(): RenderArgs {
  return { pullPolicy: 'IfNotPresent', finish: 'auto', replaceWait: false, allowNoKong: false, errorFile: DEFAULT_ERROR_FILE, help: false, valuesFiles: [] };
}

export function parseRenderArgs(cmd: Cmd, argv: string[], env: Record<string, string | undefined>): RenderArgs {
  const o = defaults();
  const specs = FLAGS.filter((f) => f.commands.includes(cmd));
  for (const s of specs) {
    const v = s.env ? env[s.env] : undefined;
    if (s.env && v) {
      try {
        s.apply(o, v);
      } catch (e) {
        throw usage(`${s.env}: ${(e as Error).message}`);
      }
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    if (raw === '--help' || raw === '-h') {
      o.help = true;
      continue;
    }
    const eq = raw.startsWith('--') ? raw.indexOf('=') : -1;
    const flag = eq > 0 ? raw.slice(0, eq) : raw;
    const s = specs.find((f) => f.flag === flag || f.alias === flag);
    if (!s) throw usage(`unknown flag ${flag}; run "kong-db-init ${cmd} --help"`);
    if (!s.arg) {
      if (eq > 0) throw usage(`${flag} takes no value`);
      s.apply(o, '');
      continue;
    }
    const v = eq > 0 ? raw.slice(eq + 1) : argv[++i];
    if (v === undefined || v === '') throw usage(`${flag} needs a value (${s.arg})`);
    s.apply(o, v);
  }
  if (!o.finishSidecar && (o.finishOptions?.group !== undefined || o.finishOptions?.namespaces !== undefined)) {
    throw usage('--finish-group and --finish-namespaces go with --finish-sidecar');
  }
  return o;
}

export function flagHelp(cmd: Cmd): string {
  return FLAGS.filter((f) => f.commands.includes(cmd))
    .map((f) => {
      const name = `${f.alias ? `${f.alias}, ` : ''}${f.flag}${f.arg ? ` ${f.arg}` : ''}`;
      return `  ${name.padEnd(24)} ${f.help}${f.env ? ` (env ${f.env})` : ''}`;
    })
    .join('\n');
}
