/**
 * Reading a parsed manifest: what a document is (a Kong gateway workload, a controller-only Kong
 * workload, one of the chart's migration Jobs) and the pod-level facts the injection depends on
 * (service mesh, Vault agent, seccomp). Pure; nothing here edits a document.
 */
import { isMap, isScalar, isSeq, type Document, type YAMLMap } from 'yaml';
import { RUNS_KONG_MIGRATIONS, type JobRole } from './stream.js';

export const WAIT_CONTAINER = 'wait-for-db';
/** Init containers the Kong chart itself renders (everything else in the list is the user's or ours). */
export const CHART_INIT_CONTAINERS = ['clear-stale-pid', WAIT_CONTAINER, 'wait-for-postgres'];

export const get = (m: unknown, key: string): unknown => (isMap(m) ? m.get(key, true) : undefined);
export const str = (n: unknown): string | undefined => {
  if (isScalar(n)) return n.value === null || n.value === undefined ? undefined : String(n.value);
  return typeof n === 'string' || typeof n === 'number' || typeof n === 'boolean' ? String(n) : undefined;
};
export const seqItems = (n: unknown): YAMLMap[] => (isSeq(n) ? (n.items.filter((i) => isMap(i)) as YAMLMap[]) : []);
export const nameOf = (c: unknown): string => str(get(c, 'name')) ?? '';

function record(n: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isMap(n)) for (const p of n.items) out[String(isScalar(p.key) ? p.key.value : p.key)] = str(p.value) ?? '';
  return out;
}

