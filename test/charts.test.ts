/**
 * The chart drop-in on real renders of the real Kong chart (2.38.0, 2.52.0, 3.4.1; made by
 * test/fixtures/render/generate-chart-renders.sh with helm 3 from test/fixtures/chart/values/),
 * one block per finding of issue 9. Every output is checked by strict decoding into the
 * Kubernetes types and by the Pod Security `restricted` rules.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { postRender, type RenderOptions } from '../src/render.js';
import { DEFAULT_MIGRATE_RESOURCES } from '../src/render-containers.js';
import { POST_RENDER_HELP } from '../src/post-render.js';
import { checkOverlay, valuesOverlay } from '../src/values.js';
import { CLI, ROOT } from './helpers/harness.js';
import { docs, psaRestricted, validateWorkloads } from './helpers/k8s-check.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const FIX = path.join(ROOT, 'test/fixtures/render');
const VALUES = path.join(ROOT, 'test/fixtures/chart/values');
const render = (name: string) => fs.readFileSync(path.join(FIX, `chart-${name}.yaml`), 'utf8');
const userValues = (name: string) => [{ file: `${name}.yaml`, text: fs.readFileSync(path.join(VALUES, `${name}.yaml`), 'utf8') }];
const base: RenderOptions = { image: 'kong-db-init:ci', pullPolicy: 'IfNotPresent', finish: 'auto', replaceWait: false, allowNoKong: false };
const podOf = (stream: string, kind = 'Deployment'): Obj => docs(stream).find((d) => d.kind === kind)!.spec.template.spec;
const container = (spec: Obj, name: string): Obj => [...(spec.initContainers ?? []), ...spec.containers].find((c: Obj) => c.name === name);
const initNames = (spec: Obj): string[] => (spec.initContainers ?? []).map((c: Obj) => c.name);
const noPsaProblems = (stream: string) => expect(Object.values(psaRestricted(stream)).flat()).toEqual([]);

describe('the offline checks themselves', () => {
  it('strict decoding rejects an unknown field, as kubectl --validate=strict does', () => {
    const bad = render('3.4.1-minimal-postgres').replace('        imagePullPolicy: IfNotPresent\n', '        imagePullPolicy: IfNotPresent\n        pullPolicy: Always\n');
    expect(() => validateWorkloads(bad)).toThrow(/unknown field initContainers\[clear-stale-pid\]\.pullPolicy/);
  });
  it('PSA restricted flags what the admission controller rejects', () => {
    const bad = render('3.4.1-minimal-postgres').replace('allowPrivilegeEscalation: false', 'allowPrivilegeEscalation: true');
    expect(Object.values(psaRestricted(bad)).flat().join('\n')).toMatch(/allowPrivilegeEscalation must be false/);
    const noSeccomp = render('3.4.1-minimal-postgres').replace(/seccompProfile:\n\s+type: RuntimeDefault/g, 'seccompProfile: {type: Unconfined}');
    expect(Object.values(psaRestricted(noSeccomp)).flat().join('\n')).toMatch(/Unconfined/);
  });
});

describe('1. values path: kong-db-init values writes an overlay from the same computation as the post-renderer', () => {
  for (const name of ['3.4.1-enterprise', '3.4.1-minimal-postgres', '2.38.0-minimal-postgres', '3.4.1-vault']) {
    it(`${name}: the committed overlay is what the render needs; applied by helm it validates, passes PSA restricted, round-trips, and post-render leaves it alone`, () => {
      const values = userValues(name.replace(/^[\d.]+-/, ''));
      const overlay = valuesOverlay(render(name), { ...base, meshReady: true }, values);
      expect(overlay).toBe(fs.readFileSync(path.join(FIX, `chart-${name}.overlay.yaml`), 'utf8'));
      const applied = render(`${name}.with-overlay`);
      expect(validateWorkloads(applied)).toBeGreaterThan(0);
      noPsaProblems(applied);
      expect(valuesOverlay(applied, { ...base, meshReady: true }, values)).toBe(overlay);
      expect(checkOverlay(overlay, valuesOverlay(applied, { ...base, meshReady: true }, values), 'x').stale).toBe(false);
      expect(postRender(applied, base).output).toBe(applied);
      // the same init containers as the post-renderer would inject
      const viaPostRender = podOf(postRender(render(name), base).output);
      const viaValues = podOf(applied);
      for (const n of ['kong-db-init-install', 'kong-db-init']) expect(container(viaValues, n)).toEqual(container(viaPostRender, n));
      expect(initNames(viaValues)).toEqual(initNames(viaPostRender));
    });
  }

  it('the Enterprise user keeps their image, envFrom, own init container and volumes; migrate gets everything the chart generates for Kong', () => {
    const spec = podOf(render('3.4.1-enterprise.with-overlay'));
    const proxy = container(spec, 'proxy');
    const mig = container(spec, 'kong-db-init');
    expect(proxy.image).toBe('kong/kong-gateway:3.7.1.0');
    expect(mig.image).toBe(proxy.image);
    expect(proxy.envFrom).toEqual([{ secretRef: { name: 'kong-db' } }]);
    expect(mig.envFrom).toEqual(proxy.envFrom);
    expect(initNames(spec)).toEqual(['clear-stale-pid', 'fetch-geoip', 'kong-db-init-install', 'kong-db-init', 'wait-for-db']);
    expect(spec.volumes.map((v: Obj) => v.name)).toEqual(expect.arrayContaining(['geoip', 'audit-config', 'kong-plugin-acme-auth', 'kong-pg-ca', 'kong-db-init-bin']));
    expect(mig.env).toEqual(proxy.env);
    const env = Object.fromEntries(mig.env.map((e: Obj) => [e.name, e.value ?? e.valueFrom]));
    expect(env.KONG_PLUGINS).toBe('bundled,acme-auth');
    expect(env.KONG_LUA_PACKAGE_PATH).toBeDefined();
    expect(env.KONG_LUA_SSL_TRUSTED_CERTIFICATE).toBe('/etc/secrets/kong-pg-ca/ca.crt');
    expect(env.KONG_PASSWORD).toEqual({ secretKeyRef: { key: 'password', name: 'kong-enterprise-superuser-password' } });
    expect(mig.volumeMounts.map((m: Obj) => m.mountPath)).toEqual(expect.arrayContaining(['/opt/kong/plugins/acme-auth', '/etc/secrets/kong-pg-ca', '/opt/geoip']));
  });

  it('the minimal user: the chart\'s env KONG_PG_PORT=5432 applies to migrate exactly as to Kong (same env, same envFrom, same precedence)', () => {
    const spec = podOf(render('3.4.1-minimal-postgres.with-overlay'));
    const [proxy, mig] = [container(spec, 'proxy'), container(spec, 'kong-db-init')];
    expect(mig.env.find((e: Obj) => e.name === 'KONG_PG_PORT')).toEqual({ name: 'KONG_PG_PORT', value: '5432' });
    expect([mig.env, mig.envFrom]).toEqual([proxy.env, proxy.envFrom]);
  });

  it('--check: exit 21 with a readable diff when the committed overlay is stale (chart 2.38 → 3.4.1), 0 when current', async () => {
    const committed = path.join(FIX, 'chart-2.38.0-minimal-postgres.overlay.yaml');
    const run = (input: string) => execa(process.execPath, [CLI, 'values', '-f', path.join(VALUES, 'minimal-postgres.yaml'), '--image', 'kong-db-init:ci', '--check', committed], { input, reject: false });
    const stale = await run(render('3.4.1-minimal-postgres'));
    expect(stale.exitCode).toBe(21);
    expect(stale.stdout).toBe('');
    expect(stale.stderr).toMatch(/is stale \(- committed, \+ what the current render needs\); regenerate it/);
    expect(stale.stderr).toMatch(/^- +image: kong:3\.6$/m);
    expect(stale.stderr).toMatch(/^\+ +image: kong:3\.9$/m);
    const current = await run(render('2.38.0-minimal-postgres'));
    expect(current.exitCode, current.stderr).toBe(0);
    expect(current.stderr).toMatch(/is up to date/);
  });

  it('keeps secrets given as plain env values out of the --check diff', () => {
    const a = 'deployment:\n  initContainers:\n  - name: kong-db-init\n    env:\n    - name: KONG_PG_PASSWORD\n      value: hunter2-old\n';
    const b = a.replace('hunter2-old', 'hunter2-new');
    const r = checkOverlay(a, b, 'f.yaml');
    expect(r.stale).toBe(true);
    expect(r.report).not.toMatch(/hunter2/);
    expect(r.report).toMatch(/<redacted>/);
  });
});

describe('2. PSA restricted on every chart version', () => {
  for (const v of ['2.38.0', '2.52.0', '3.4.1']) {
    it(`chart ${v}: the input passes, and so does the post-rendered release`, () => {
      const input = render(`${v}-minimal-postgres`);
      noPsaProblems(input);
      const out = postRender(input, base).output;
      expect(validateWorkloads(out)).toBe(2);
      noPsaProblems(out);
      const spec = podOf(out);
      const install = container(spec, 'kong-db-init-install');
      // 2.30–2.47 set seccompProfile per container only: ours need their own
      if (!spec.securityContext?.seccompProfile) expect(install.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
      else expect(install.securityContext.seccompProfile).toBeUndefined();
    });
  }
});

describe('3. OpenShift (containerSecurityContext.enabled=false)', () => {
  it('no fixed uid or gid on our containers when the chart sets none; our containers add no PSA problem of their own', () => {
    const input = render('3.4.1-openshift');
    const out = postRender(input, base).output;
    validateWorkloads(out);
    const spec = podOf(out);
    const install = container(spec, 'kong-db-init-install');
    expect(install.securityContext.runAsUser).toBeUndefined();
    expect(install.securityContext.runAsGroup).toBeUndefined();
    expect(install.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(container(spec, 'kong-db-init').securityContext).toEqual(container(spec, 'proxy').securityContext);
    const problems = psaRestricted(out)['Deployment/demo-kong']!;
    expect(problems.filter((p) => p.includes('kong-db-init-install'))).toEqual([]);
    // the migrate container has exactly the proxy's (the chart's) problems, which the OpenShift SCC fills in
    const strip = (c: string) => problems.filter((p) => p.startsWith(`container ${c}:`)).map((p) => p.replace(`container ${c}:`, ''));
    expect(strip('kong-db-init')).toEqual(strip('proxy'));
  });
});

describe('4 and 5. releases without a Postgres-backed gateway pass through unchanged with a note', () => {
  it.each([
    ['3.4.1-controller-only', /controller only: no proxy container/],
    ['3.4.1-dbless', /DB-less: KONG_DATABASE=off/],
  ])('%s', async (name, note) => {
    const input = render(name);
    const r = postRender(input, base);
    expect(r.output).toBe(input);
    expect(r.changes.join('\n')).toMatch(note);
    const p = await execa(process.execPath, [CLI, 'post-render'], { input, reject: false, env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() }, extendEnv: false, stripFinalNewline: false });
    expect(p.exitCode, p.stderr).toBe(0);
    expect(p.stdout).toBe(input);
    expect(p.stderr).toMatch(note);
  });
  it('a hybrid data plane: unchanged with a note', () => {
    const input = fs.readFileSync(path.join(FIX, 'hybrid.yaml'), 'utf8').split(/^---$/m).filter((d) => d.includes('dp-kong')).join('---');
    const r = postRender(input, base);
    expect(r.output).toBe(input);
    expect(r.changes.join('\n')).toMatch(/hybrid data plane/);
  });
});

describe('6. Helm 4 hides a post-renderer plugin\'s stderr', () => {
  it('the plugin sends its stderr to its parent\'s (Helm\'s) stderr when HELM_PLUGIN_NAME is set, and to the error file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-plugin-'));
    const script = path.join(ROOT, 'charts/post-renderer/kong-db-init/post-render.sh');
    // a node process stands in for helm: its stderr is what the user sees; the plugin's own stderr is thrown away
    // (Helm's stderr is a terminal, a pipe or a file; here a file, since a Node parent's would be a socket)
    const fakeHelm = `const r = require('child_process').spawnSync(${JSON.stringify(script)}, { stdio: ['ignore', 'ignore', 'ignore'] }); process.exit(r.status ?? 1);`;
    const helmStderr = path.join(dir, 'helm.stderr');
    const r = await execa('sh', ['-c', 'exec "$0" -e "$1" 2>>"$2"', process.execPath, fakeHelm, helmStderr], {
      env: { PATH: process.env.PATH!, TMPDIR: dir, HELM_PLUGIN_NAME: 'kong-db-init', KONG_DB_INIT_CLI: `${process.execPath} ${CLI}` },
      extendEnv: false,
      reject: false,
    });
    const seen = fs.readFileSync(helmStderr, 'utf8');
    expect(r.exitCode, seen).toBe(20);
    expect(seen).toMatch(/kong-db-init post-render: empty input/);
    expect(fs.readFileSync(path.join(dir, 'kong-db-init-post-render.err'), 'utf8')).toMatch(/empty input/);
  });
});

describe('7. image, pull policy, resources, service mesh, Vault, help', () => {
  it('no invented registry: without --image the post-renderer says how to build and push it (exit 2); --pull-policy is applied', async () => {
    const run = (args: string[]) => execa(process.execPath, [CLI, 'post-render', ...args], { input: render('3.4.1-minimal-postgres'), reject: false, env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() }, extendEnv: false });
    const r = await run([]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/pass --image REF \(or set KONG_DB_INIT_IMAGE\): build and push the image from this repository first, e\.g\. `docker build -t REGISTRY\/kong-db-init:VERSION \. && docker push/);
    const ok = await run(['--image', 'kong-db-init:ci', '--pull-policy', 'Never']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    const install = container(podOf(ok.stdout), 'kong-db-init-install');
    expect([install.image, install.imagePullPolicy]).toEqual(['kong-db-init:ci', 'Never']);
    expect(container(podOf(ok.stdout), 'kong-db-init').imagePullPolicy).toBe('IfNotPresent'); // the proxy's
  });

  it('bounded resources for migrate when the proxy has none (the chart default `resources: {}`); the proxy\'s when set', () => {
    const spec = podOf(postRender(render('3.4.1-minimal-postgres'), base).output);
    expect(container(spec, 'proxy').resources).toEqual({});
    expect(container(spec, 'kong-db-init').resources).toEqual(DEFAULT_MIGRATE_RESOURCES);
    expect(container(spec, 'kong-db-init-install').resources.limits.memory).toBe('128Mi');
    const withRes = render('3.4.1-minimal-postgres').replace(/(- name: "proxy"[\s\S]*?resources:\n\s+)\{\}/, '$1{limits: {cpu: "2", memory: 2Gi}}');
    expect(container(podOf(postRender(withRes, base).output), 'kong-db-init').resources).toEqual({ limits: { cpu: '2', memory: '2Gi' } });
  });

  it('service mesh without native sidecars: refuses with what to set; native sidecars, an excluded Postgres port or --mesh-ready let it through', () => {
    const input = render('3.4.1-mesh-istio');
    expect(() => postRender(input, base)).toThrow(/Istio is injected \(label sidecar.istio.io\/inject=true\).*sidecar.istio.io\/nativeSidecar: "true".*traffic.sidecar.istio.io\/excludeOutboundPorts: "5432".*--mesh-ready/);
    const native = input.replace(/(    metadata:\n      annotations:\n)/, '$1        sidecar.istio.io/nativeSidecar: "true"\n');
    expect(native).not.toBe(input);
    for (const [i, o] of [[native, base], [input, { ...base, meshReady: true }]] as const) {
      const out = postRender(i, o).output;
      validateWorkloads(out);
      noPsaProblems(out);
      expect(initNames(podOf(out))).toContain('kong-db-init');
    }
    // waitImage.enabled=false alone (mesh injected by a namespace label does not show in a render)
    const noLabel = input.replace(/\n\s+sidecar.istio.io\/inject: "true"/g, '');
    expect(() => postRender(noLabel, base)).toThrow(/wait-for-db init container is off \(waitImage.enabled=false/);
  });

  it('Vault agent injector: agent-init-first is set so the secret file exists before migrate reads it; pre-populate=false is refused', () => {
    const out = postRender(render('3.4.1-vault'), base);
    const dep = docs(out.output).find((d) => d.kind === 'Deployment')!;
    expect(dep.spec.template.metadata.annotations['vault.hashicorp.com/agent-init-first']).toBe('true');
    expect(out.changes.join('\n')).toMatch(/agent-init-first: "true"/);
    expect(container(dep.spec.template.spec, 'kong-db-init').env).toContainEqual({ name: 'KONG_PG_PASSWORD_FILE', value: '/vault/secrets/pg-password' });
    expect(postRender(out.output, base).output).toBe(out.output);
    const noPre = render('3.4.1-vault').replace('vault.hashicorp.com/agent-inject: "true"', 'vault.hashicorp.com/agent-inject: "true"\n        vault.hashicorp.com/agent-pre-populate: "false"');
    expect(() => postRender(noPre, base)).toThrow(/agent-pre-populate is "false".*set podAnnotations vault.hashicorp.com\/agent-pre-populate: "true"/);
  });

  it('post-render --help and the plugin scripts name paths that exist', () => {
    const texts = [POST_RENDER_HELP, ...['charts/post-renderer/helm3-post-render', 'charts/post-renderer/kong-db-init/post-render.sh'].map((f) => fs.readFileSync(path.join(ROOT, f), 'utf8'))];
    const paths = texts.flatMap((t) => [...t.matchAll(/\.\/(charts\/[\w./-]+)/g)].map((m) => m[1]!));
    expect(paths.length).toBeGreaterThan(3);
    for (const p of paths) expect(fs.existsSync(path.join(ROOT, p)), p).toBe(true);
  });
});
