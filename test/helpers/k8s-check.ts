/** Offline validation of rendered workloads: kubernetes-models schemas plus our own checks. */
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function docs(stream: string): Obj[] {
  return parseAllDocuments(stream, { version: '1.1' })
    .map((d) => d.toJS() as Obj | null)
    .filter((d): d is Obj => Boolean(d));
}

// Strict decoding (kubectl --validate=strict): the schemas above ignore unknown fields, so the
// fields of the pod spec and of containers, the objects we build, are checked against the
// Kubernetes v1.34 API field lists.
const FIELDS: Record<string, string[]> = {
  pod: 'volumes initContainers containers ephemeralContainers restartPolicy terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector serviceAccountName serviceAccount automountServiceAccountToken nodeName hostNetwork hostPID hostIPC shareProcessNamespace securityContext imagePullSecrets hostname subdomain affinity schedulerName tolerations hostAliases priorityClassName priority dnsConfig readinessGates runtimeClassName enableServiceLinks preemptionPolicy overhead topologySpreadConstraints setHostnameAsFQDN os hostUsers schedulingGates resourceClaims resources hostnameOverride'.split(' '),
  container: 'name image command args workingDir ports envFrom env resources resizePolicy restartPolicy restartPolicyRules volumeMounts volumeDevices livenessProbe readinessProbe startupProbe lifecycle terminationMessagePath terminationMessagePolicy imagePullPolicy securityContext stdin stdinOnce tty'.split(' '),
  securityContext: 'capabilities privileged seLinuxOptions windowsOptions runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem allowPrivilegeEscalation procMount seccompProfile appArmorProfile'.split(' '),
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
  for (const [list, cs] of [['initContainers', spec.initContainers], ['containers', spec.containers]] as const) {
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
const SAFE_SYSCTLS = ['kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.tcp_syncookies', 'net.ipv4.ping_group_range', 'net.ipv4.ip_local_reserved_ports', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout', 'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes', 'net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem'];
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
  if (psc.seLinuxOptions && (!SELINUX_TYPES.includes(psc.seLinuxOptions.type ?? '') || psc.seLinuxOptions.user || psc.seLinuxOptions.role)) p.push('pod seLinuxOptions');
  for (const c of containers) {
    const sc: Obj = c.securityContext ?? {};
    const id = `container ${c.name}`;
    if (sc.privileged) p.push(`${id}: privileged`);
    if (sc.windowsOptions?.hostProcess) p.push(`${id}: hostProcess`);
    for (const port of c.ports ?? []) if (port.hostPort) p.push(`${id}: hostPort ${port.hostPort}`);
    if (sc.procMount && sc.procMount !== 'Default') p.push(`${id}: procMount ${sc.procMount}`);
    if (sc.appArmorProfile?.type === 'Unconfined' || podAnnotations[`container.apparmor.security.beta.kubernetes.io/${c.name}`] === 'unconfined') p.push(`${id}: AppArmor unconfined`);
    if (sc.seLinuxOptions && (!SELINUX_TYPES.includes(sc.seLinuxOptions.type ?? '') || sc.seLinuxOptions.user || sc.seLinuxOptions.role)) p.push(`${id}: seLinuxOptions`);
    if (sc.allowPrivilegeEscalation !== false) p.push(`${id}: allowPrivilegeEscalation must be false`);
    const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (nonRoot !== true) p.push(`${id}: runAsNonRoot must be true (pod or container)`);
    if (sc.runAsUser === 0) p.push(`${id}: runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') p.push(`${id}: seccompProfile must be RuntimeDefault or Localhost (pod or container), is ${seccomp ?? 'unset'}`);
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
    for (const c of ['kong-db-init']) out.push(...of(c).filter((p) => !proxy.has(p)).map((p) => `${id}: ${c}:${p}`));
  }
  return out;
}