export interface DocMeta {
  kind?: string;
  name?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export function meta(doc: Document): DocMeta {
  const md = get(doc.contents, 'metadata');
  return { kind: str(get(doc.contents, 'kind')), name: str(get(md, 'name')), labels: record(get(md, 'labels')), annotations: record(get(md, 'annotations')) };
}

export const idOf = (doc: Document): string => `${meta(doc).kind}/${meta(doc).name}`;

export function envValue(container: unknown, name: string): string | undefined {
  for (const e of seqItems(get(container, 'env'))) if (str(get(e, 'name')) === name) return str(get(e, 'value'));
  return undefined;
}

/** Which of the chart's migration Jobs a parsed document is, by its component label or name suffix. */
export function migrationJob(doc: Document): JobRole | undefined {
  const m = meta(doc);
  if (m.kind !== 'Job' || !RUNS_KONG_MIGRATIONS.test(JSON.stringify(doc.getIn(['spec', 'template', 'spec', 'containers']) ?? ''))) return undefined;
  const component = m.labels['app.kubernetes.io/component'] ?? '';
  const name = m.name ?? '';
  for (const role of ['init', 'pre-upgrade', 'post-upgrade'] as const) {
    if (component === `${role}-migrations` || name.endsWith(`-${role}-migrations`)) return role;
  }
  return undefined;
}

/**
 * What a workload is, as far as we are concerned:
 * - `target`: a Kong gateway using Postgres (gets our init containers);
 * - `dbless`, `data-plane`, `controller-only`: a Kong chart workload we leave alone;
 * - `no-proxy`: a Kong gateway that uses Postgres but has no `proxy` container (we cannot build from it);
 * - `other`: not the Kong chart's.
 */
export type WorkloadKind = 'target' | 'dbless' | 'data-plane' | 'controller-only' | 'no-proxy' | 'other';

export interface RenderedWorkload {
  kind: WorkloadKind;
  podSpec: YAMLMap;
  /** The pod template's metadata (annotations, labels). */
  podMeta: { labels: Record<string, string>; annotations: Record<string, string> };
  proxy?: YAMLMap;
}

const KONG_IMAGE = /(^|\/)kong(-gateway)?(:|@|$)|(^|\/)kong\/kong-gateway/;

export function inspectWorkload(doc: Document): RenderedWorkload | undefined {
  const m = meta(doc);
  if (m.kind !== 'Deployment' && m.kind !== 'DaemonSet' && m.kind !== 'StatefulSet') return undefined;
  const template = doc.getIn(['spec', 'template'], true);
  const podSpec = get(template, 'spec');
  if (!isMap(podSpec)) return undefined;
  const tm = get(template, 'metadata');
  const podMeta = { labels: record(get(tm, 'labels')), annotations: record(get(tm, 'annotations')) };
  const containers = seqItems(get(podSpec, 'containers'));
  const initNames = seqItems(get(podSpec, 'initContainers')).map(nameOf);
  const proxy = containers.find((c) => nameOf(c) === 'proxy');
  const appName = m.labels['app.kubernetes.io/name'] ?? '';
  const chart = m.labels['helm.sh/chart'] ?? '';
  const kongChart =
    appName === 'kong' ||
    appName === 'gateway' ||
    /^kong-\d/.test(chart) ||
    initNames.includes(WAIT_CONTAINER) ||
    initNames.includes('clear-stale-pid') ||
    containers.some((c) => KONG_IMAGE.test(str(get(c, 'image')) ?? ''));
  if (!kongChart) return { kind: 'other', podSpec, podMeta };
  if (!proxy) {
    // the chart's gateway container is always "proxy"; a Postgres-backed Kong under another name cannot be built from
    const pgElsewhere = containers.some((c) => envValue(c, 'KONG_DATABASE') === 'postgres');
    return { kind: pgElsewhere ? 'no-proxy' : 'controller-only', podSpec, podMeta };
  }
  const db = envValue(proxy, 'KONG_DATABASE');
  const usesPostgres = db === 'postgres' || (db === undefined && initNames.includes(WAIT_CONTAINER));
  const kind: WorkloadKind = envValue(proxy, 'KONG_ROLE') === 'data_plane' ? 'data-plane' : usesPostgres ? 'target' : 'dbless';
  return { kind, podSpec, podMeta, proxy };
}

/** The pod-level seccomp profile type, if the pod sets one. */
export function podSeccomp(podSpec: YAMLMap): string | undefined {
  return str(get(get(get(podSpec, 'securityContext'), 'seccompProfile'), 'type'));
}

// ------------------------------------------------------------------------------------------------
// Service meshes whose sidecar is an ordinary container: it starts after every init container, so
// an init container that needs the network (ours: Postgres) cannot get out while the mesh
// redirects its traffic. Native sidecars (Kubernetes >= 1.29, restartPolicy: Always init
// containers) start first and are fine; so is a Postgres port excluded from the redirect.

export interface MeshFinding {
  mesh: string;
  /** The annotation (or label) that says the mesh is injected. */
  evidence: string;
  /** What the user can set to make it work, in order of preference. */
  fixes: string[];
}

const MESHES: Array<{
  mesh: string;
  inject: (a: Record<string, string>, l: Record<string, string>) => string | undefined;
  ok: (a: Record<string, string>) => boolean;
  fixes: (port: string) => string[];
}> = [
  {
    mesh: 'Istio',
    inject: (a, l) =>
      l['sidecar.istio.io/inject'] === 'true'
        ? 'label sidecar.istio.io/inject=true'
        : a['sidecar.istio.io/inject'] === 'true'
          ? 'annotation sidecar.istio.io/inject=true'
          : undefined,
    ok: (a) => a['sidecar.istio.io/nativeSidecar'] === 'true' || a['traffic.sidecar.istio.io/excludeOutboundPorts'] !== undefined,
    fixes: (port) => [
      'podAnnotations: {sidecar.istio.io/nativeSidecar: "true"} (Kubernetes >= 1.29: the sidecar starts before the init containers)',
      `podAnnotations: {traffic.sidecar.istio.io/excludeOutboundPorts: "${port}"} (Postgres traffic bypasses the mesh)`,
    ],
  },
  {
    mesh: 'Linkerd',
    inject: (a) => (['enabled', 'ingress'].includes(a['linkerd.io/inject'] ?? '') ? `annotation linkerd.io/inject=${a['linkerd.io/inject']}` : undefined),
    ok: (a) =>
      a['config.beta.linkerd.io/proxy-enable-native-sidecar'] === 'true' ||
      a['config.alpha.linkerd.io/proxy-enable-native-sidecar'] === 'true' ||
      a['config.linkerd.io/skip-outbound-ports'] !== undefined,
    fixes: (port) => [
      'podAnnotations: {config.beta.linkerd.io/proxy-enable-native-sidecar: "true"} (Linkerd >= 2.15 on Kubernetes >= 1.29)',
      `podAnnotations: {config.linkerd.io/skip-outbound-ports: "${port}"} (Postgres traffic bypasses the mesh)`,
    ],
  },
  {
    mesh: 'Kuma / Kong Mesh',
    inject: (a, l) =>
      l['kuma.io/sidecar-injection'] === 'enabled'
        ? 'label kuma.io/sidecar-injection=enabled'
        : a['kuma.io/sidecar-injection'] === 'enabled'
          ? 'annotation kuma.io/sidecar-injection=enabled'
          : undefined,
    ok: (a) => a['traffic.kuma.io/exclude-outbound-ports'] !== undefined,
    fixes: (port) => [
      'native sidecars in the Kuma control plane (Kubernetes >= 1.29), then pass --mesh-ready',
      `podAnnotations: {traffic.kuma.io/exclude-outbound-ports: "${port}"} (Postgres traffic bypasses the mesh)`,
    ],
  },
];

/**
 * `problem`: a mesh whose non-native sidecar would cut our init container off from Postgres;
 * `ok`: the pod asks for native sidecars or excludes a port from the mesh; `none`: no sign of a mesh.
 */
export function meshStatus(w: RenderedWorkload): { status: 'none' | 'ok' } | ({ status: 'problem' } & MeshFinding) {
  const port = (w.proxy && envValue(w.proxy, 'KONG_PG_PORT')) || '5432';
  for (const m of MESHES) {
    const evidence = m.inject(w.podMeta.annotations, w.podMeta.labels);
    if (evidence && !m.ok(w.podMeta.annotations)) return { status: 'problem', mesh: m.mesh, evidence, fixes: m.fixes(port) };
  }
  return MESHES.some((m) => m.ok(w.podMeta.annotations)) ? { status: 'ok' } : { status: 'none' };
}

// ------------------------------------------------------------------------------------------------
// HashiCorp Vault agent injector: its init container (which writes the secret files) runs after
// the pod's other init containers unless `agent-init-first` is "true".

export const VAULT_INJECT = 'vault.hashicorp.com/agent-inject';
export const VAULT_INIT_FIRST = 'vault.hashicorp.com/agent-init-first';
export const VAULT_PRE_POPULATE = 'vault.hashicorp.com/agent-pre-populate';

export type VaultFinding = { action: 'none' } | { action: 'init-first' } | { action: 'refuse'; reason: string };

export function vaultFinding(w: RenderedWorkload): VaultFinding {
  const a = w.podMeta.annotations;
  if (a[VAULT_INJECT] !== 'true') return { action: 'none' };
  const secretsPath = a['vault.hashicorp.com/secret-volume-path'] || '/vault/secrets';
  const readsVaultFiles = seqItems(get(w.proxy, 'env')).some((e) => (str(get(e, 'value')) ?? '').startsWith(secretsPath));
  if (a[VAULT_PRE_POPULATE] === 'false' && readsVaultFiles) {
    return {
      action: 'refuse',
      reason: `the pod reads Vault files under ${secretsPath} but ${VAULT_PRE_POPULATE} is "false": the Vault agent then has no init container and the files do not exist while init containers run; set podAnnotations ${VAULT_PRE_POPULATE}: "true"`,
    };
  }
  return a[VAULT_INIT_FIRST] === 'true' ? { action: 'none' } : { action: 'init-first' };
}
