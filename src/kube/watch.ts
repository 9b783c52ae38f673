/**
 * Watching the rollout for `finish`: list the finish group's workloads, their ReplicaSets and
 * pods (kube/client.ts), and wait until kube/rollout.ts finds nothing that blocks `finish`.
 * API-server blips are retried until the deadline, each distinct problem logged once.
 */
import { ExitCode, InitError, Interrupted } from '../errors.js';
import { sleep } from '../postgres/wait.js';
import type { Logger } from '../report/log.js';
import { KubeError, kubeList, selectorString, type KubeAccess, type LabelSelector } from './client.js';
import { GROUP_LABEL, rolloutBlockers, type Observed, type Pod, type ReplicaSet, type Workload } from './rollout.js';

export interface RolloutWatch {
  kube: KubeAccess;
  group: string;
  /** Namespaces to scan (empty: the pod's own). */
  namespaces: string[];
  kongImage: string | undefined;
  pollMs: number;
  log: Logger;
  signal: AbortSignal;
}

const KINDS = [
  ['Deployment', 'deployments'],
  ['StatefulSet', 'statefulsets'],
  ['DaemonSet', 'daemonsets'],
] as const;

/** List the group's workloads, their ReplicaSets and pods in every namespace. */
export async function observeGroup(a: KubeAccess, namespaces: string[], group: string, signal?: AbortSignal): Promise<Observed[]> {
  const out: Observed[] = [];
  for (const ns of namespaces) {
    for (const [kind, resource] of KINDS) {
      for (const w of await kubeList<Workload>(a, '/apis/apps/v1', ns, resource, `${GROUP_LABEL}=${group}`, signal)) {
        w.kind = kind;
        w.metadata.namespace ??= ns;
        const ws = selectorString(w.spec?.selector as LabelSelector | undefined);
        const pods = await kubeList<Pod>(a, '/api/v1', ns, 'pods', ws, signal);
        const replicaSets = kind === 'Deployment' ? await kubeList<ReplicaSet>(a, '/apis/apps/v1', ns, 'replicasets', ws, signal) : undefined;
        out.push({ workload: w, pods, replicaSets });
      }
    }
  }
  return out;
}

const scanned = (w: RolloutWatch) => (w.namespaces.length ? w.namespaces : [w.kube.namespace]);

/** What blocks `finish` now; a refused request (RBAC) is a configuration error naming the grant. */
export async function blockers(w: RolloutWatch): Promise<string[]> {
  try {
    return rolloutBlockers(await observeGroup(w.kube, scanned(w), w.group, w.signal), w.kongImage);
  } catch (e) {
    if (w.signal.aborted) throw new Interrupted();
    if (e instanceof KubeError && !e.retryable) {
      const rbac =
        e.status === 403
          ? `; grant this pod's service account "list" on apps deployments, statefulsets, daemonsets, replicasets and on pods in ${scanned(w).join(', ')}`
          : '';
      throw new InitError(ExitCode.CONFIG, `the Kubernetes API refused: ${e.message}${rbac}`);
    }
    return [`Kubernetes API not reachable (retrying): ${(e as Error).message}`];
  }
}

/** Wait until nothing blocks `finish`; throws DEADLINE naming what still blocks it. */
export async function waitForRollout(w: RolloutWatch, deadline: number): Promise<void> {
  let last = '';
  for (let attempt = 1; ; attempt++) {
    const text = (await blockers(w)).join('; ');
    if (!text) {
      w.log.info('rollout complete: every Kong workload on the database runs the current revision', { group: w.group, namespaces: scanned(w).join(',') });
      return;
    }
    if (Date.now() + w.pollMs > deadline) {
      throw new InitError(
        ExitCode.DEADLINE,
        `deadline reached waiting for the rollout before kong migrations finish: ${text}; finish the rollout (or upgrade the other releases on this database), then rerun, or raise --deadline`,
      );
    }
    if (text !== last) w.log.info('waiting for the rollout before kong migrations finish', { attempt, waiting_for: text });
    last = text;
    await sleep(w.pollMs, w.signal);
  }
}
