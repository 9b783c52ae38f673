/**
 * Has every Kong workload on this database finished its rollout? A pure decision over what the
 * Kubernetes API lists: workloads (Deployments, StatefulSets, DaemonSets), their ReplicaSets and
 * their pods. It answers with the list of reasons to keep waiting (empty: safe to finish).
 */

/** The label the post-renderer puts on every Kong workload (and its pods) that uses the database. */
export const GROUP_LABEL = 'kong-db-init.io/finish-group';
/** The annotation carrying the Kong image of a workload's current pod template. */
export const IMAGE_ANNOTATION = 'kong-db-init.io/kong-image';

interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  ownerReferences?: Array<{ uid?: string; kind?: string; name?: string }>;
}

export interface PodTemplate {
  metadata?: ObjectMeta;
  spec?: { containers?: Array<{ name?: string; image?: string }> };
}

export interface Workload {
  kind: 'Deployment' | 'StatefulSet' | 'DaemonSet';
  metadata: ObjectMeta;
  spec?: { replicas?: number; selector?: unknown; template?: PodTemplate };
  status?: {
    observedGeneration?: number;
    replicas?: number;
    updatedReplicas?: number;
    availableReplicas?: number;
    readyReplicas?: number;
    currentRevision?: string;
    updateRevision?: string;
    desiredNumberScheduled?: number;
    updatedNumberScheduled?: number;
    numberAvailable?: number;
  };
}

export interface ReplicaSet {
  metadata: ObjectMeta;
}

export interface Pod {
  metadata: ObjectMeta;
  status?: { phase?: string };
}

/** Everything listed for one workload. */
export interface Observed {
  workload: Workload;
  /** Deployments only: the ReplicaSets matching its selector. */
  replicaSets?: ReplicaSet[];
  /** Pods matching its selector. */
  pods: Pod[];
}

/** The Kong image a pod template runs: our annotation, else the `proxy` container's image. */
export function templateImage(t: PodTemplate | undefined): string | undefined {
  return t?.metadata?.annotations?.[IMAGE_ANNOTATION] ?? t?.spec?.containers?.find((c) => c.name === 'proxy')?.image;
}

const id = (w: Workload) => `${w.kind}/${w.metadata.namespace ? `${w.metadata.namespace}/` : ''}${w.metadata.name}`;
const live = (p: Pod) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed';
const ownedBy = (m: ObjectMeta, uid: string | undefined) => !uid || (m.ownerReferences ?? []).some((o) => o.uid === uid);

/** The pod-template-hash of a Deployment's current ReplicaSet (same revision annotation), if it exists yet. */
export function currentHash(d: Workload, rss: ReplicaSet[]): string | undefined {
  const rev = d.metadata.annotations?.['deployment.kubernetes.io/revision'];
  if (!rev) return undefined;
  const rs = rss.find((r) => ownedBy(r.metadata, d.metadata.uid) && r.metadata.annotations?.['deployment.kubernetes.io/revision'] === rev);
  return rs?.metadata.labels?.['pod-template-hash'];
}

/** Reasons why one workload's rollout is not complete (empty when it is). */
export function workloadBlockers(o: Observed): string[] {
  const w = o.workload;
  const st = w.status ?? {};
  const out: string[] = [];
  const name = id(w);
  if ((st.observedGeneration ?? 0) < (w.metadata.generation ?? 0)) return [`${name}: its controller has not seen generation ${w.metadata.generation} yet`];
  const pods = o.pods.filter(live);
  if (w.kind === 'Deployment') {
    const want = w.spec?.replicas ?? 1;
    const hash = currentHash(w, o.replicaSets ?? []);
    if (!hash) return [`${name}: no ReplicaSet for its current revision yet`];
    const old = pods.filter((p) => p.metadata.labels?.['pod-template-hash'] !== hash);
    if (old.length)
      out.push(
        `${name}: ${old.length} pod(s) of an older revision still exist (${old.map((p) => p.metadata.name + (p.metadata.deletionTimestamp ? ' terminating' : '')).join(', ')})`,
      );
    if ((st.updatedReplicas ?? 0) < want) out.push(`${name}: ${st.updatedReplicas ?? 0}/${want} pods updated`);
    if ((st.availableReplicas ?? 0) < want) out.push(`${name}: ${st.availableReplicas ?? 0}/${want} pods available`);
  } else if (w.kind === 'StatefulSet') {
    const want = w.spec?.replicas ?? 1;
    const rev = st.updateRevision;
    const old = pods.filter((p) => p.metadata.labels?.['controller-revision-hash'] !== rev);
    if (old.length) out.push(`${name}: ${old.length} pod(s) of an older revision still exist (${old.map((p) => p.metadata.name).join(', ')})`);
    if ((st.updatedReplicas ?? 0) < want) out.push(`${name}: ${st.updatedReplicas ?? 0}/${want} pods updated`);
    if ((st.readyReplicas ?? 0) < want) out.push(`${name}: ${st.readyReplicas ?? 0}/${want} pods ready`);
  } else {
    const want = st.desiredNumberScheduled ?? 0;
    const revs = new Set(pods.map((p) => p.metadata.labels?.['controller-revision-hash']));
    if (revs.size > 1 || pods.length > want)
      out.push(`${name}: pods of an older revision still exist (${pods.length} pods for ${want} nodes, ${revs.size} revisions)`);
    if ((st.updatedNumberScheduled ?? 0) < want) out.push(`${name}: ${st.updatedNumberScheduled ?? 0}/${want} pods updated`);
    if ((st.numberAvailable ?? 0) < want) out.push(`${name}: ${st.numberAvailable ?? 0}/${want} pods available`);
  }
  return out;
}

/**
 * Reasons to wait before `kong migrations finish`, over every workload of the group: each must
 * have completed its rollout, and each must run our Kong image (a release not yet upgraded still
 * runs the old version on the old schema). No workload at all is a reason too: the label is
 * missing, or RBAC hides them.
 */
export function rolloutBlockers(observed: Observed[], ownImage: string | undefined): string[] {
  if (observed.length === 0)
    return [`no workload carries the label ${GROUP_LABEL}: is this pod's workload labelled (post-renderer) and may its service account list it?`];
  const out: string[] = [];
  for (const o of observed) {
    const img = templateImage(o.workload.spec?.template);
    if (ownImage && img && img !== ownImage)
      out.push(`${id(o.workload)}: runs ${img}, this pod runs ${ownImage}: finish waits until every Kong workload on the database runs the new version`);
    out.push(...workloadBlockers(o));
  }
  return out;
}
