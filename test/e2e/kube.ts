/** Helpers of the e2e suite: kubectl, helm 3/4, namespaces, an in-cluster Postgres, polling. */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { ROOT } from '../helpers/build.js';

export const CACHE = process.env.KDI_CACHE_DIR ?? path.join(os.homedir(), '.cache/kong-db-init');
export const KUBECONFIG = process.env.KDI_E2E_KUBECONFIG ?? path.join(CACHE, 'k8s/run/admin.kubeconfig');
export const KUBECTL = path.join(CACHE, 'k8s/bin/kubectl');
export const CHART = path.join(ROOT, 'test/e2e/chart/kong-e2e');
export const SKIP = process.env.KDI_E2E_SKIP;
export const PG_PASSWORD = 'E2e-Pg-pw-7Hq!';

/** helm 3 and 4 binaries: KDI_HELM3_BIN/KDI_HELM4_BIN, the CI cache, .tmp/helm3|4, PATH. */
export function findHelm(): { v3?: string; v4?: string } {
  const cands = [process.env.KDI_HELM3_BIN, process.env.KDI_HELM4_BIN, path.join(ROOT, '.tmp/helm3/helm'), path.join(ROOT, '.tmp/helm4/helm')];
  if (fs.existsSync(CACHE)) for (const d of fs.readdirSync(CACHE)) if (/^helm[34]-/.test(d)) cands.push(path.join(CACHE, d, 'helm'));
  cands.push(...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'helm')));
  const out: { v3?: string; v4?: string } = {};
  for (const c of cands) {
    if (!c || !fs.existsSync(c)) continue;
    try {
      const v = execFileSync(c, ['version', '--short'], { encoding: 'utf8', env: { ...process.env, HELM_CONFIG_HOME: os.tmpdir() } });
      if (/^v3\./.test(v)) out.v3 ??= c;
      if (/^v4\./.test(v)) out.v4 ??= c;
    } catch {
      /* not a usable helm */
    }
  }
  return out;
}

