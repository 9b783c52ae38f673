/**
 * The Helm post-renderer transform, pure: rendered manifests in, rendered manifests out.
 * `planRelease` decides (which workloads get our init containers, which Jobs go, what to say);
 * `postRender` applies the plan to the documents and `values.ts` turns the same plan into a values
 * overlay. Documents that cannot change are never parsed and are copied byte for byte; edited
 * documents are re-serialized as YAML 1.1 with their comments, quoting and `0755` octals kept.
 * Each injection is a small function of its own (`injectInitContainers`, `setVaultInitFirst`).
 */
import { isSeq, type YAMLMap, YAMLSeq, type Document } from 'yaml';
import { binVolume, BIN_VOLUME, FINISH_CONTAINER, toolContainer, MIGRATE_CONTAINER, ourInitContainers, type ContainerOptions } from './containers.js';
import { RENDER_EXIT, RenderError } from './errors.js';
import { needsParse, parseChunk, quickKind, quickMigrationJob, splitStream, type Chunk, type JobRole } from './stream.js';
import {
  get,
  idOf,
  inspectWorkload,
  meshStatus,
  meta,
  migrationJob,
  nameOf,
  podSeccomp,
  seqItems,
  vaultFinding,
  VAULT_INIT_FIRST,
  WAIT_CONTAINER,
  type RenderedWorkload,
} from './workload.js';

export { RenderError } from './errors.js';
export { splitStream } from './stream.js';
export { BIN_PATH, BIN_VOLUME, IMAGE_DIR, INSTALL_CONTAINER, MIGRATE_CONTAINER } from './containers.js';

export interface RenderOptions extends ContainerOptions {
  replaceWait: boolean;
  allowNoKong: boolean;
  /** The user says the pod's mesh sidecar (if any) lets init containers reach Postgres. */
  meshReady?: boolean;
  /** Further injections into each target workload, run after ours (e.g. the finish sidecar). */
  injections?: Injection[];
  /** `finish` runs after the rollout (the finish sidecar): the chart's post-upgrade Job goes too. */
  finishSidecar?: boolean;
  /**
   * The caller passes the chart's hooks with the manifests (Helm 4's post-renderer plugins): a
   * post-upgrade Job that is not in the input is not rendered. Helm 3 never passes hooks.
   */
  hooksPassed?: boolean;
  /** The user says migrations.postUpgrade=false (needed with finishSidecar when hooks are not passed). */
  postUpgradeOff?: boolean;
}

/** Why `--finish-sidecar` is refused when the chart's post-upgrade Job may exist unseen (Helm 3), and the fix. */
export const POST_UPGRADE_UNSEEN =
  "--finish-sidecar: Helm passed no hooks (Helm 3 never shows a post-renderer the chart's hook Jobs), so the chart's post-upgrade Job " +
  '(migrations.postUpgrade, on by default) cannot be removed here and would run `kong migrations finish` as soon as Helm has applied the release, ' +
  'while old pods still run, racing the finish sidecar. Turn it off and say so: helm ... --set migrations.postUpgrade=false ' +
  '--post-renderer-args --post-upgrade-off (with Helm 4 the plugin removes the Job itself)';

/**
 * One more thing to add to a target workload: edits `doc` (the workload) in place and says what it
 * changed; `documents` (YAML text, e.g. RBAC objects) are appended to the stream. Pure otherwise.
 */
export type Injection = (doc: Document, t: Target, o: RenderOptions) => { changes: string[]; documents?: string[] };

export const IMAGE_HELP =
  'pass --image REF (or set KONG_DB_INIT_IMAGE): build and push the image from this repository first, e.g. ' +
  '`docker build -t REGISTRY/kong-db-init:VERSION . && docker push REGISTRY/kong-db-init:VERSION` ' +
  '(a local cluster: build it as kong-db-init:ci and pass --pull-policy Never); or use --all-in-one IMAGE';

export interface Parsed {
  chunk: Chunk;
  /** Present only for documents we may change (workloads) or cannot classify from the text. */
  doc?: Document;
  /** One of the chart's migration Jobs (from the text, or from `doc`). */
  job?: { role: JobRole; name: string };
}

export interface Target {
  index: number;
  id: string;
  workload: RenderedWorkload & { proxy: YAMLMap };
  /** Set the Vault agent's init container first (its secret files must exist before ours run). */
  vaultInitFirst: boolean;
  /** Already has our init containers (a render that includes the values overlay, or a second run). */
  injected: boolean;
}

export interface ReleasePlan {
  parsed: Parsed[];
  targets: Target[];
  /** Indexes of the chart's init and pre-upgrade migration Jobs, removed when there are targets. */
  removeJobs: number[];
  notes: string[];
}

/** Cut the stream into documents and parse only those that may change. */
export function parseStream(input: string): Parsed[] {
  if (input.trim() === '') throw new RenderError('empty input: expected the manifests rendered by helm on stdin');
  return splitStream(input).map((chunk) => {
    if (needsParse(chunk)) {
      const doc = parseChunk(chunk);
      const role = doc.contents ? migrationJob(doc) : undefined;
      return role ? { chunk, doc, job: { role, name: meta(doc).name ?? '' } } : { chunk, doc };
    }
    const job = quickKind(chunk.text) === 'Job' ? quickMigrationJob(chunk.text) : undefined;
    return typeof job === 'object' ? { chunk, job } : { chunk };
  });
}

