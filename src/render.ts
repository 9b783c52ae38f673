/**
 * The Helm post-renderer transform, pure: rendered manifests in, rendered manifests out.
 * Removes the chart's init-migrations Job (and, when Helm passes hooks, the pre-upgrade `up` Job),
 * and injects our init containers into every Kong workload that talks to Postgres. Documents it
 * does not change are copied byte for byte; edited documents are re-serialized as YAML 1.1 with
 * their comments, quoting and `0755`-style octals kept.
 */
import { isMap, isScalar, isSeq, parseDocument, YAMLMap, YAMLSeq, type Document, type Node } from 'yaml';
import type { FinishPolicy } from './config.js';

export const INSTALL_CONTAINER = 'kong-db-init-install';
export const MIGRATE_CONTAINER = 'kong-db-init';
export const WAIT_CONTAINER = 'wait-for-db';
export const BIN_VOLUME = 'kong-db-init-bin';
export const BIN_PATH = '/kong-db-init';
/** Where the program lives in our image (and in the all-in-one image). */
export const IMAGE_DIR = '/opt/kong-db-init';

export interface RenderOptions {
  /** Our image (install mode): copies the program into an emptyDir. */
  image: string;
  /** All-in-one mode: an image built FROM a Kong image with kong-db-init on PATH. */
  allInOne?: string;
  finish: FinishPolicy;
  replaceWait: boolean;
  requests?: Record<string, string>;
  limits?: Record<string, string>;
  allowNoKong: boolean;
}

export class RenderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RenderError';
  }
}

interface Chunk {
  text: string;
  /** 1-based line of the chunk's first line in the whole stream. */
  line: number;
}

/** Split a stream at `---` lines, keeping every byte (each chunk starts with its separator). */
export function splitStream(input: string): Chunk[] {
  const chunks: Chunk[] = [];
  const lines = input.split(/(?<=\n)/);
  let cur = '';
  let start = 1;
  lines.forEach((l, i) => {
    if (/^---(?:[ \t].*)?\r?\n?$/.test(l) && cur !== '') {
      chunks.push({ text: cur, line: start });
      cur = '';
      start = i + 1;
    }
    cur += l;
  });
  if (cur !== '') chunks.push({ text: cur, line: start });
  return chunks;
}

const get = (m: unknown, key: string): unknown => (isMap(m) ? m.get(key, true) : undefined);
const str = (n: unknown): string | undefined => {
  if (isScalar(n)) return n.value === null || n.value === undefined ? undefined : String(n.value);
  return undefined;
};
const seqItems = (n: unknown): YAMLMap[] => (isSeq(n) ? (n.items.filter((i) => isMap(i)) as YAMLMap[]) : []);

function meta(doc: Document): { kind?: string; name?: string; labels: Record<string, string>; annotations: Record<string, string> } {
  const m = doc.contents;
  const md = get(m, 'metadata');
  const toRec = (n: unknown) => {
    const out: Record<string, string> = {};
    if (isMap(n)) for (const p of n.items) out[String(isScalar(p.key) ? p.key.value : p.key)] = str(p.value) ?? '';
    return out;
  };
  return { kind: str(get(m, 'kind')), name: str(get(md, 'name')), labels: toRec(get(md, 'labels')), annotations: toRec(get(md, 'annotations')) };
}

function envValue(container: YAMLMap, name: string): string | undefined {
  for (const e of seqItems(get(container, 'env'))) if (str(get(e, 'name')) === name) return str(get(e, 'value'));
  return undefined;
}

type JobRole = 'init' | 'pre-upgrade' | 'post-upgrade' | undefined;

function migrationJob(doc: Document): JobRole {
  const m = meta(doc);
  if (m.kind !== 'Job') return undefined;
  const component = m.labels['app.kubernetes.io/component'] ?? '';
  const name = m.name ?? '';
  if (component === 'init-migrations' || name.endsWith('-init-migrations')) return 'init';
  if (component === 'pre-upgrade-migrations' || name.endsWith('-pre-upgrade-migrations')) return 'pre-upgrade';
  if (component === 'post-upgrade-migrations' || name.endsWith('-post-upgrade-migrations')) return 'post-upgrade';
  return undefined;
}

interface Workload {
  podSpec: YAMLMap;
  proxy: YAMLMap | undefined;
  /** Why we consider it a Kong workload. */
  kong: boolean;
  usesPostgres: boolean;
  dataPlane: boolean;
}

