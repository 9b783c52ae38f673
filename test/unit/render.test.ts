/** The pure pieces of the post-renderer: cutting the stream, reading kinds from text, flags, the overlay diff. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRenderArgs } from '../../src/render/args.js';
import { isLiteralSecret, literalSecrets, scrubSecretValues, secretValuesInText } from '../../src/render/secrets.js';
import { needsParse, quickKind, quickMigrationJob, splitStream } from '../../src/render/stream.js';
import { postRender, POST_UPGRADE_UNSEEN, type RenderOptions } from '../../src/render/transform.js';
import { lineDiff } from '../../src/render/overlay.js';
import { ROOT } from '../helpers/harness.js';

const base: RenderOptions = { image: 'kong-db-init:ci', pullPolicy: 'IfNotPresent', finish: 'auto', replaceWait: false, allowNoKong: false };
const chart = (n: string) => fs.readFileSync(path.join(ROOT, 'test/fixtures/render', `chart-${n}.yaml`), 'utf8');

describe('splitStream', () => {
  it('keeps every byte and the starting line of each document', () => {
    const s = '# lead\n---\na: 1\n--- # c\r\nb: 2\n---\n';
    const chunks = splitStream(s);
    expect(chunks.map((c) => c.text).join('')).toBe(s);
    expect(chunks.map((c) => c.line)).toEqual([1, 2, 4, 6]);
    expect(splitStream('a: "---"\n----\nb\n')).toHaveLength(1); // not separators
  });
});

describe('reading a document without parsing it', () => {
  it('quickKind reads a plain top-level kind, and nothing else', () => {
    expect(quickKind('apiVersion: v1\nkind: "ConfigMap" # x\n')).toBe('ConfigMap');
    expect(quickKind('spec:\n  kind: Deployment\n')).toBeUndefined();
    expect(quickKind('{"kind": "Deployment"}')).toBeUndefined();
  });
  it('needsParse: workloads and documents whose kind the text does not show; never Services or comment-only chunks', () => {
    const c = (text: string) => ({ text, line: 1 });
    expect(needsParse(c('kind: Deployment\n'))).toBe(true);
    expect(needsParse(c('kind: Service\n'))).toBe(false);
    expect(needsParse(c('{"kind": "Deployment"}\n'))).toBe(true);
    expect(needsParse(c('---\n# Source: x\n\n'))).toBe(false);
  });
  it('quickMigrationJob reads the chart layout, and asks for a parse when the text is unusual', () => {
    const job = chart('3.4.1-minimal-postgres')
      .split(/^(?=---$)/m)
      .filter((d) => /^kind: Job$/m.test(d));
    expect(job.map((d) => quickMigrationJob(d))).toEqual([
      { role: 'init', name: 'demo-kong-init-migrations' },
      { role: 'post-upgrade', name: 'demo-kong-post-upgrade-migrations' },
      { role: 'pre-upgrade', name: 'demo-kong-pre-upgrade-migrations' },
    ]);
    expect(
      quickMigrationJob('kind: Job\nmetadata: {name: x-init-migrations}\nspec: {template: {spec: {containers: [{args: [kong, migrations, bootstrap]}]}}}\n'),
    ).toBe('parse');
    expect(quickMigrationJob('kind: Job\nmetadata:\n  name: backup\n')).toBeUndefined();
    // another application's migrations Job is not the Kong chart's
    expect(
      quickMigrationJob(
        'kind: Job\nmetadata:\n  name: shop-init-migrations\nspec:\n  template:\n    spec:\n      containers:\n      - args: [rails, db:migrate]\n',
      ),
    ).toBeUndefined();
    // and the unusual layout is still handled, by parsing
    const flow =
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: k, labels: {app.kubernetes.io/name: kong}}\nspec: {template: {spec: {containers: [{name: proxy, image: "kong:3.7", env: [{name: KONG_DATABASE, value: postgres}]}]}}}\n---\nkind: Job\nmetadata: {name: k-init-migrations}\nspec: {template: {spec: {containers: [{name: m, image: "kong:3.7", args: [kong, migrations, bootstrap]}]}}}\n---\nkind: Job\nmetadata: {name: shop-init-migrations}\nspec: {template: {spec: {containers: [{name: m, image: shop, args: [rails, db:migrate]}]}}}\n';
    const r = postRender(flow, { ...base, meshReady: true }); // no wait-for-db here: not a mesh
    expect(r.changes.join('\n')).toMatch(/removed Job\/k-init-migrations/);
    expect(r.output).not.toMatch(/ k-init-migrations/);
    expect(r.output).toMatch(/shop-init-migrations/);
  });
});

describe('hooks only (Helm 4 SDK post-render strategy "separate")', () => {
  it('removes the init and pre-upgrade Jobs and keeps the post-upgrade Job', () => {
    const hooks = chart('3.4.1-minimal-postgres')
      .split(/^(?=---$)/m)
      .filter((d) => /^kind: Job$/m.test(d))
      .join('');
    const r = postRender(hooks, base);
    expect(r.output).toMatch(/post-upgrade-migrations/);
    expect(r.output).not.toMatch(/-(init|pre-upgrade)-migrations/);
    expect(r.changes.join('\n')).toMatch(/hooks only/);
  });
});

describe('flags (the shared table-driven parser, commands/flags.ts)', () => {
  it('flags win over environment variables; bad values name the flag or variable; a switch takes no value', () => {
    expect(parseRenderArgs('post-render', [], { KONG_DB_INIT_IMAGE: 'a:1' }).image).toBe('a:1');
    expect(parseRenderArgs('post-render', ['--image=b:2'], { KONG_DB_INIT_IMAGE: 'a:1' }).image).toBe('b:2');
    expect(parseRenderArgs('post-render', ['--image', 'b:2'], { KONG_DB_INIT_IMAGE: 'a:1' }).image).toBe('b:2');
    expect(parseRenderArgs('post-render', [], {}).pullPolicy).toBe('IfNotPresent');
    expect(() => parseRenderArgs('post-render', [], { KONG_DB_INIT_PULL_POLICY: 'Sometimes' })).toThrow(
      /KONG_DB_INIT_PULL_POLICY "Sometimes" is invalid; use Always, IfNotPresent or Never/,
    );
    expect(() => parseRenderArgs('post-render', ['--pull-policy=Sometimes'], {})).toThrow(/--pull-policy "Sometimes" is invalid/);
    expect(() => parseRenderArgs('post-render', ['--check', 'x'], {})).toThrow(
      /--check does not apply to "post-render"; run "kong-db-init post-render --help"/,
    );
    expect(() => parseRenderArgs('post-render', ['--frobnicate'], {})).toThrow(/unknown option --frobnicate/);
    expect(() => parseRenderArgs('post-render', ['stray'], {})).toThrow(/unexpected argument "stray"/);
    expect(() => parseRenderArgs('post-render', ['--mesh-ready=false'], {})).toThrow(/--mesh-ready takes no value/);
    expect(parseRenderArgs('post-render', ['--mesh-ready'], {}).meshReady).toBe(true);
    expect(parseRenderArgs('values', ['-f', 'a.yaml', '--values', 'b.yaml'], {}).valuesFiles).toEqual(['a.yaml', 'b.yaml']);
    expect(() => parseRenderArgs('values', ['--image'], {})).toThrow(/--image needs a value \(REF\)/);
    expect(parseRenderArgs('post-render', ['--namespace', 'a'], { HELM_NAMESPACE: 'b' }).finishOptions?.namespace).toBe('a');
    expect(parseRenderArgs('post-render', [], { HELM_NAMESPACE: 'b' }).finishOptions?.namespace).toBe('b');
    expect(() => parseRenderArgs('post-render', ['--post-upgrade-off'], {})).toThrow(/--post-upgrade-off goes with --finish-sidecar/);
  });
  it('hooks are taken as passed only inside our Helm 4 plugin (HELM_PLUGIN_NAME=kong-db-init)', () => {
    expect(parseRenderArgs('post-render', [], { HELM_PLUGIN_NAME: 'kong-db-init' }).hooksPassed).toBe(true);
    expect(parseRenderArgs('post-render', [], { HELM_PLUGIN_NAME: 'secrets' }).hooksPassed).toBeUndefined();
    expect(parseRenderArgs('post-render', [], {}).hooksPassed).toBeUndefined();
  });
});

describe("--finish-sidecar when the chart's post-upgrade Job cannot be seen (Helm 3 passes no hooks; issue 14 items 5, 14)", () => {
  const noHooks = chart('3.4.1-minimal-postgres')
    .split(/^(?=---$)/m)
    .filter((d) => !/helm\.sh\/hook:/.test(d))
    .join('');
  const o: RenderOptions = { ...base, finishSidecar: true };
  it('is refused (exit 20) with the fix, instead of leaving a finish Job to race the sidecar', () => {
    expect(noHooks).not.toMatch(/post-upgrade-migrations/);
    expect(() => postRender(noHooks, o)).toThrow(POST_UPGRADE_UNSEEN);
    expect(POST_UPGRADE_UNSEEN).toMatch(/--set migrations\.postUpgrade=false --post-renderer-args --post-upgrade-off/);
  });
  it('passes when the user says the Job is off, when Helm 4 passes hooks, or when the hooks are in the input (then the Job is removed)', () => {
    expect(postRender(noHooks, { ...o, postUpgradeOff: true }).output).toMatch(/kong-db-init-install/);
    expect(postRender(noHooks, { ...o, hooksPassed: true }).output).toMatch(/kong-db-init-install/);
    const all = postRender(chart('3.4.1-minimal-postgres'), o);
    expect(all.output).not.toMatch(/post-upgrade-migrations/);
    expect(all.changes.join('\n')).toMatch(/removed Job\/demo-kong-post-upgrade-migrations/);
  });
});

describe('literal secrets (issue 14 item 1)', () => {
  it('by name: passwords, secrets, tokens, keys, credentials, Kong license/session/auth config; not pointers, paths of key files or vault references', () => {
    for (const n of [
      'KONG_PG_PASSWORD',
      'KONG_PASSWORD',
      'CONTROLLER_KONG_ADMIN_TOKEN',
      'KONG_LICENSE_DATA',
      'KONG_ADMIN_GUI_SESSION_CONF',
      'AWS_SECRET_ACCESS_KEY',
      'MY_API_KEY',
      'KONG_PG_PASSWD',
      'GITHUB_TOKEN',
    ])
      expect(isLiteralSecret(n, 'x1y2z3'), n).toBe(true);
    expect(isLiteralSecret('KONG_PG_PASSWORD_FILE', '/vault/secrets/pg')).toBe(false);
    expect(isLiteralSecret('KONG_SSL_CERT_KEY', '/etc/secrets/tls/tls.key')).toBe(false);
    expect(isLiteralSecret('KONG_PG_PASSWORD', '/looks/like/a/path')).toBe(true);
    expect(isLiteralSecret('KONG_PG_PASSWORD', '{vault://env/pg-password}')).toBe(false);
    expect(isLiteralSecret('KONG_PG_PASSWORD', '')).toBe(false);
    expect(isLiteralSecret('KONG_KEYRING_ENABLED', 'on')).toBe(false);
    expect(isLiteralSecret('KONG_PG_HOST', 'pg')).toBe(false);
  });
  it('literalSecrets finds env values and Secrets with data anywhere in an overlay, by name only', () => {
    const found = literalSecrets({
      deployment: {
        initContainers: [
          {
            name: 'kong-db-init',
            env: [
              { name: 'KONG_PG_PASSWORD', value: 'hunter2hunter2' },
              { name: 'KONG_PASSWORD', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } },
            ],
          },
        ],
      },
      extraObjects: [{ kind: 'Secret', metadata: { name: 'db' }, stringData: { password: 'p' } }],
    });
    expect(found).toEqual([
      { where: 'deployment.initContainers[kong-db-init].env', name: 'KONG_PG_PASSWORD' },
      { where: 'extraObjects[0]', name: 'Secret/db' },
    ]);
    expect(JSON.stringify(found)).not.toMatch(/hunter2/);
  });
  it('scrubSecretValues masks the literal secrets of the raw input (block and flow style, quoted or not) in a message', () => {
    const input =
      'env:\n- name: KONG_PG_PASSWORD\n  value: "hunter2hunter2"\n- value: tok-123456\n  name: ADMIN_TOKEN\n- {name: KONG_PASSWORD, value: \'pw-flow-1\'}\n- name: KONG_PG_HOST\n  value: pghost\n';
    expect(secretValuesInText(input).sort()).toEqual(['hunter2hunter2', 'pw-flow-1', 'tok-123456']);
    expect(scrubSecretValues('bad hunter2hunter2 tok-123456 pw-flow-1 pghost', input)).toBe('bad <redacted> <redacted> <redacted> pghost');
  });
});

describe('lineDiff', () => {
  it('is empty for equal text and marks changed lines with context', () => {
    expect(lineDiff('a\nb\n', 'a\nb\n')).toBe('');
    const d = lineDiff('1\n2\n3\n4\n5\n6\n7\n', '1\n2\n3\n4\nX\n6\n7\n');
    expect(d.split('\n')).toEqual(['…', '  3', '  4', '+ X', '- 5', '  6', '  7', '…']);
  });
});

describe('further injections (the hook for e.g. the finish sidecar)', () => {
  it('run on each target after ours, may edit the workload and add documents; untouched documents stay byte for byte', () => {
    const input = chart('3.4.1-minimal-postgres');
    const r = postRender(input, {
      ...base,
      injections: [
        (doc, t) => {
          doc.setIn(['spec', 'template', 'metadata', 'labels', 'example.com/extra'], 'yes');
          return { changes: ['labelled'], documents: [`apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${t.id.split('/')[1]}-extra\n`] };
        },
      ],
    });
    expect(r.changes).toContain('Deployment/demo-kong: labelled');
    expect(r.output).toMatch(/example\.com\/extra: "yes"/); // quoted: a YAML 1.1 boolean otherwise
    expect(r.output.endsWith('---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo-kong-extra\n')).toBe(true);
    expect(r.output).toContain(splitStream(input).find((c) => c.text.includes('kind: Service'))!.text);
  });
});
