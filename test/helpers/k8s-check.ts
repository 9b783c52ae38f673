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
    const vols = new Set((spec.volumes ?? []).map((v: Obj) => v.name));
    for (const c of [...inits, ...mains]) {
      for (const m of c.volumeMounts ?? []) if (!vols.has(m.name)) problems.push(`${id}: ${c.name} mounts missing volume ${m.name}`);
    }
  }
  if (problems.length) throw new Error(problems.join('\n'));
  return n;
}