export interface Res {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export async function kubectl(args: string[], input?: string): Promise<Res> {
  const r = await execa(KUBECTL, ['--kubeconfig', KUBECONFIG, ...args], { reject: false, input });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** kubectl that must succeed. */
export async function kc(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input);
  if (r.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.exitCode}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

export async function kjson<T = any>(args: string[]): Promise<T> {
  // eslint-disable-line @typescript-eslint/no-explicit-any
  return JSON.parse(await kc([...args, '-o', 'json'])) as T;
}

/** Poll until fn() returns a truthy value (waiting on the cluster, not an assertion on speed). */
export async function until<T>(fn: () => Promise<T | undefined | false | null>, ms: number, what: string, everyMs = 1000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A fresh namespace (labelled for `.ci/k8s.sh down` to clean up). */
export async function newNamespace(prefix: string, labels: Record<string, string> = {}): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  const doc = { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kdi-e2e': '1', ...labels } } };
  await kc(['apply', '-f', '-'], JSON.stringify(doc));
  await until(async () => (await kubectl(['-n', name, 'get', 'serviceaccount', 'default'])).exitCode === 0, 60_000, `service account in ${name}`, 300);
  return name;
}

export async function deleteNamespace(ns: string): Promise<void> {
  await kubectl(['delete', 'namespace', ns, '--wait=false']);
}

/** The database secret the chart reads (key `password`). */
export async function pgSecret(ns: string, password = PG_PASSWORD, name = 'kong-pg'): Promise<void> {
  await kc(['-n', ns, 'create', 'secret', 'generic', name, `--from-literal=password=${password}`]);
}

/** A Service for Postgres (its ClusterIP is the Kong pods' KONG_PG_HOST: this cluster has no DNS). */
export async function pgService(ns: string): Promise<string> {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'postgres', namespace: ns },
    spec: { selector: { app: 'postgres' }, ports: [{ port: 5432, targetPort: 5432 }] },
  };
  await kc(['apply', '-f', '-'], JSON.stringify(svc));
  return (await kjson<{ spec: { clusterIP: string } }>(['-n', ns, 'get', 'service', 'postgres'])).spec.clusterIP;
}

/** Where `pgDeployment(..., { persistent: true })` keeps a namespace's data on the node (removed by `.ci/k8s.sh down` with the rest of run/). */
export const pgDataDir = (ns: string) => path.join(CACHE, 'k8s/run/e2e-pgdata', ns);

/**
 * Postgres (the stand-in image) as a Deployment that a `restricted` namespace admits; its data in
 * an emptyDir, gone with the pod. `persistent`: the data in a hostPath directory on the node
 * (pgDataDir) instead, so that a Postgres pod deleted and re-created by its Deployment comes back
 * with the same database; a root init container gives the directory to the postgres user (the
 * kubelet creates it as root, and fsGroup does not apply to hostPath), so such a namespace cannot
 * enforce `restricted`. A deleted pod's replacement starts while the old one still terminates: the
 * old server stops with a fast shutdown (preStop; its clients are disconnected at once, its
 * postmaster.pid removed) and the new one's init container waits until postmaster.pid is gone,
 * so that two servers never share the directory.
 */
export async function pgDeployment(ns: string, wait = true, o: { persistent?: boolean } = {}): Promise<void> {
  const sc = {
    runAsNonRoot: true,
    runAsUser: 100,
    runAsGroup: 102,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
  const data = o.persistent ? { name: 'data', hostPath: { path: pgDataDir(ns), type: 'DirectoryOrCreate' } } : { name: 'data', emptyDir: {} };
  const chown = {
    name: 'own-data',
    image: 'kdi-standin/postgres:15',
    imagePullPolicy: 'Never',
    command: [
      'sh',
      '-c',
      'd=/var/lib/postgresql/data; chown 100:102 $d && chmod 0750 $d; i=0; while [ -e $d/pg/postmaster.pid ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done',
    ],
    securityContext: { runAsUser: 0, runAsNonRoot: false },
    volumeMounts: [{ name: 'data', mountPath: '/var/lib/postgresql/data' }],
  };
  const dep = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'postgres', namespace: ns },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'postgres' } },
      template: {
        metadata: { labels: { app: 'postgres' } },
        spec: {
          terminationGracePeriodSeconds: 5,
          securityContext: { fsGroup: 102 },
          ...(o.persistent ? { initContainers: [chown] } : {}),
          containers: [
            {
              name: 'postgres',
              image: 'kdi-standin/postgres:15',
              imagePullPolicy: 'Never',
              env: [
                { name: 'PGDATA', value: '/var/lib/postgresql/data/pg' },
                { name: 'POSTGRES_USER', value: 'kong' },
                { name: 'POSTGRES_DB', value: 'kong' },
                { name: 'POSTGRES_PASSWORD', valueFrom: { secretKeyRef: { name: 'pg-admin', key: 'password' } } },
              ],
              securityContext: sc,
              readinessProbe: { exec: { command: ['pg_isready', '-h', '127.0.0.1', '-U', 'kong'] }, periodSeconds: 1 },
              ...(o.persistent
                ? { lifecycle: { preStop: { exec: { command: ['pg_ctl', 'stop', '-m', 'fast', '-w', '-D', '/var/lib/postgresql/data/pg'] } } } }
                : {}),
              volumeMounts: [
                { name: 'data', mountPath: '/var/lib/postgresql/data' },
                { name: 'run', mountPath: '/var/run/postgresql' },
              ],
            },
          ],
          volumes: [data, { name: 'run', emptyDir: {} }],
        },
      },
    },
  };
  if ((await kubectl(['-n', ns, 'get', 'secret', 'pg-admin'])).exitCode !== 0) await pgSecret(ns, PG_PASSWORD, 'pg-admin');
  await kc(['apply', '-f', '-'], JSON.stringify(dep));
  if (wait) await kc(['-n', ns, 'rollout', 'status', 'deployment/postgres', '--timeout=180s']);
}

/** Run SQL in the namespace's Postgres (as the superuser `kong`, over the local socket). */
export async function psql(ns: string, sql: string): Promise<string> {
  return (await kc(['-n', ns, 'exec', 'deploy/postgres', '--', 'psql', '-U', 'kong', '-d', 'kong', '-Atq', '-c', sql])).trim();
}

export interface HelmRun extends Res {}

/**
 * helm upgrade --install of the e2e chart through the post-renderer (Helm 3 executable or Helm 4
 * plugin). `values`: a values file (for lists and maps that --set spells badly), before the
 * `set` pairs; `rendererArgs`: more post-renderer flags (e.g. --finish=always).
 */
