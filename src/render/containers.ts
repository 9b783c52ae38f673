/**
 * Our init containers, built from the release's own `proxy` container (pure: nodes in, nodes out).
 * The migrate container runs in the proxy's image with the proxy's env, envFrom, mounts and
 * securityContext; the install container runs our image and follows the chart's securityContext
 * choices (the proxy's uid/gid when it has them, none when the chart sets none, as on OpenShift).
 * Both meet Pod Security `restricted`: seccompProfile RuntimeDefault where the pod sets none.
 */
import { isMap, isSeq, YAMLMap, YAMLSeq, type Document, type Node } from 'yaml';
import type { FinishPolicy } from '../engine/plan.js';
import { get, str } from './workload.js';

export const INSTALL_CONTAINER = 'kong-db-init-install';
export const MIGRATE_CONTAINER = 'kong-db-init';
export const BIN_VOLUME = 'kong-db-init-bin';
export const BIN_PATH = '/kong-db-init';
/** The finish sidecar (src/render/finish-sidecar.ts). */
export const FINISH_CONTAINER = 'kong-db-init-finish';
/** Where the program lives in our image (and in the all-in-one image). */
export const IMAGE_DIR = '/opt/kong-db-init';
/** Names of everything we add to a pod: containers and the volume. */
export const OURS = [INSTALL_CONTAINER, MIGRATE_CONTAINER, BIN_VOLUME];

export const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'] as const;
export type PullPolicy = (typeof PULL_POLICIES)[number];

/** Bounded defaults when the proxy has no resources (the chart's default is `resources: {}`). */
export const DEFAULT_MIGRATE_RESOURCES = { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '512Mi' } };
export const INSTALL_RESOURCES = { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } };

export interface ContainerOptions {
  /** Our image (install mode): copies the program into an emptyDir. */
  image?: string;
  /** imagePullPolicy of the install container (and of the migrate container when the proxy has none). */
  pullPolicy: PullPolicy;
  /** All-in-one mode: an image built FROM a Kong image with kong-db-init on PATH. */
  allInOne?: string;
  finish: FinishPolicy;
  requests?: Record<string, string>;
  limits?: Record<string, string>;
}

const clone = (n: unknown): Node | undefined => (n ? ((n as Node).clone() as Node) : undefined);
const nonEmpty = (n: unknown): boolean => (isMap(n) ? n.items.length > 0 : isSeq(n) ? n.items.length > 0 : n !== undefined && n !== null);

function resources(doc: Document, o: ContainerOptions, proxy: YAMLMap): Node {
  if (o.requests || o.limits) return doc.createNode({ ...(o.requests ? { requests: o.requests } : {}), ...(o.limits ? { limits: o.limits } : {}) }) as Node;
  const r = get(proxy, 'resources');
  return nonEmpty(r) ? clone(r)! : (doc.createNode(DEFAULT_MIGRATE_RESOURCES) as Node);
}

/** The proxy's securityContext, plus seccompProfile RuntimeDefault when neither it nor the pod has one. */
function migrateSecurity(doc: Document, proxy: YAMLMap, podSeccomp: string | undefined): Node | undefined {
  const sc = clone(get(proxy, 'securityContext')) as YAMLMap | undefined;
  if (podSeccomp || str(get(get(sc, 'seccompProfile'), 'type'))) return sc;
  const out = isMap(sc) ? sc : new YAMLMap();
  out.set('seccompProfile', doc.createNode({ type: 'RuntimeDefault' }));
  return out;
}

/** The install container's securityContext: restricted, with the proxy's uid/gid (or none, like the chart). */
function installSecurity(doc: Document, proxy: YAMLMap, podSeccomp: string | undefined): Node {
  const psc = get(proxy, 'securityContext');
  const ids: Record<string, unknown> = {};
  for (const k of ['runAsUser', 'runAsGroup']) {
    const v = get(psc, k);
    if (v !== undefined) ids[k] = (v as { toJSON(): unknown }).toJSON();
  }
  return doc.createNode({
    runAsNonRoot: true,
    ...ids,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    ...(podSeccomp ? {} : { seccompProfile: { type: 'RuntimeDefault' } }),
  }) as Node;
}

/** Our own container (`kong-db-init migrate`, or `wait`), run in the proxy's Kong image with the proxy's settings. */
export function toolContainer(
  doc: Document,
  proxy: YAMLMap,
  o: ContainerOptions,
  podSeccomp: string | undefined,
  command: 'migrate' | 'wait',
  base?: YAMLMap,
): YAMLMap {
  const src = base ?? proxy;
  const c = new YAMLMap();
  c.set('name', command === 'migrate' ? MIGRATE_CONTAINER : 'wait-for-db');
  c.set('image', o.allInOne ?? clone(get(proxy, 'image')) ?? '');
  const pull = get(src, 'imagePullPolicy');
  c.set('imagePullPolicy', pull && !o.allInOne ? clone(pull) : o.pullPolicy);
  c.set('command', doc.createNode(o.allInOne ? [`${IMAGE_DIR}/kong-db-init`, command] : [`${BIN_PATH}/kong-db-init`, command], { flow: true }));
  if (command === 'migrate') c.set('args', doc.createNode([`--finish=${o.finish}`], { flow: true }));
  for (const key of ['env', 'envFrom']) {
    const v = get(src, key);
    if (v) c.set(key, clone(v));
  }
  const sc = migrateSecurity(doc, src, podSeccomp);
  if (sc) c.set('securityContext', sc);
  const mounts = isSeq(get(src, 'volumeMounts')) ? ((get(src, 'volumeMounts') as YAMLSeq).clone() as YAMLSeq) : new YAMLSeq();
  if (!o.allInOne) mounts.add(doc.createNode({ name: BIN_VOLUME, mountPath: BIN_PATH, readOnly: true }));
  if (mounts.items.length) c.set('volumeMounts', mounts);
  c.set('resources', resources(doc, o, proxy));
  return c;
}

/** `kong-db-init install`: copies the program from our image into the shared emptyDir. */
export function installContainer(doc: Document, proxy: YAMLMap, o: ContainerOptions, podSeccomp: string | undefined): YAMLMap {
  const c = new YAMLMap();
  c.set('name', INSTALL_CONTAINER);
  c.set('image', o.image ?? '');
  c.set('imagePullPolicy', o.pullPolicy);
  c.set('command', doc.createNode([`${IMAGE_DIR}/node`, `${IMAGE_DIR}/app/cli.js`, 'install', BIN_PATH], { flow: true }));
  c.set('volumeMounts', doc.createNode([{ name: BIN_VOLUME, mountPath: BIN_PATH }]));
  c.set('securityContext', installSecurity(doc, proxy, podSeccomp));
  c.set('resources', doc.createNode(INSTALL_RESOURCES));
  return c;
}

/** Our init containers for one pod, in order: install (unless all-in-one), then migrate. */
export function ourInitContainers(doc: Document, proxy: YAMLMap, o: ContainerOptions, podSeccomp: string | undefined): YAMLMap[] {
  const migrate = toolContainer(doc, proxy, o, podSeccomp, 'migrate');
  return o.allInOne ? [migrate] : [installContainer(doc, proxy, o, podSeccomp), migrate];
}

/** The emptyDir that carries the program from the install container to the migrate container. */
export function binVolume(doc: Document): Node {
  return doc.createNode({ name: BIN_VOLUME, emptyDir: {} }) as Node;
}