function inspectWorkload(doc: Document): Workload | undefined {
  const m = meta(doc);
  if (m.kind !== 'Deployment' && m.kind !== 'DaemonSet') return undefined;
  const podSpec = doc.getIn(['spec', 'template', 'spec'], true);
  if (!isMap(podSpec)) return undefined;
  const containers = seqItems(get(podSpec, 'containers'));
  const inits = seqItems(get(podSpec, 'initContainers'));
  const proxy = containers.find((c) => str(get(c, 'name')) === 'proxy');
  const appName = m.labels['app.kubernetes.io/name'] ?? '';
  const chart = m.labels['helm.sh/chart'] ?? '';
  const initNames = inits.map((c) => str(get(c, 'name')));
  const kong = Boolean(proxy && /(^|\/)kong|gateway/.test(str(get(proxy, 'image')) ?? '')) || appName === 'kong' || appName === 'gateway' || /^kong-\d/.test(chart) || initNames.includes(WAIT_CONTAINER) || initNames.includes('clear-stale-pid');
  const db = proxy ? envValue(proxy, 'KONG_DATABASE') : undefined;
  const role = proxy ? envValue(proxy, 'KONG_ROLE') : undefined;
  return {
    podSpec,
    proxy,
    kong,
    usesPostgres: db === 'postgres' || (db === undefined && initNames.includes(WAIT_CONTAINER)),
    dataPlane: role === 'data_plane',
  };
}

function resources(doc: Document, o: RenderOptions, proxy: YAMLMap): Node | undefined {
  if (o.requests || o.limits) return doc.createNode({ ...(o.requests ? { requests: o.requests } : {}), ...(o.limits ? { limits: o.limits } : {}) }) as Node;
  const r = get(proxy, 'resources');
  return r ? ((r as unknown as Node).clone() as Node) : undefined;
}

/** Our two init containers (or one in all-in-one mode), built from the proxy container. */
function buildContainers(doc: Document, proxy: YAMLMap, o: RenderOptions, command: 'migrate' | 'wait', base?: YAMLMap): YAMLMap[] {
  const src = base ?? proxy;
  const c = new YAMLMap();
  c.set('name', command === 'migrate' ? MIGRATE_CONTAINER : WAIT_CONTAINER);
  c.set('image', o.allInOne ?? ((get(proxy, 'image') as Node | undefined)?.clone() ?? ''));
  const pull = get(src, 'imagePullPolicy');
  if (pull && !o.allInOne) c.set('imagePullPolicy', (pull as Node).clone());
  c.set('command', doc.createNode(o.allInOne ? [`${IMAGE_DIR}/kong-db-init`, command] : [`${BIN_PATH}/kong-db-init`, command], { flow: true }));
  if (command === 'migrate') c.set('args', doc.createNode([`--finish=${o.finish}`], { flow: true }));
  for (const key of ['env', 'envFrom', 'securityContext']) {
    const v = get(src, key);
    if (v) c.set(key, (v as Node).clone());
  }
  const mounts = isSeq(get(src, 'volumeMounts')) ? ((get(src, 'volumeMounts') as YAMLSeq).clone() as YAMLSeq) : new YAMLSeq();
  if (!o.allInOne) mounts.add(doc.createNode({ name: BIN_VOLUME, mountPath: BIN_PATH, readOnly: true }));
  if (mounts.items.length) c.set('volumeMounts', mounts);
  const res = resources(doc, o, proxy);
  if (res) c.set('resources', res);
  const out = [c];
  if (command === 'migrate' && !o.allInOne) {
    const install = new YAMLMap();
    install.set('name', INSTALL_CONTAINER);
    install.set('image', o.image);
    install.set('command', doc.createNode([`${IMAGE_DIR}/node`, `${IMAGE_DIR}/app/cli.js`, 'install', BIN_PATH], { flow: true }));
    install.set('volumeMounts', doc.createNode([{ name: BIN_VOLUME, mountPath: BIN_PATH }]));
    install.set(
      'securityContext',
      doc.createNode({ runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }),
    );
    install.set('resources', doc.createNode({ requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } }));
    out.unshift(install);
  }
  return out;
}

