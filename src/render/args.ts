/**
 * Flags of `post-render` and `values`, from one table (parsed by the shared table-driven parser in
 * commands/flags.ts): parsing, environment variables and help. Flags win over environment variables
 * (Helm passes a plugin's environment through); a switch takes no value.
 */
import os from 'node:os';
import path from 'node:path';
import { flagHelp as tableHelp, parseFlags, type FlagSpec } from '../commands/flags.js';
import { FINISH_POLICIES, type FinishPolicy } from '../engine/plan.js';
import { PULL_POLICIES, type PullPolicy } from './containers.js';
import { RENDER_EXIT, RenderError } from './errors.js';
import type { RenderOptions } from './transform.js';
import type { FinishRenderOptions } from './finish-sidecar.js';

export interface RenderArgs extends RenderOptions {
  /** `--finish-sidecar`: options of the finish sidecar (src/render/finish-sidecar.ts). */
  finishOptions?: FinishRenderOptions;
  /** Where errors are also written; undefined: the per-user default (see defaultErrorFile). */
  errorFile?: string;
  help: boolean;
  /** `values` only: the user's own values files (-f), in Helm's order. */
  valuesFiles: string[];
  /** `values --check FILE`: compare with a committed overlay instead of printing. */
  check?: string;
}

type Cmd = 'post-render' | 'values';

/**
 * The post-renderer's error file: `${TMPDIR:-/tmp}/kong-db-init-<uid>/post-render.err`, in a
 * directory of this user's own (mode 0700), never a fixed name in a shared directory. The plugin
 * script (charts/post-renderer/kong-db-init/post-render.sh) uses the same path.
 */
export function defaultErrorFile(env: Record<string, string | undefined> = process.env): string {
  const tmp = env.TMPDIR ? env.TMPDIR.replace(/(.)\/+$/, '$1') : os.tmpdir();
  return path.join(tmp, `kong-db-init-${process.getuid?.() ?? 'user'}`, 'post-render.err');
}
// biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expression, shown in --help as it is
export const ERROR_FILE_HELP = '${TMPDIR:-/tmp}/kong-db-init-$UID/post-render.err';

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

/** A switch: the shared parser passes "true" for `--flag` and the text after `=` for `--flag=x`. */
const on = (set: (o: RenderArgs) => void) => (o: RenderArgs, v: string, name: string) => {
  if (v !== 'true') throw usage(`${name} takes no value`);
  set(o);
};