export async function helmInstall(o: {
  helm: 3 | 4;
  ns: string;
  release: string;
  set: Record<string, string | number | boolean>;
  values?: Record<string, unknown>;
  finishSidecar?: boolean;
  rendererArgs?: string[];
}): Promise<HelmRun> {
  const bin = o.helm === 3 ? process.env.KDI_E2E_HELM3! : process.env.KDI_E2E_HELM4!;
  const home = path.join(os.tmpdir(), `kdi-e2e-helm${o.helm}`);
  const dist = process.env.KDI_E2E_DIST!;
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    KUBECONFIG,
    HELM_CONFIG_HOME: path.join(home, 'config'),
    HELM_DATA_HOME: path.join(home, 'data'),
    HELM_CACHE_HOME: path.join(home, 'cache'),
    KONG_DB_INIT_CLI: `node ${dist}/cli.js`,
  };
  delete env.HELM_PLUGINS;
  let renderer = path.join(ROOT, 'charts/post-renderer/helm3-post-render');
  if (o.helm === 4) {
    const plugins = await execa(bin, ['plugin', 'list'], { env, reject: false });
    if (!String(plugins.stdout).includes('kong-db-init')) {
      const inst = await execa(bin, ['plugin', 'install', path.join(ROOT, 'charts/post-renderer/kong-db-init')], { env, reject: false });
      if (inst.exitCode !== 0) throw new Error(`helm 4 plugin install failed: ${inst.stderr}`);
    }
    renderer = 'kong-db-init';
  }
  const sets = Object.entries(o.set).flatMap(([k, v]) => ['--set', `${k}=${v}`]);
  const files: string[] = [];
  if (o.values) {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-e2e-values-')), 'values.json');
    fs.writeFileSync(f, JSON.stringify(o.values));
    files.push('-f', f);
  }
  const rargs = ['--image=kong-db-init:ci', '--pull-policy=Never', ...(o.rendererArgs ?? [])];
  if (o.finishSidecar) {
    rargs.push('--finish-sidecar', `--namespace=${o.ns}`);
    // Helm 3 never shows hooks to a post-renderer: say that the chart's post-upgrade Job is off
    if (o.helm === 3 && o.set['migrations.postUpgrade'] === false) rargs.push('--post-upgrade-off');
  }
  const args = [
    'upgrade',
    '--install',
    o.release,
    CHART,
    '-n',
    o.ns,
    ...files,
    ...sets,
    '--post-renderer',
    renderer,
    ...rargs.flatMap((a) => ['--post-renderer-args', a]),
  ];
  const r = await execa(bin, args, { env, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

export interface PodInfo {
  metadata: { name: string; creationTimestamp: string; deletionTimestamp?: string; labels: Record<string, string> };
  spec: { initContainers: Array<{ name: string; image: string }>; containers: Array<{ name: string; image: string }> };
  status: {
    phase: string;
    conditions?: Array<{ type: string; status: string }>;
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}

export interface ContainerStatus {
  name: string;
  restartCount: number;
  ready: boolean;
  state: {
    running?: { startedAt: string };
    waiting?: { reason: string; message?: string };
    terminated?: { exitCode: number; message?: string; startedAt: string; finishedAt: string; reason?: string };
  };
  lastState?: ContainerStatus['state'];
}

export async function pods(ns: string, selector: string): Promise<PodInfo[]> {
  return (await kjson<{ items: PodInfo[] }>(['-n', ns, 'get', 'pods', '-l', selector])).items;
}

export const isReady = (p: PodInfo) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/** Diagnostics for a failed scenario: pods, events and logs of the namespace. */
export async function dump(ns: string): Promise<string> {
  const parts = [await kubectl(['-n', ns, 'get', 'pods', '-o', 'wide']), await kubectl(['-n', ns, 'get', 'events', '--sort-by=.lastTimestamp'])];
  const ps = await kubectl(['-n', ns, 'get', 'pods', '-o', 'name']);
  for (const p of ps.stdout.split('\n').filter(Boolean).slice(0, 6))
    parts.push(await kubectl(['-n', ns, 'logs', p, '--all-containers', '--tail=40', '--prefix']));
  return parts.map((r) => r.stdout + r.stderr).join('\n');
}

/**
 * The values path (Argo CD, Flux): `helm template | kong-db-init values` writes the overlay, then a
 * plain `helm upgrade --install -f user.yaml -f overlay.yaml` with no post-renderer.
 */
export async function helmValuesInstall(o: {
  helm: 3 | 4;
  ns: string;
  release: string;
  values: Record<string, unknown>;
}): Promise<HelmRun & { overlay: string }> {
  const bin = o.helm === 3 ? process.env.KDI_E2E_HELM3! : process.env.KDI_E2E_HELM4!;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-e2e-values-'));
  const user = path.join(dir, 'user.yaml');
  fs.writeFileSync(user, JSON.stringify(o.values));
  const env = { ...process.env, KUBECONFIG, HELM_CONFIG_HOME: path.join(dir, 'c'), HELM_DATA_HOME: path.join(dir, 'd'), HELM_CACHE_HOME: path.join(dir, 'x') };
  const tpl = await execa(bin, ['template', o.release, CHART, '-n', o.ns, '-f', user], { env, reject: false });
  if (tpl.exitCode !== 0) throw new Error(`helm template failed: ${tpl.stderr}`);
  const ov = await execa(
    process.execPath,
    [path.join(process.env.KDI_E2E_DIST!, 'cli.js'), 'values', '-f', user, '--image', 'kong-db-init:ci', '--pull-policy', 'Never'],
    { input: String(tpl.stdout), reject: false },
  );
  if (ov.exitCode !== 0) throw new Error(`kong-db-init values exited ${ov.exitCode}: ${ov.stderr}`);
  const overlay = path.join(dir, 'overlay.yaml');
  fs.writeFileSync(overlay, String(ov.stdout));
  const r = await execa(bin, ['upgrade', '--install', o.release, CHART, '-n', o.ns, '-f', user, '-f', overlay], { env, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), overlay: String(ov.stdout) };
}

/** A process of a container, from its /proc (the stand-in Kong image has no `ps`). */
export interface Proc {
  pid: number;
  comm: string;
  /** VmRSS in kB (0 for a zombie). */
  rssKb: number;
  cmdline: string;
}

/**
 * The processes of one container, read through `kubectl exec` from /proc (each container has its
 * own PID namespace unless the pod shares one): every process but the shell that reads them.
 */
export async function containerProcesses(ns: string, pod: string, container: string): Promise<Proc[]> {
  // shell text, not template literals: ${d#/proc/} and ${r:-0} are sh parameter expansions
  const script = [
    'for d in /proc/[0-9]*; do',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: sh
    '  p=${d#/proc/}; [ "$p" = "$$" ] && continue',
    '  c=$(cat $d/comm 2>/dev/null) || continue',
    "  r=$(sed -n 's/^VmRSS:[[:space:]]*\\([0-9]*\\).*/\\1/p' $d/status 2>/dev/null)",
    "  a=$(tr '\\0' ' ' <$d/cmdline 2>/dev/null)",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: sh
    '  echo "$p|$c|${r:-0}|$a"',
    'done',
  ].join('\n');
  const out = await kc(['-n', ns, 'exec', pod, '-c', container, '--', 'sh', '-c', script]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [pid, comm, rss, ...cmd] = l.split('|');
      return { pid: Number(pid), comm: comm ?? '', rssKb: Number(rss), cmdline: cmd.join('|').trim() };
    });
}

/**
 * One container's memory as its cgroup counts it (read inside the container: cgroup v1
 * memory.usage_in_bytes and memory.stat, or v2 memory.current and memory.stat) and as the kubelet
 * reports it (stats/summary: workingSetBytes = usage - inactive file, rssBytes = anonymous).
 * Figures for the record, in bytes; a missing one is undefined.
 */
export async function containerMemory(ns: string, pod: string, container: string): Promise<Record<string, number | undefined>> {
  const cg = await kc([
    '-n',
    ns,
    'exec',
    pod,
    '-c',
    container,
    '--',
    'sh',
    '-c',
    'if [ -f /sys/fs/cgroup/memory.current ]; then echo "usage $(cat /sys/fs/cgroup/memory.current)"; cat /sys/fs/cgroup/memory.stat; ' +
      'else echo "usage $(cat /sys/fs/cgroup/memory/memory.usage_in_bytes)"; cat /sys/fs/cgroup/memory/memory.stat; fi',
  ]);
  const stat = new Map(
    cg
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length === 2)
      .map(([k, v]) => [k!, Number(v)]),
  );
  const out: Record<string, number | undefined> = {
    cgroup_usage: stat.get('usage'),
    cgroup_rss: stat.get('total_rss') ?? stat.get('anon'),
    cgroup_cache: stat.get('total_cache') ?? stat.get('file'),
    cgroup_inactive_file: stat.get('total_inactive_file') ?? stat.get('inactive_file'),
  };
  const node = (await kjson<{ spec: { nodeName: string } }>(['-n', ns, 'get', 'pod', pod])).spec.nodeName;
  const summary = JSON.parse(await kc(['get', '--raw', `/api/v1/nodes/${node}/proxy/stats/summary`])) as {
    pods: Array<{
      podRef: { name: string; namespace: string };
      containers?: Array<{ name: string; memory?: { workingSetBytes?: number; rssBytes?: number; usageBytes?: number } }>;
    }>;
  };
  const m = summary.pods.find((p) => p.podRef.namespace === ns && p.podRef.name === pod)?.containers?.find((c) => c.name === container)?.memory;
  out.kubelet_working_set = m?.workingSetBytes;
  out.kubelet_rss = m?.rssBytes;
  out.kubelet_usage = m?.usageBytes;
  return out;
}
