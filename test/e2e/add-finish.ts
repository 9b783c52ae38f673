/**
 * Test-only post-renderer stage: after `kong-db-init post-render`, add the `finish` sidecar and its
 * RBAC (src/render-finish.ts) to every workload that got our init container, the way the
 * post-renderer will once the lead wires render-finish in. Reads a YAML stream on stdin.
 * KDI_FINISH_ARGS (JSON) passes FinishRenderOptions.
 */
import fs from 'node:fs';
import { parseAllDocuments, stringify } from 'yaml';
import { FINISH_CONTAINER, applyFinish, finishAdditions, type FinishRenderOptions } from '../../src/render-finish.js';

const input = fs.readFileSync(0, 'utf8');
const opts = JSON.parse(process.env.KDI_FINISH_ARGS || '{}') as FinishRenderOptions;
const out: string[] = [];
const extra: unknown[] = [];
for (const d of parseAllDocuments(input, { version: '1.1' })) {
  const o = d.toJS() as Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any
  if (!o) continue;
  const inits = (o.spec?.template?.spec?.initContainers ?? []) as Array<{ name: string }>;
  const containers = (o.spec?.template?.spec?.containers ?? []) as Array<{ name: string }>;
  if (['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind) && inits.some((c) => c.name === 'kong-db-init') && !containers.some((c) => c.name === FINISH_CONTAINER)) {
    const add = finishAdditions(o, opts);
    out.push(stringify(applyFinish(o, add)));
    extra.push(...add.documents);
  } else {
    out.push(stringify(o));
  }
}
for (const e of extra) out.push(stringify(e));
process.stdout.write(out.map((t) => `---\n${t}`).join(''));