export const FLAGS: FlagSpec<RenderArgs>[] = [
  {
    flag: '--image',
    env: 'KONG_DB_INIT_IMAGE',
    arg: 'REF',
    commands: BOTH,
    help: 'our image, for the init container that copies the program (required unless --all-in-one; no default: build and push it from the Dockerfile)',
    apply: (o, v) => (o.image = v),
  },
  {
    flag: '--pull-policy',
    env: 'KONG_DB_INIT_PULL_POLICY',
    arg: 'POLICY',
    commands: BOTH,
    help: 'imagePullPolicy of our install container (and of the all-in-one image): Always | IfNotPresent | Never (default IfNotPresent)',
    apply: (o, v, name) => {
      if (!(PULL_POLICIES as readonly string[]).includes(v)) throw usage(`${name} ${JSON.stringify(v)} is invalid; use Always, IfNotPresent or Never`);
      o.pullPolicy = v as PullPolicy;
    },
  },
  {
    flag: '--all-in-one',
    arg: 'REF',
    commands: BOTH,
    help: 'use one image built FROM your Kong image with kong-db-init inside (at /opt/kong-db-init) instead of --image; the migrate container and the finish sidecar run it',
    apply: (o, v) => (o.allInOne = v),
  },
  {
    flag: '--finish',
    arg: 'POLICY',
    commands: BOTH,
    help: 'auto | always | never (default auto)',
    apply: (o, v, name) => {
      if (!(FINISH_POLICIES as readonly string[]).includes(v)) throw usage(`${name} ${JSON.stringify(v)} is invalid; use auto, always or never`);
      o.finish = v as FinishPolicy;
    },
  },
  {
    flag: '--replace-wait',
    commands: ['post-render'],
    help: "also swap the chart's wait-for-db for `kong-db-init wait`",
    apply: on((o) => (o.replaceWait = true)),
  },
  {
    flag: '--requests',
    arg: 'k=v,...',
    commands: BOTH,
    help: "resources.requests of the migrate container (default: the proxy's, or cpu=100m,memory=256Mi when it has none)",
    apply: (o, v, name) => (o.requests = parseKv(v, name)),
  },
  {
    flag: '--limits',
    arg: 'k=v,...',
    commands: BOTH,
    help: "resources.limits of the migrate container (default: the proxy's, or memory=512Mi when it has none)",
    apply: (o, v, name) => (o.limits = parseKv(v, name)),
  },
  {
    flag: '--mesh-ready',
    commands: BOTH,
    help: 'the pod has no mesh sidecar that starts after init containers (native sidecars, or Postgres excluded from the mesh)',
    apply: on((o) => (o.meshReady = true)),
  },
  {
    flag: '--finish-sidecar',
    commands: BOTH,
    help: "run `kong migrations finish` after the rollout: a finish sidecar in each Kong pod, a Role/RoleBinding that may only list workloads and pods, and the chart's post-upgrade Job removed (Helm 4) or refused until it is off (Helm 3: see --post-upgrade-off)",
    apply: on((o) => {
      o.finishSidecar = true;
      o.finishOptions ??= {};
    }),
  },
  {
    flag: '--finish-group',
    arg: 'NAME',
    commands: BOTH,
    help: 'with --finish-sidecar: the group of Kong workloads on one database that finish waits for (default "default")',
    apply: (o, v) => ((o.finishOptions ??= {}).group = v),
  },
  {
    flag: '--finish-namespaces',
    arg: 'NS,...',
    commands: BOTH,
    help: 'with --finish-sidecar: other namespaces with Kong workloads on the same database',
    apply: (o, v) => ((o.finishOptions ??= {}).namespaces = v.split(',').filter(Boolean)),
  },
  {
    flag: '--namespace',
    arg: 'NS',
    env: 'HELM_NAMESPACE',
    commands: BOTH,
    help: 'with --finish-sidecar: the release namespace, for workloads rendered without metadata.namespace (Helm passes it to plugins as HELM_NAMESPACE)',
    apply: (o, v) => ((o.finishOptions ??= {}).namespace = v),
  },
  {
    flag: '--post-upgrade-off',
    commands: ['post-render'],
    help: 'with --finish-sidecar when Helm passes no hooks (Helm 3): you have set migrations.postUpgrade=false, so no chart Job runs `kong migrations finish` beside the sidecar (without this flag such a render is refused)',
    apply: on((o) => (o.postUpgradeOff = true)),
  },
  {
    flag: '--allow-no-kong',
    commands: BOTH,
    help: 'pass input without any Kong chart workload through unchanged (values: write an empty overlay)',
    apply: on((o) => (o.allowNoKong = true)),
  },
  {
    flag: '--error-file',
    arg: 'PATH',
    commands: ['post-render'],
    help: `also write errors here, created new with mode 0600 (Helm 4 discards a plugin's stderr; default ${ERROR_FILE_HELP})`,
    apply: (o, v) => (o.errorFile = v),
  },
  {
    flag: '--values',
    alias: '-f',
    arg: 'FILE',
    commands: ['values'],
    help: 'your own values file, as given to helm (repeat in the same order): your deployment.initContainers, userDefinedVolumes, sidecarContainers and extraObjects are kept from it',
    apply: (o, v) => o.valuesFiles.push(v),
  },
  {
    flag: '--check',
    arg: 'FILE',
    commands: ['values'],
    help: 'compare with a committed overlay: exit 21 with a diff when it is stale',
    apply: (o, v) => (o.check = v),
  },
];

export function defaults(): RenderArgs {
  return { pullPolicy: 'IfNotPresent', finish: 'auto', replaceWait: false, allowNoKong: false, help: false, valuesFiles: [] };
}

export function parseRenderArgs(cmd: Cmd, argv: string[], env: Record<string, string | undefined>): RenderArgs {
  const o = defaults();
  const { positional, help } = parseFlags(FLAGS, cmd, argv, env, o, usage);
  if (positional.length) throw usage(`unexpected argument ${JSON.stringify(positional[0])}; run "kong-db-init ${cmd} --help"`);
  o.help = help;
  if (!o.finishSidecar && (o.finishOptions?.group !== undefined || o.finishOptions?.namespaces !== undefined)) {
    throw usage('--finish-group and --finish-namespaces go with --finish-sidecar');
  }
  if (!o.finishSidecar && o.postUpgradeOff) throw usage('--post-upgrade-off goes with --finish-sidecar');
  // Helm 4 runs our post-renderer plugin (plugin.yaml name: kong-db-init) with HELM_PLUGIN_NAME set,
  // and passes it the hooks with the manifests; Helm 3 runs an executable and passes no hooks
  if (cmd === 'post-render' && env.HELM_PLUGIN_NAME === 'kong-db-init') o.hooksPassed = true;
  return o;
}

export function flagHelp(cmd: Cmd): string {
  return tableHelp(FLAGS, cmd);
}
