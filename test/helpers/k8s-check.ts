/**
 * Offline validation of rendered manifests:
 * - `docs`: strict YAML decoding (a duplicate key is an error, as in kubectl and kustomize);
 * - `validateWorkloads`: kubernetes-models schemas plus a hand-written strict field list;
 * - `psaRestricted`: a hand-written Pod Security `restricted` rule set;
 * - `kubeCheck`: the Kubernetes project's own code (test/psa, built here from the Go module
 *   proxy): strict decoding into the real Go types and the real Pod Security evaluator;
 * - `kustomizeBuild`: `kubectl kustomize` on the stream (Flux postRenderers.kustomize, Argo CD).
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every document of a stream, decoded strictly: any YAML error (a duplicate key among them) throws. */
export function docs(stream: string): Obj[] {
  const all = parseAllDocuments(stream, { version: '1.1', uniqueKeys: true });
  if (!Array.isArray(all)) return [];
  const errors = all.flatMap((d) => d.errors.map((e) => e.message.split('\n')[0]));
  if (errors.length) throw new Error(`strict YAML decoding failed: ${errors.join('; ')}`);
  return all.map((d) => d.toJS() as Obj | null).filter((d): d is Obj => Boolean(d));
}

// Strict decoding (kubectl --validate=strict): the schemas above ignore unknown fields, so the
// fields of the pod spec and of containers, the objects we build, are checked against the
// Kubernetes v1.34 API field lists.
const FIELDS: Record<string, string[]> = {
  pod: 'volumes initContainers containers ephemeralContainers restartPolicy terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector serviceAccountName serviceAccount automountServiceAccountToken nodeName hostNetwork hostPID hostIPC shareProcessNamespace securityContext imagePullSecrets hostname subdomain affinity schedulerName tolerations hostAliases priorityClassName priority dnsConfig readinessGates runtimeClassName enableServiceLinks preemptionPolicy overhead topologySpreadConstraints setHostnameAsFQDN os hostUsers schedulingGates resourceClaims resources hostnameOverride'.split(
    ' ',
  ),
  container:
    'name image command args workingDir ports envFrom env resources resizePolicy restartPolicy restartPolicyRules volumeMounts volumeDevices livenessProbe readinessProbe startupProbe lifecycle terminationMessagePath terminationMessagePolicy imagePullPolicy securityContext stdin stdinOnce tty'.split(
      ' ',
    ),
  securityContext:
    'capabilities privileged seLinuxOptions windowsOptions runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem allowPrivilegeEscalation procMount seccompProfile appArmorProfile'.split(
      ' ',
    ),
  volumeMount: 'name readOnly recursiveReadOnly mountPath subPath mountPropagation subPathExpr'.split(' '),
  resources: 'limits requests claims'.split(' '),
  env: 'name value valueFrom'.split(' '),
  envFrom: 'prefix configMapRef secretRef'.split(' '),
};

function unknownFields(spec: Obj): string[] {
  const out: string[] = [];
  const check = (o: Obj | undefined, kind: string, at: string) => {
    for (const k of Object.keys(o ?? {})) if (!FIELDS[kind]!.includes(k)) out.push(`${at}.${k}`);
  };
  check(spec, 'pod', 'spec');
  for (const [list, cs] of [
    ['initContainers', spec.initContainers],
    ['containers', spec.containers],
  ] as const) {
    for (const c of (cs ?? []) as Obj[]) {
      const at = `${list}[${c.name}]`;
      check(c, 'container', at);
      check(c.securityContext, 'securityContext', `${at}.securityContext`);
      check(c.resources, 'resources', `${at}.resources`);
      for (const m of c.volumeMounts ?? []) check(m, 'volumeMount', `${at}.volumeMounts[${m.name}]`);
      for (const e of c.env ?? []) check(e, 'env', `${at}.env[${e.name}]`);
      for (const e of c.envFrom ?? []) check(e, 'envFrom', `${at}.envFrom`);
    }
  }
  return out;
}