/**
 * The whole decision, pure. Throws RenderError for releases we cannot handle safely. Long on
 * purpose: each refusal (no workload, several, mesh, Vault, DB-less) is one early return in order.
 */
export function planRelease(parsed: Parsed[], o: RenderOptions): ReleasePlan {
  const notes: string[] = [];
  const targets: Target[] = [];
  let kongWorkloads = 0;
  parsed.forEach(({ doc }, index) => {
    const w = doc?.contents ? inspectWorkload(doc) : undefined;
    if (!w || w.kind === 'other') return;
    kongWorkloads++;
    const id = idOf(doc!);
    switch (w.kind) {
      case 'no-proxy':
        throw new RenderError(
          `Kong workload ${id} runs Kong with KONG_DATABASE=postgres but has no container named "proxy": kong-db-init builds its init container from the proxy container; keep the chart's container name or leave this release out`,
        );
      case 'dbless':
      case 'data-plane':
      case 'controller-only':
        notes.push(
          `${id}: left alone (${{ dbless: 'DB-less: KONG_DATABASE=off', 'data-plane': 'hybrid data plane: KONG_ROLE=data_plane', 'controller-only': 'controller only: no proxy container' }[w.kind]})`,
        );
        return;
    }
    const injected = seqItems(get(w.podSpec, 'initContainers')).some((c) => nameOf(c) === MIGRATE_CONTAINER);
    checkMesh(id, w, o, injected);
    const vault = vaultFinding(w);
    if (vault.action === 'refuse') throw new RenderError(`${id}: ${vault.reason}`);
    if (vault.action === 'init-first')
      notes.push(
        `${id}: set pod annotation ${VAULT_INIT_FIRST}: "true" (the Vault agent's init container must write the secret files before kong-db-init reads them)`,
      );
    targets.push({ index, id, workload: w as Target['workload'], vaultInitFirst: vault.action === 'init-first', injected });
  });
  const jobs = parsed.map(({ job }) => job?.role);
  // Helm 4's SDK option PostRenderStrategy "separate" sends the hooks alone: the chart renders its
  // migration Jobs only for a Postgres-backed gateway, so they are ours to remove without the Deployment
  const hooksOnly = kongWorkloads === 0 && jobs.some((j) => j !== undefined);
  if (targets.length === 0 && !hooksOnly) {
    if (kongWorkloads === 0 && !o.allowNoKong) {
      throw new RenderError(
        'no Kong chart workload was found (a Deployment or DaemonSet of the Kong chart); pass --allow-no-kong to let such releases through unchanged',
      );
    }
    if (kongWorkloads === 0) notes.push('no Kong chart workload: passed through unchanged (--allow-no-kong)');
    return { parsed, targets, removeJobs: [], notes };
  }
  if (!o.allInOne && !o.image && targets.some((t) => !t.injected)) {
    throw new RenderError(`no image for the kong-db-init-install init container: ${IMAGE_HELP}`, RENDER_EXIT.USAGE);
  }
  const removeJobs: number[] = [];
  jobs.forEach((role, i) => {
    if (role === 'init' || role === 'pre-upgrade' || (role === 'post-upgrade' && o.finishSidecar)) {
      removeJobs.push(i);
      const what = role === 'init' ? 'kong migrations bootstrap' : role === 'pre-upgrade' ? 'kong migrations up' : 'kong migrations finish';
      notes.push(
        `removed Job/${parsed[i]!.job!.name} (${what}: ${role === 'post-upgrade' ? 'the finish sidecar does it after the rollout' : 'the init container does it'})`,
      );
    }
  });
  if (hooksOnly) notes.push('hooks only (Helm 4 SDK post-render strategy "separate"): removed the migration Jobs that the init container replaces');
  const hooksSeen = jobs.some((j) => j === 'pre-upgrade' || j === 'post-upgrade');
  // a release that already runs the sidecar (a second run, or the values overlay, which turns the Job off) has been through this
  const sidecarAlready = targets.every((t) => seqItems(get(t.workload.podSpec, 'containers')).some((c) => nameOf(c) === FINISH_CONTAINER));
  if (o.finishSidecar && !hooksOnly && !hooksSeen && !o.hooksPassed && !o.postUpgradeOff && !sidecarAlready) throw new RenderError(POST_UPGRADE_UNSEEN);
  if (!hooksOnly && !hooksSeen && !o.hooksPassed) {
    notes.push(
      "no hook Jobs in the input (Helm 3 never passes hooks to a post-renderer): set migrations.preUpgrade=false so that only the init container migrates (the chart's pre-upgrade `kong migrations up` Job would run beside it)",
    );
  }
  return { parsed, targets, removeJobs, notes };
}

/**
 * A mesh sidecar that is an ordinary container starts after every init container: ours could not
 * reach Postgres. The chart's own service-mesh advice (waitImage.enabled=false, so no wait-for-db)
 * is taken as a sign of one too, since injection by namespace label does not show in the render.
 */
