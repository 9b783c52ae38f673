/**
 * What the post-renderer (and the values overlay) adds to a Kong workload so that
 * `kong migrations finish` runs after the rollout: a `finish` sidecar in the Kong image, a
 * projected service-account token for it alone, the group label, and a namespaced Role +
 * RoleBinding that may only `list` workloads, ReplicaSets and pods. Pure: workload in, additions out.
 */
import { stringify, type Document, type YAMLSeq } from 'yaml';
import { BIN_PATH, BIN_VOLUME, IMAGE_DIR, RenderError, type Injection } from './transform.js';
import { FINISH_CONTAINER } from './containers.js';
import { GROUP_LABEL, IMAGE_ANNOTATION } from '../kube/rollout.js';
import { SA_DIR } from '../kube/client.js';

export { FINISH_CONTAINER } from './containers.js';
export const TOKEN_VOLUME = 'kong-db-init-finish-token';

export interface FinishRenderOptions {
  /** Label value shared by every Kong workload on the same database (default "default"). */
  group?: string;
  /** Other namespaces whose Kong workloads use the same database (each needs the Role too). */
  namespaces?: string[];
  /** Release namespace, used when the workload has none (RoleBinding subjects need one). */
  namespace?: string;
  /**
   * All-in-one mode: the image built FROM the Kong image with the program at IMAGE_DIR. The sidecar
   * runs this image (the proxy's image has no program, and there is no emptyDir to bring it in).
   */
  allInOne?: string;
  /** imagePullPolicy for the all-in-one image (the migrate container uses the same). */
  pullPolicy?: string;
}

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface FinishAdditions {
  /** Labels for the workload's metadata and its pod template's metadata. */
  labels: Record<string, string>;
  /** Annotations for the pod template. */
  podAnnotations: Record<string, string>;
  /** Appended to spec.template.spec.containers. */
  container: Obj;
  /** Appended to spec.template.spec.volumes. */
  volume: Obj;
  /** New documents: Role and RoleBinding. */
  documents: Obj[];
}

export class FinishRenderError extends Error {}

/** The Role's rules: the narrowest set `finish` works with. */
export const FINISH_RULES = [
  { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'daemonsets', 'replicasets'], verbs: ['list'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
];

/**
 * The sidecar, token volume, labels and RBAC for one Kong workload (Deployment, StatefulSet or DaemonSet).
 * Long on purpose: it is mostly the literal manifests it returns, kept in one place so they read as YAML would.
 */
export function finishAdditions(workload: Obj, o: FinishRenderOptions = {}): FinishAdditions {
  const name = workload?.metadata?.name as string | undefined;
  const podSpec = workload?.spec?.template?.spec as Obj | undefined;
  const proxy = (podSpec?.containers as Obj[] | undefined)?.find((c) => c.name === 'proxy');
  if (!name || !podSpec || !proxy) throw new FinishRenderError(`${workload?.kind ?? 'document'}/${name ?? '?'}: not a Kong workload with a "proxy" container`);
  const namespace = (workload.metadata.namespace as string | undefined) ?? o.namespace;
  if (!namespace)
    throw new FinishRenderError(
      `${workload.kind}/${name} has no metadata.namespace: pass the release namespace (--namespace) so the RoleBinding can name the service account`,
    );
  const sa = serviceAccountOf(podSpec);
  if (!sa) {
    throw new FinishRenderError(
      `${workload.kind}/${name} runs as the namespace's "default" ServiceAccount: the finish Role (list pods, workloads) is not bound to it, since every pod in ${namespace} that runs as "default" would get it too ` +
        "(and could read the literal env of every pod). Give the release a ServiceAccount of its own: deployment.serviceAccount.create=true (the chart's default), or deployment.serviceAccount.name=NAME for an account only this release uses",
    );
  }
  const group = o.group ?? 'default';
  const image = String(proxy.image ?? '');
  const bin = o.allInOne ? `${IMAGE_DIR}/kong-db-init` : `${BIN_PATH}/kong-db-init`;
  const args = ['--then-idle', '--deadline=6h', `--group=${group}`, `--kong-image=${image}`];
  if (o.namespaces?.length) args.push(`--namespaces=${[namespace, ...o.namespaces.filter((n) => n !== namespace)].join(',')}`);
  const mounts: Obj[] = [...((proxy.volumeMounts as Obj[] | undefined) ?? []).filter((m) => m.mountPath !== SA_DIR)];
  if (!o.allInOne) mounts.push({ name: BIN_VOLUME, mountPath: BIN_PATH, readOnly: true });
  mounts.push({ name: TOKEN_VOLUME, mountPath: SA_DIR, readOnly: true });
  const pull = o.allInOne ? o.pullPolicy : proxy.imagePullPolicy;
  const container: Obj = {
    name: FINISH_CONTAINER,
    // `kong migrations finish` needs Kong and our program: the proxy's image with the program from
    // the emptyDir, or the all-in-one image (FROM the Kong image, the program at IMAGE_DIR)
    image: o.allInOne ?? image,
    ...(pull ? { imagePullPolicy: pull } : {}),
    command: [bin, 'finish'],
    args,
    env: [...((proxy.env as Obj[] | undefined) ?? []), { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
    ...(proxy.envFrom ? { envFrom: proxy.envFrom } : {}),
    volumeMounts: mounts,
    ...(proxy.securityContext ? { securityContext: proxy.securityContext } : {}),
    // idle (after finish) it is a shell of about 2 MB; while `kong migrations finish` runs it holds Node and
    // Kong's five-process chain: the limit is the migrate container's default, which runs the same chain
    resources: { requests: { cpu: '5m', memory: '32Mi' }, limits: { memory: '512Mi' } },
    terminationMessagePolicy: 'FallbackToLogsOnError',
  };
  const volume = {
    name: TOKEN_VOLUME,
    projected: {
      sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: 3607 } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
      ],
    },
  };
  const rbacName = `${name}-kong-db-init-finish`;
  const documents = [namespace, ...(o.namespaces ?? []).filter((n) => n !== namespace)].flatMap((ns) => [
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: rbacName, namespace: ns, labels: { [GROUP_LABEL]: group } },
      rules: FINISH_RULES,
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: rbacName, namespace: ns, labels: { [GROUP_LABEL]: group } },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: rbacName },
      subjects: [{ kind: 'ServiceAccount', name: sa, namespace }],
    },
  ]);
  return { labels: { [GROUP_LABEL]: group }, podAnnotations: { [IMAGE_ANNOTATION]: image }, container, volume, documents };
}