/** Throws with a list of problems; returns the number of workloads checked. */
export function validateWorkloads(stream: string): number {
  const problems: string[] = [];
  let n = 0;
  for (const d of docs(stream)) {
    const ctor = { Deployment, DaemonSet, StatefulSet, Job }[d.kind as string] as (new (x: Obj) => { validate(): void }) | undefined;
    if (!ctor) continue;
    n++;
    const id = `${d.kind}/${d.metadata?.name}`;
    try {
      new ctor(d).validate();
    } catch (e) {
      problems.push(`${id}: schema: ${(e as Error).message}`);
    }
    const spec = d.spec?.template?.spec ?? {};
    const inits: Obj[] = spec.initContainers ?? [];
    const mains: Obj[] = spec.containers ?? [];
    const names = [...inits, ...mains].map((c) => c.name);
    if (new Set(names).size !== names.length) problems.push(`${id}: duplicate container names ${names.join(',')}`);
    for (const c of inits) {
      for (const k of ['readinessProbe', 'livenessProbe', 'startupProbe', 'lifecycle']) if (c[k]) problems.push(`${id}: init container ${c.name} has ${k}`);
    }
    problems.push(...unknownFields(spec).map((f) => `${id}: unknown field ${f}`));
    const vols = new Set((spec.volumes ?? []).map((v: Obj) => v.name));
    for (const c of [...inits, ...mains]) {
      for (const m of c.volumeMounts ?? []) if (!vols.has(m.name)) problems.push(`${id}: ${c.name} mounts missing volume ${m.name}`);
    }
  }
  if (problems.length) throw new Error(problems.join('\n'));
  return n;
}

// ------------------------------------------------------------------------------------------------
// Pod Security Standards, level `restricted` (the Kubernetes v1.34 rule set: baseline + restricted),
// applied offline to every pod template, as the admission controller would with
// `pod-security.kubernetes.io/enforce: restricted`.

const RESTRICTED_VOLUMES = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret', 'image'];
const SAFE_SYSCTLS = [
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
  'net.ipv4.tcp_rmem',
  'net.ipv4.tcp_wmem',
];
const SELINUX_TYPES = ['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t'];