function checkMesh(id: string, w: RenderedWorkload, o: RenderOptions, injected: boolean): void {
  if (o.meshReady || injected) return;
  const mesh = meshStatus(w);
  const found = mesh.status === 'problem' ? mesh : undefined;
  const noWait = !seqItems(get(w.podSpec, 'initContainers')).some((c) => nameOf(c) === WAIT_CONTAINER);
  if (mesh.status === 'ok' || (!found && !noWait)) return;
  const why = found
    ? `${found.mesh} is injected (${found.evidence}) with its sidecar as an ordinary container, which starts after every init container`
    : "the chart's wait-for-db init container is off (waitImage.enabled=false, the chart's setting for a service mesh); a mesh sidecar that is an ordinary container starts after every init container";
  const fixes = found
    ? found.fixes
    : [
        'podAnnotations for native sidecars or a Postgres port excluded from the mesh (Istio: sidecar.istio.io/nativeSidecar: "true"; Linkerd: config.beta.linkerd.io/proxy-enable-native-sidecar: "true")',
      ];
  throw new RenderError(
    `${id}: ${why}, so kong-db-init could not reach Postgres. Set one of: ${fixes.join('; or ')}; or pass --mesh-ready if the pod has no such sidecar`,
  );
}

/** Insert our init containers right before wait-for-db (after the user's own), and our emptyDir. */
export function injectInitContainers(doc: Document, t: Target, o: RenderOptions): string[] {
  const spec = t.workload.podSpec;
  const proxy = t.workload.proxy;
  const seccomp = podSeccomp(spec);
  let inits = get(spec, 'initContainers');
  if (!isSeq(inits)) {
    inits = new YAMLSeq();
    spec.set('initContainers', inits);
  }
  const seq = inits as YAMLSeq;
  const ours = ourInitContainers(doc, proxy, o, seccomp);
  const changes: string[] = [];
  let waitIdx = seq.items.findIndex((c) => nameOf(c) === WAIT_CONTAINER);
  if (waitIdx < 0) {
    seq.items.push(...ours);
  } else {
    seq.items.splice(waitIdx, 0, ...ours);
    waitIdx += ours.length;
    if (o.replaceWait) {
      seq.items.splice(waitIdx, 1, toolContainer(doc, proxy, o, seccomp, 'wait', seq.items[waitIdx] as YAMLMap));
      changes.push('replaced wait-for-db with kong-db-init wait');
    }
  }
  changes.unshift(`injected ${ours.map(nameOf).join(' + ')}`);
  if (!o.allInOne) {
    let vols = get(spec, 'volumes');
    if (!isSeq(vols)) {
      vols = new YAMLSeq();
      spec.set('volumes', vols);
    }
    if (!seqItems(vols).some((v) => nameOf(v) === BIN_VOLUME)) (vols as YAMLSeq).add(binVolume(doc));
  }
  return changes;
}

/** Put the Vault agent's init container first, so that its secret files exist when ours runs. */
export function setVaultInitFirst(doc: Document): void {
  doc.setIn(['spec', 'template', 'metadata', 'annotations', VAULT_INIT_FIRST], doc.createNode('true'));
  const n = doc.getIn(['spec', 'template', 'metadata', 'annotations', VAULT_INIT_FIRST], true) as { type?: string };
  n.type = 'QUOTE_DOUBLE';
}

export interface RenderResult {
  output: string;
  changes: string[];
}

/** The whole transform. Throws RenderError (nothing is written) on bad input. */
export function postRender(input: string, o: RenderOptions): RenderResult {
  const plan = planRelease(parseStream(input), o);
  const changes = [...plan.notes];
  const edited = new Set<number>();
  const added: string[] = [];
  for (const t of plan.targets) {
    const doc = plan.parsed[t.index]!.doc!;
    if (t.vaultInitFirst) {
      setVaultInitFirst(doc);
      edited.add(t.index);
    }
    if (t.injected) continue; // running twice (or on a render with the values overlay) changes nothing
    changes.push(...injectInitContainers(doc, t, o).map((c) => `${t.id}: ${c}`));
    edited.add(t.index);
    for (const inject of o.injections ?? []) {
      const r = inject(doc, t, o);
      changes.push(...r.changes.map((c) => `${t.id}: ${c}`));
      added.push(...(r.documents ?? []));
    }
  }
  const removed = new Set(plan.removeJobs);
  const body = plan.parsed
    .map(({ chunk, doc }, i) => {
      if (removed.has(i)) return '';
      if (!edited.has(i)) return chunk.text;
      const text = doc!.toString({ lineWidth: 0, indentSeq: false, flowCollectionPadding: false });
      return chunk.text.endsWith('\n') ? text : text.replace(/\n$/, '');
    })
    .join('');
  const extra = added.map((d) => `---\n${d.endsWith('\n') ? d : d + '\n'}`).join('');
  const output = extra && body && !body.endsWith('\n') ? `${body}\n${extra}` : body + extra;
  if (output.trim() === '') throw new RenderError('refusing to write empty output: it would delete every resource of the release');
  return { output, changes };
}