/**
 * The pod's ServiceAccount, or undefined when it is the namespace's `default` (named so, or not
 * named at all). The chart's own account (deployment.serviceAccount.create, its default) is one of
 * the release's own; it may also carry the ingress controller's RBAC, so it is bound, not replaced.
 */
export function serviceAccountOf(podSpec: Obj): string | undefined {
  const sa = (podSpec.serviceAccountName ?? podSpec.serviceAccount) as string | undefined;
  return sa && sa !== 'default' ? sa : undefined;
}

/** Set `key` in the map at `path`, creating a plain map (never `!!omap`, as YAML 1.1's setIn would) when missing. */
function setEntry(doc: Document, path: string[], key: string, value: string): void {
  if (doc.getIn(path) === undefined || doc.getIn(path) === null) doc.setIn(path, doc.createNode({ [key]: value }));
  else doc.setIn([...path, key], value);
}

/**
 * The post-renderer's injection (`post-render --finish-sidecar`): the same additions as
 * `finishAdditions`, applied to the workload's YAML document in place (comments and quoting kept),
 * the Role and RoleBinding appended to the stream.
 */
export function finishInjection(fo: FinishRenderOptions): Injection {
  return (doc: Document) => {
    let add: FinishAdditions;
    try {
      add = finishAdditions(doc.toJS() as Obj, fo);
    } catch (e) {
      throw e instanceof FinishRenderError ? new RenderError(e.message) : e;
    }
    for (const [k, v] of Object.entries(add.labels)) {
      setEntry(doc, ['metadata', 'labels'], k, v);
      setEntry(doc, ['spec', 'template', 'metadata', 'labels'], k, v);
    }
    for (const [k, v] of Object.entries(add.podAnnotations)) setEntry(doc, ['spec', 'template', 'metadata', 'annotations'], k, v);
    (doc.getIn(['spec', 'template', 'spec', 'containers']) as YAMLSeq).add(doc.createNode(add.container));
    const vols = doc.getIn(['spec', 'template', 'spec', 'volumes']) as YAMLSeq | undefined;
    if (vols) vols.add(doc.createNode(add.volume));
    else doc.setIn(['spec', 'template', 'spec', 'volumes'], doc.createNode([add.volume]));
    return {
      changes: [
        `added container ${FINISH_CONTAINER} (kong migrations finish after the rollout), volume ${TOKEN_VOLUME}, label ${Object.keys(add.labels).join(',')}, Role/RoleBinding ${add.documents[0]?.metadata?.name}`,
      ],
      documents: add.documents.map((d) => stringify(d)),
    };
  };
}