/** Problems that make the pod template fail `restricted` (empty: it passes). */
export function psaRestrictedProblems(podSpec: Obj, podAnnotations: Obj = {}): string[] {
  const p: string[] = [];
  const psc: Obj = podSpec.securityContext ?? {};
  const containers: Obj[] = [...(podSpec.initContainers ?? []), ...(podSpec.containers ?? []), ...(podSpec.ephemeralContainers ?? [])];
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) if (podSpec[k]) p.push(`${k}: true`);
  if (psc.windowsOptions?.hostProcess) p.push('pod hostProcess');
  for (const v of podSpec.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (!type || !RESTRICTED_VOLUMES.includes(type)) p.push(`volume ${v.name}: type ${type} is not allowed`);
  }
  for (const s of psc.sysctls ?? []) if (!SAFE_SYSCTLS.includes(s.name)) p.push(`sysctl ${s.name}`);
  const podSeccomp = psc.seccompProfile?.type;
  if (podSeccomp === 'Unconfined') p.push('pod seccompProfile Unconfined');
  if (psc.runAsUser === 0) p.push('pod runAsUser 0');
  if (psc.appArmorProfile?.type === 'Unconfined') p.push('pod appArmorProfile Unconfined');
  if (psc.seLinuxOptions && (!SELINUX_TYPES.includes(psc.seLinuxOptions.type ?? '') || psc.seLinuxOptions.user || psc.seLinuxOptions.role))
    p.push('pod seLinuxOptions');
  for (const c of containers) {
    const sc: Obj = c.securityContext ?? {};
    const id = `container ${c.name}`;
    if (sc.privileged) p.push(`${id}: privileged`);
    if (sc.windowsOptions?.hostProcess) p.push(`${id}: hostProcess`);
    for (const port of c.ports ?? []) if (port.hostPort) p.push(`${id}: hostPort ${port.hostPort}`);
    if (sc.procMount && sc.procMount !== 'Default') p.push(`${id}: procMount ${sc.procMount}`);
    if (sc.appArmorProfile?.type === 'Unconfined' || podAnnotations[`container.apparmor.security.beta.kubernetes.io/${c.name}`] === 'unconfined')
      p.push(`${id}: AppArmor unconfined`);
    if (sc.seLinuxOptions && (!SELINUX_TYPES.includes(sc.seLinuxOptions.type ?? '') || sc.seLinuxOptions.user || sc.seLinuxOptions.role))
      p.push(`${id}: seLinuxOptions`);
    if (sc.allowPrivilegeEscalation !== false) p.push(`${id}: allowPrivilegeEscalation must be false`);
    const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (nonRoot !== true) p.push(`${id}: runAsNonRoot must be true (pod or container)`);
    if (sc.runAsUser === 0) p.push(`${id}: runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost')
      p.push(`${id}: seccompProfile must be RuntimeDefault or Localhost (pod or container), is ${seccomp ?? 'unset'}`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) p.push(`${id}: capabilities must drop ALL`);
    for (const cap of sc.capabilities?.add ?? []) if (cap !== 'NET_BIND_SERVICE') p.push(`${id}: capability ${cap} added`);
  }
  return p;
}

/** PSA `restricted` problems of every workload in a stream, by workload. */
export function psaRestricted(stream: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const d of docs(stream)) {
    if (!['Deployment', 'DaemonSet', 'StatefulSet', 'Job'].includes(d.kind)) continue;
    const t = d.spec?.template ?? {};
    out[`${d.kind}/${d.metadata?.name}`] = psaRestrictedProblems(t.spec ?? {}, t.metadata?.annotations ?? {});
  }
  return out;
}

/**
 * PSA `restricted` problems that our containers bring: every problem of the install container,
 * and those of the migrate (or replaced wait) container that the `proxy` container it copies
 * does not have. Empty when we add nothing the chart's own choices did not already cause.
 */
export function psaProblemsOfOurs(stream: string): string[] {
  const out: string[] = [];
  for (const [id, problems] of Object.entries(psaRestricted(stream))) {
    const of = (c: string) => problems.filter((p) => p.startsWith(`container ${c}:`)).map((p) => p.slice(`container ${c}:`.length));
    const proxy = new Set(of('proxy'));
    out.push(...of('kong-db-init-install').map((p) => `${id}: kong-db-init-install:${p}`));
    for (const c of ['kong-db-init'])
      out.push(
        ...of(c)
          .filter((p) => !proxy.has(p))
          .map((p) => `${id}: ${c}:${p}`),
      );
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The Kubernetes project's own checks, offline: test/psa/main.go (our code) links
// k8s.io/pod-security-admission/policy (the evaluator the admission controller runs) and decodes
// with sigs.k8s.io/yaml UnmarshalStrict into k8s.io/api types. Built with `go build` from the Go
// module proxy on first use, cached under ${KDI_CACHE_DIR:-~/.cache/kong-db-init}.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHECK_SRC = path.join(ROOT, 'test/psa');
const CACHE = process.env.KDI_CACHE_DIR ?? path.join(os.homedir(), '.cache/kong-db-init');

export function goAvailable(): boolean {
  return spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
}

function kubeCheckPath(): string {
  const hash = createHash('sha256');
  for (const f of ['go.mod', 'go.sum', 'main.go']) hash.update(fs.readFileSync(path.join(CHECK_SRC, f)));
  return path.join(CACHE, `k8s-check-${hash.digest('hex').slice(0, 12)}`, 'kdi-k8s-check');
}
const GO_BUILD = ['build', '-trimpath', '-o'];
const goEnv = () => ({ ...process.env, GOFLAGS: '-mod=readonly -buildvcs=false', CGO_ENABLED: '0' });

/**
 * Build the checker (once per source version; cached), without blocking the event loop: a cold
 * build downloads the modules and compiles k8s.io/api for a minute or two. Call it in beforeAll.
 */
export async function buildKubeCheck(): Promise<string> {
  const bin = kubeCheckPath();
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  await new Promise<void>((resolve, reject) => {
    const p = spawn('go', [...GO_BUILD, tmp, '.'], { cwd: CHECK_SRC, stdio: ['ignore', 'ignore', 'inherit'], env: goEnv() });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`go build in ${CHECK_SRC} exited ${code}`))));
  });
  fs.renameSync(tmp, bin);
  return bin;
}

/** The checker binary (built synchronously if buildKubeCheck has not run). */
export function kubeCheckBin(): string {
  const bin = kubeCheckPath();
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  execFileSync('go', [...GO_BUILD, tmp, '.'], { cwd: CHECK_SRC, stdio: ['ignore', 'ignore', 'inherit'], env: goEnv(), timeout: 900_000 });
  fs.renameSync(tmp, bin);
  return bin;
}

export interface KubeCheck {
  kind: string;
  name: string;
  /** Strict decoding errors (unknown fields, duplicate keys, wrong types). */
  strict: string[];
  /** Pod Security findings at the level asked for (empty: allowed). */
  psa: Array<{ reason: string; detail: string }>;
}

/** Run the real checks on a stream: one entry per workload, Job, ServiceAccount, Role, RoleBinding. */
export function kubeCheck(stream: string, level: 'restricted' | 'baseline' = 'restricted'): KubeCheck[] {
  return JSON.parse(execFileSync(kubeCheckBin(), [level], { input: stream, encoding: 'utf8', maxBuffer: 64 << 20 })) as KubeCheck[];
}

/** Strict-decoding errors and PSA findings of a stream by object, empty entries left out. */
export function kubeProblems(stream: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of kubeCheck(stream)) {
    const p = [...r.strict.map((s) => `strict: ${s}`), ...r.psa.map((f) => `psa: ${f.reason}: ${f.detail}`)];
    if (p.length) out[`${r.kind}/${r.name}`] = p;
  }
  return out;
}

const OUR_CONTAINERS = ['kong-db-init-install', 'kong-db-init', 'kong-db-init-finish'];

/**
 * Real-evaluator findings that our containers bring: any finding naming the install container, and
 * those naming the migrate or finish container that do not name the `proxy` container they copy.
 */
export function kubePsaOfOurs(stream: string): string[] {
  const out: string[] = [];
  for (const r of kubeCheck(stream)) {
    for (const f of r.psa) {
      const named = [...f.detail.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
      const ours = named.filter((n) => OUR_CONTAINERS.includes(n));
      const mine = ours.filter((n) => n === 'kong-db-init-install' || !named.includes('proxy'));
      if (mine.length) out.push(`${r.kind}/${r.name}: ${f.reason}: ${f.detail}`);
    }
  }
  return out;
}

/**
 * `kubectl kustomize` on a stream, as Flux's postRenderers.kustomize and Argo CD's helm+kustomize
 * consume a release. kubectl from PATH (or KDI_KUBECTL, or the e2e cache); without one, the same
 * kustomize (v5.5.0, the version kubectl 1.32 embeds) built from the Go module proxy into the cache.
 */
export const KUSTOMIZE_VERSION = 'v5.5.0';
const kustomizeBin = () => path.join(CACHE, `kustomize-${KUSTOMIZE_VERSION}`, 'kustomize');

export function kubectlBin(): string | undefined {
  const cands = [process.env.KDI_KUBECTL, ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'kubectl')), path.join(CACHE, 'k8s/bin/kubectl')];
  return cands.find((c) => c && fs.existsSync(c) && spawnSync(c, ['kustomize', '--help'], { stdio: 'ignore' }).status === 0);
}

/** How to run kustomize here: kubectl's, else the cached build; undefined when neither exists yet. */
function kustomizeCommand(): string[] | undefined {
  const k = kubectlBin();
  if (k) return [k, 'kustomize'];
  return fs.existsSync(kustomizeBin()) ? [kustomizeBin(), 'build'] : undefined;
}

/** Make sure kustomize can run (builds it with `go install` when there is no kubectl); call in beforeAll. */
export async function ensureKustomize(): Promise<boolean> {
  if (kustomizeCommand()) return true;
  if (!goAvailable()) return false;
  const dir = path.dirname(kustomizeBin());
  fs.mkdirSync(dir, { recursive: true });
  await new Promise<void>((resolve, reject) => {
    const p = spawn('go', ['install', `sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}`], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...goEnv(), GOFLAGS: '-buildvcs=false', GOBIN: dir },
    });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`go install kustomize exited ${code}`))));
  });
  return Boolean(kustomizeCommand());
}

/** Whether kustomize is available now or can be built (kubectl, the cache, or go). */
export function kustomizeAvailable(): boolean {
  return Boolean(kustomizeCommand()) || goAvailable();
}

export function kustomizeBuild(stream: string): { ok: boolean; output: string } {
  const cmd = kustomizeCommand();
  if (!cmd) throw new Error('no kustomize: call ensureKustomize() in beforeAll');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-kustomize-'));
  fs.writeFileSync(path.join(dir, 'release.yaml'), stream);
  fs.writeFileSync(path.join(dir, 'kustomization.yaml'), 'resources:\n- release.yaml\n');
  const r = spawnSync(cmd[0]!, [...cmd.slice(1), dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
  fs.rmSync(dir, { recursive: true, force: true });
  return { ok: r.status === 0, output: r.status === 0 ? r.stdout : r.stderr };
}

// ------------------------------------------------------------------------------------------------
// Real Helm binaries (.ci/run builds them and exports KDI_HELM3_BIN / KDI_HELM4_BIN).

function helmVersion(bin: string): string {
  return execFileSync(bin, ['version', '--short'], { encoding: 'utf8', env: { ...process.env, HELM_CONFIG_HOME: os.tmpdir() } }).trim();
}

export function helmBinaries(): { v3?: string; v4?: string } {
  const found: { v3?: string; v4?: string } = {};
  const candidates = [
    process.env.KDI_HELM3_BIN,
    process.env.KDI_HELM4_BIN,
    path.join(ROOT, '.tmp/helm3/helm'),
    path.join(ROOT, '.tmp/helm4/helm'),
    ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'helm')),
  ];
  for (const c of candidates) {
    if (!c || !fs.existsSync(c)) continue;
    try {
      const v = helmVersion(c);
      if (v.startsWith('v3') && !found.v3) found.v3 = c;
      if (v.startsWith('v4') && !found.v4) found.v4 = c;
    } catch {
      // not a usable helm
    }
  }
  return found;
}

/** A private Helm home (config, data, cache) so that tests never touch the user's. */
export function helmEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-helm-home-'));
  const env: Record<string, string | undefined> = {
    ...process.env,
    HELM_CONFIG_HOME: path.join(home, 'c'),
    HELM_DATA_HOME: path.join(home, 'd'),
    HELM_CACHE_HOME: path.join(home, 'x'),
    ...extra,
  };
  delete env.HELM_PLUGINS;
  delete env.KONG_DB_INIT_IMAGE;
  return env;
}