function inject(doc: Document, w: Workload, o: RenderOptions): string[] {
  const changes: string[] = [];
  const spec = w.podSpec;
  const proxy = w.proxy!;
  let inits = get(spec, 'initContainers');
  if (!isSeq(inits)) {
    inits = new YAMLSeq();
    spec.set('initContainers', inits);
  }
  const seq = inits as YAMLSeq;
  const names = seqItems(seq).map((c) => String(c.get('name')));
  if (names.includes(MIGRATE_CONTAINER)) return changes; // already injected: running twice changes nothing
  let waitIdx = seq.items.findIndex((c) => isMap(c) && String(c.get('name')) === WAIT_CONTAINER);
  const ours = buildContainers(doc, proxy, o, 'migrate');
  if (waitIdx < 0) {
    seq.items.push(...ours);
  } else {
    seq.items.splice(waitIdx, 0, ...ours);
    waitIdx += ours.length;
    if (o.replaceWait) {
      const [ourWait] = buildContainers(doc, proxy, o, 'wait', seq.items[waitIdx] as YAMLMap);
      seq.items.splice(waitIdx, 1, ourWait!);
      changes.push('replaced wait-for-db with kong-db-init wait');
    }
  }
  changes.push(`injected ${ours.map((c) => String(c.get('name'))).join(' + ')}`);
  if (!o.allInOne) {
    let vols = get(spec, 'volumes');
    if (!isSeq(vols)) {
      vols = new YAMLSeq();
      spec.set('volumes', vols);
    }
    (vols as YAMLSeq).add(doc.createNode({ name: BIN_VOLUME, emptyDir: {} }));
  }
  return changes;
}

export interface RenderResult {
  output: string;
  changes: string[];
}

/** The whole transform. Throws RenderError (nothing is written) on bad input. */
export function postRender(input: string, o: RenderOptions): RenderResult {
  if (input.trim() === '') throw new RenderError('empty input: expected the manifests rendered by helm on stdin');
  const chunks = splitStream(input);
  const parsed = chunks.map((c) => {
    const doc = parseDocument(c.text, { version: '1.1', prettyErrors: true, uniqueKeys: false });
    const err = doc.errors[0];
    if (err) {
      const pos = err.linePos?.[0];
      const where = pos ? `line ${c.line + pos.line - 1}, column ${pos.col}` : `the document starting at line ${c.line}`;
      throw new RenderError(`malformed YAML at ${where}: ${err.message.split('\n')[0]}; fix the chart values or template that produced it`);
    }
    return { chunk: c, doc };
  });

  const changes: string[] = [];
  const workloads = parsed.map(({ doc }) => (doc.contents ? inspectWorkload(doc) : undefined));
  const targets: number[] = [];
  workloads.forEach((w, i) => {
    if (!w || !w.kong) return;
    const name = `${meta(parsed[i]!.doc).kind}/${meta(parsed[i]!.doc).name}`;
    if (!w.proxy) {
      throw new RenderError(`Kong workload ${name} has no container named "proxy": kong-db-init builds its init container from the proxy container; render the Kong chart's gateway (deployment.kong.enabled=true) or leave this release out`);
    }
    if (w.dataPlane || !w.usesPostgres) {
      changes.push(`${name}: left alone (${w.dataPlane ? 'hybrid data plane' : 'DB-less'})`);
      return;
    }
    targets.push(i);
  });
  if (targets.length === 0 && !o.allowNoKong) {
    throw new RenderError('no Kong workload that uses Postgres was found (a Deployment or DaemonSet with a "proxy" container and KONG_DATABASE=postgres); pass --allow-no-kong to let such releases through unchanged');
  }

  const edited = new Set<number>();
  const removed = new Set<number>();
  for (const i of targets) {
    const c = inject(parsed[i]!.doc, workloads[i]!, o);
    if (c.length) {
      edited.add(i);
      changes.push(...c.map((x) => `${meta(parsed[i]!.doc).kind}/${meta(parsed[i]!.doc).name}: ${x}`));
    }
  }
  if (targets.length > 0) {
    if (!parsed.some(({ doc }) => doc.contents && (migrationJob(doc) === 'pre-upgrade' || migrationJob(doc) === 'post-upgrade'))) {
      changes.push('no hook Jobs in the input (Helm 3 never passes hooks to a post-renderer): set migrations.preUpgrade=false so that only the init container migrates (the chart\'s pre-upgrade `kong migrations up` Job would run beside it)');
    }
    parsed.forEach(({ doc }, i) => {
      const role = doc.contents ? migrationJob(doc) : undefined;
      if (role === 'init' || role === 'pre-upgrade') {
        removed.add(i);
        changes.push(`removed Job/${meta(doc).name} (${role === 'init' ? 'kong migrations bootstrap' : 'kong migrations up'}: the init container does it)`);
      }
    });
  }
  const output = parsed
    .map(({ chunk, doc }, i) => {
      if (removed.has(i)) return '';
      if (!edited.has(i)) return chunk.text;
      const text = doc.toString({ lineWidth: 0, indentSeq: false, flowCollectionPadding: false });
      return chunk.text.endsWith('\n') ? text : text.replace(/\n$/, '');
    })
    .join('');
  if (output.trim() === '') throw new RenderError('refusing to write empty output: it would delete every resource of the release');
  return { output, changes };
}
