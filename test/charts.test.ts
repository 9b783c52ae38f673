/**
 * The chart drop-in on real renders of the real Kong chart (2.38.0, 2.52.0, 3.4.1), one block per
 * finding of issues 9 and 14. The renders, and the renders with our values overlays applied, were
 * made by real helm 3 from the real chart (test/fixtures/render/README.md has the commands; the
 * chart itself cannot be in the repository), so here "applied by helm" means those committed
 * renders, and the first check of each block is that the committed overlay is exactly what the
 * current code writes. Real Helm 3 and 4 run at test time on the repository's Kong-shaped charts
 * (the last block). Every output is decoded strictly (duplicate keys and unknown fields rejected:
 * ours, and the Kubernetes Go types) and evaluated against Pod Security `restricted` twice: the
 * hand-written rules and the Kubernetes project's own evaluator (k8s.io/pod-security-admission,
 * test/psa); the with-overlay renders also go through `kubectl kustomize` (Flux, Argo CD).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { postRender, type RenderOptions } from '../src/render/transform.js';
import { DEFAULT_MIGRATE_RESOURCES } from '../src/render/containers.js';
import { POST_RENDER_HELP } from '../src/commands/post-render.js';
import { finishInjection } from '../src/render/finish-sidecar.js';
import { checkOverlay, valuesOverlay } from '../src/render/overlay.js';
import { GROUP_LABEL } from '../src/kube/rollout.js';
import { CLI, ROOT } from './helpers/harness.js';
import {
  buildKubeCheck,
  docs,
  ensureKustomize,
  goAvailable,
  helmBinaries,
  helmEnv,
  kubeCheck,
  kubeProblems,
  kubePsaOfOurs,
  kustomizeAvailable,
  kustomizeBuild,
  psaRestricted,
  validateWorkloads,
} from './helpers/k8s-check.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const FIX = path.join(ROOT, 'test/fixtures/render');
const VALUES = path.join(ROOT, 'test/fixtures/chart/values');
const render = (name: string) => fs.readFileSync(path.join(FIX, `chart-${name}.yaml`), 'utf8');
const userValues = (name: string) => [{ file: `${name}.yaml`, text: fs.readFileSync(path.join(VALUES, `${name}.yaml`), 'utf8') }];
const base: RenderOptions = { image: 'kong-db-init:ci', pullPolicy: 'IfNotPresent', finish: 'auto', replaceWait: false, allowNoKong: false };
const podOf = (stream: string, kind = 'Deployment'): Obj => docs(stream).find((d) => d.kind === kind)!.spec.template.spec;
const container = (spec: Obj, name: string): Obj => [...(spec.initContainers ?? []), ...spec.containers].find((c: Obj) => c.name === name);
const initNames = (spec: Obj): string[] => (spec.initContainers ?? []).map((c: Obj) => c.name);
/** Both Pod Security checks (hand-written and the real evaluator) and the real strict decoding find nothing. */
const noPsaProblems = (stream: string) => {
  expect(Object.values(psaRestricted(stream)).flat()).toEqual([]);
  expect(kubeProblems(stream)).toEqual({});
};
const kustomizes = (stream: string) => {
  const k = kustomizeBuild(stream);
  expect(k.ok, k.output).toBe(true);
};
const AIO = 'registry.example.com/kong-db-init-aio:3.9';
/**
 * Every container that runs our program can reach it: `/kong-db-init/…` needs the program volume
 * mounted there; `/opt/kong-db-init/…` needs an image that holds it (ours, or the all-in-one image).
 */
function programProblems(stream: string, images: string[]): string[] {
  const out: string[] = [];
  for (const d of docs(stream).filter((x) => ['Deployment', 'DaemonSet', 'StatefulSet'].includes(x.kind))) {
    const spec = d.spec.template.spec;
    for (const c of [...(spec.initContainers ?? []), ...spec.containers] as Obj[]) {
      const bin = String(c.command?.[0] ?? '');
      if (bin.startsWith('/kong-db-init/') && !(c.volumeMounts ?? []).some((m: Obj) => m.name === 'kong-db-init-bin' && m.mountPath === '/kong-db-init'))
        out.push(`${c.name}: runs ${bin} without the kong-db-init-bin volume`);
      if (bin.startsWith('/opt/kong-db-init/') && !images.includes(c.image)) out.push(`${c.name}: runs ${bin} in ${c.image}, which does not hold the program`);
    }
  }
  return out;
}
const haveGo = goAvailable();
const kubectl = kustomizeAvailable();
if (!haveGo) console.warn('charts.test.ts: no `go`: the real Pod Security evaluator (test/psa) cannot be built; its suites are skipped');
if (!kubectl) console.warn('charts.test.ts: no `kubectl` and no `go` to build kustomize: its suites are skipped');
// the real checker (and kustomize, without kubectl) is built once (cached under ~/.cache/kong-db-init), before any test uses it
beforeAll(async () => {
  if (haveGo) await buildKubeCheck();
  await ensureKustomize();
}, 900_000);

describe.skipIf(!haveGo || !kubectl)('the offline checks themselves', () => {
  it("strict decoding (ours, the Kubernetes Go types, kustomize) rejects a duplicate key in a pod template's labels", () => {
    const dup = render('3.4.1-minimal-postgres').replace(
      '        app.kubernetes.io/component: app\n',
      '        app.kubernetes.io/component: app\n        app.kubernetes.io/component: app\n',
    );
    expect(dup).not.toBe(render('3.4.1-minimal-postgres'));
    expect(() => docs(dup)).toThrow(/strict YAML decoding failed: Map keys must be unique/);
    expect(kubeProblems(dup)['Deployment/demo-kong']!.join('\n')).toMatch(/already set in map/);
    expect(kustomizeBuild(dup).output).toMatch(/already defined|already set/);
  });
  it('the real checker rejects unknown fields and names the Pod Security findings, as the API server would', () => {
    const r = kubeCheck(
      render('3.4.1-minimal-postgres').replace(
        '        imagePullPolicy: IfNotPresent\n',
        '        imagePullPolicy: IfNotPresent\n        pullPolicy: Always\n',
      ),
    );
    expect(r.find((x) => x.kind === 'Deployment')!.strict.join('\n')).toMatch(
      /unknown field "spec.template.spec.initContainers\[0\].pullPolicy"|unknown field "pullPolicy"/,
    );
    const esc = kubeCheck(render('3.4.1-minimal-postgres').replace('allowPrivilegeEscalation: false', 'allowPrivilegeEscalation: true'));
    expect(JSON.stringify(esc.find((x) => x.kind === 'Deployment')!.psa)).toMatch(/allowPrivilegeEscalation != false/);
  });
  it('strict decoding rejects an unknown field, as kubectl --validate=strict does', () => {
    const bad = render('3.4.1-minimal-postgres').replace(
      '        imagePullPolicy: IfNotPresent\n',
      '        imagePullPolicy: IfNotPresent\n        pullPolicy: Always\n',
    );
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
    it.skipIf(!haveGo || !kubectl)(
      `${name}: the committed overlay is what the render needs; the real chart rendered by helm with it validates, passes PSA restricted (both checks), kustomizes, round-trips, and post-render leaves it alone`,
      () => {
        const values = userValues(name.replace(/^[\d.]+-/, ''));
        const overlay = valuesOverlay(render(name), { ...base, meshReady: true }, values);
        expect(overlay).toBe(fs.readFileSync(path.join(FIX, `chart-${name}.overlay.yaml`), 'utf8'));
        const applied = render(`${name}.with-overlay`);
        expect(validateWorkloads(applied)).toBeGreaterThan(0);
        noPsaProblems(applied);
        kustomizes(applied);
        expect(valuesOverlay(applied, { ...base, meshReady: true }, values)).toBe(overlay);
        expect(checkOverlay(overlay, valuesOverlay(applied, { ...base, meshReady: true }, values), 'x').stale).toBe(false);
        expect(postRender(applied, base).output).toBe(applied);
        // the same init containers as the post-renderer would inject
        const viaPostRender = podOf(postRender(render(name), base).output);
        const viaValues = podOf(applied);
        for (const n of ['kong-db-init-install', 'kong-db-init']) expect(container(viaValues, n)).toEqual(container(viaPostRender, n));
        expect(initNames(viaValues)).toEqual(initNames(viaPostRender));
      },
    );
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
    expect(spec.volumes.map((v: Obj) => v.name)).toEqual(
      expect.arrayContaining(['geoip', 'audit-config', 'kong-plugin-acme-auth', 'kong-pg-ca', 'kong-db-init-bin']),
    );
    expect(mig.env).toEqual(proxy.env);
    const env = Object.fromEntries(mig.env.map((e: Obj) => [e.name, e.value ?? e.valueFrom]));
    expect(env.KONG_PLUGINS).toBe('bundled,acme-auth');
    expect(env.KONG_LUA_PACKAGE_PATH).toBeDefined();
    expect(env.KONG_LUA_SSL_TRUSTED_CERTIFICATE).toBe('/etc/secrets/kong-pg-ca/ca.crt');
    expect(env.KONG_PASSWORD).toEqual({ secretKeyRef: { key: 'password', name: 'kong-enterprise-superuser-password' } });
    expect(mig.volumeMounts.map((m: Obj) => m.mountPath)).toEqual(
      expect.arrayContaining(['/opt/kong/plugins/acme-auth', '/etc/secrets/kong-pg-ca', '/opt/geoip']),
    );
  });

  it("the minimal user: the chart's env KONG_PG_PORT=5432 applies to migrate exactly as to Kong (same env, same envFrom, same precedence)", () => {
    const spec = podOf(render('3.4.1-minimal-postgres.with-overlay'));
    const [proxy, mig] = [container(spec, 'proxy'), container(spec, 'kong-db-init')];
    expect(mig.env.find((e: Obj) => e.name === 'KONG_PG_PORT')).toEqual({ name: 'KONG_PG_PORT', value: '5432' });
    expect([mig.env, mig.envFrom]).toEqual([proxy.env, proxy.envFrom]);
  });

  it('--check: exit 21 with a readable diff when the committed overlay is stale (chart 2.38 → 3.4.1), 0 when current', async () => {
    const committed = path.join(FIX, 'chart-2.38.0-minimal-postgres.overlay.yaml');
    const run = (input: string) =>
      execa(process.execPath, [CLI, 'values', '-f', path.join(VALUES, 'minimal-postgres.yaml'), '--image', 'kong-db-init:ci', '--check', committed], {
        input,
        reject: false,
      });
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

const FINISH = { ...base, meshReady: true, finishSidecar: true, finishOptions: { namespace: 'kong' } };

describe.skipIf(!haveGo || !kubectl)('values --finish-sidecar on the real chart, every version (issue 14 item 2)', () => {
  for (const v of ['2.38.0', '2.52.0', '3.4.1']) {
    it(`chart ${v}: the committed overlay is what the code writes; the real chart rendered with it has each label key once (strict decoding, kubectl kustomize), passes PSA restricted, and round-trips`, () => {
      const values = userValues('minimal-postgres');
      const overlay = valuesOverlay(render(`${v}-minimal-postgres`), FINISH, values);
      expect(overlay).toBe(fs.readFileSync(path.join(FIX, `chart-${v}-minimal-postgres.finish.overlay.yaml`), 'utf8'));
      // the chart copies extraLabels into the pod template's labels itself: the label is set there, and only there
      expect(overlay).toMatch(/^extraLabels:\n {2}kong-db-init\.io\/finish-group: default$/m);
      expect(overlay).not.toMatch(/^podLabels:/m);
      const applied = render(`${v}-minimal-postgres.finish.with-overlay`);
      expect(() => docs(applied)).not.toThrow();
      kustomizes(applied);
      noPsaProblems(applied);
      expect(validateWorkloads(applied)).toBeGreaterThan(0);
      const all = docs(applied);
      const dep = all.find((d) => d.kind === 'Deployment')!;
      expect(dep.metadata.labels[GROUP_LABEL]).toBe('default');
      expect(dep.spec.template.metadata.labels[GROUP_LABEL]).toBe('default');
      const binding = all.find((d) => d.kind === 'RoleBinding')!;
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: dep.spec.template.spec.serviceAccountName, namespace: 'kong' }]);
      expect(binding.subjects[0].name).toBe('demo-kong');
      expect(all.filter((d) => d.kind === 'Job')).toEqual([]);
      const spec = dep.spec.template.spec;
      const side = container(spec, 'kong-db-init-finish');
      expect(side.env).toEqual([...container(spec, 'proxy').env, { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }]);
      expect(programProblems(applied, ['kong-db-init:ci'])).toEqual([]);
      expect(valuesOverlay(applied, FINISH, values)).toBe(overlay);
    });
  }
});

describe.skipIf(!haveGo || !kubectl)('--all-in-one with --finish-sidecar: the sidecar runs the image that holds the program (issue 14 item 3)', () => {
  const AIO_OPTS = { ...base, image: undefined, allInOne: AIO };
  it('values: the committed overlay is what the code writes; in the real chart rendered with it every container reaches the program', () => {
    const values = userValues('minimal-postgres');
    const overlay = valuesOverlay(render('3.4.1-minimal-postgres'), { ...FINISH, ...AIO_OPTS }, values);
    expect(overlay).toBe(fs.readFileSync(path.join(FIX, 'chart-3.4.1-minimal-postgres.aio-finish.overlay.yaml'), 'utf8'));
    const applied = render('3.4.1-minimal-postgres.aio-finish.with-overlay');
    expect(programProblems(applied, [AIO])).toEqual([]);
    const side = container(podOf(applied), 'kong-db-init-finish');
    expect([side.image, side.command]).toEqual([AIO, ['/opt/kong-db-init/kong-db-init', 'finish']]);
    expect(side.args).toContain('--kong-image=kong:3.9');
    expect(podOf(applied).volumes.map((v: Obj) => v.name)).not.toContain('kong-db-init-bin');
    kustomizes(applied);
    noPsaProblems(applied);
  });
  it('post-render: the same', () => {
    const out = postRender(render('3.4.1-minimal-postgres'), {
      ...AIO_OPTS,
      finishSidecar: true,
      injections: [finishInjection({ namespace: 'kong', allInOne: AIO, pullPolicy: 'IfNotPresent' })],
    }).output;
    expect(programProblems(out, [AIO])).toEqual([]);
    expect(container(podOf(out), 'kong-db-init-finish').image).toBe(AIO);
    noPsaProblems(out);
  });
});

describe("a literal secret in the proxy's env (issue 14 item 1: `--set env.pg_password=…`, real chart render)", () => {
  const input = render('3.4.1-literal-password');
  const PW = 'Lit3ral-pg-Passw0rd';
  it('values refuses to write it into the overlay (exit 20), naming the variable and the fixes, never the value', async () => {
    expect(input).toContain(`value: "${PW}"`);
    const r = await execa(process.execPath, [CLI, 'values', '-f', path.join(VALUES, 'minimal-postgres.yaml'), '--image', 'kong-db-init:ci'], {
      input,
      reject: false,
    });
    expect(r.exitCode).toBe(20);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/refusing to write a literal secret into the values overlay \(a file you commit\): KONG_PG_PASSWORD has a literal value/);
    expect(r.stderr).toMatch(/env\.pg_password: \{valueFrom: \{secretKeyRef: \{name: SECRET, key: KEY\}\}\}/);
    expect(r.stderr).toMatch(/envFrom: \[\{secretRef: \{name: SECRET\}\}\]/);
    expect(r.stderr).toMatch(/KONG_PG_PASSWORD_FILE/);
    expect(r.stderr).not.toContain(PW);
    // --check refuses too, without a diff that would show it
    const c = await execa(
      process.execPath,
      [
        CLI,
        'values',
        '-f',
        path.join(VALUES, 'minimal-postgres.yaml'),
        '--image',
        'kong-db-init:ci',
        '--check',
        path.join(FIX, 'chart-3.4.1-minimal-postgres.overlay.yaml'),
      ],
      { input, reject: false },
    );
    expect(c.exitCode).toBe(20);
    expect(c.stderr).not.toContain(PW);
  });
  it('the same secret from a Secret (the enterprise render: env.password via secretKeyRef) is fine', () => {
    expect(() => valuesOverlay(render('3.4.1-enterprise'), { ...base, meshReady: true }, userValues('enterprise'))).not.toThrow();
  });
  it('post-render copies it (Helm applies the output; it is never committed) but no error message shows it', async () => {
    const run = (args: string[], env: Record<string, string> = {}) =>
      execa(process.execPath, [CLI, 'post-render', ...args], {
        input,
        reject: false,
        env: { PATH: process.env.PATH!, TMPDIR: fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-secret-')), ...env },
        extendEnv: false,
      });
    const ok = await run(['--image', 'kong-db-init:ci']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(container(podOf(ok.stdout), 'kong-db-init').env).toContainEqual({ name: 'KONG_PG_PASSWORD', value: PW });
    expect(ok.stderr).not.toContain(PW);
    for (const args of [[], ['--image', 'kong-db-init:ci', '--frobnicate'], ['--image', 'kong-db-init:ci', '--finish-sidecar', '--finish-group', '']]) {
      const bad = await run(args);
      expect(bad.exitCode, bad.stderr).not.toBe(0);
      expect(bad.stdout).toBe('');
      expect(bad.stderr).not.toContain(PW);
    }
    // even a malformed document (the parser's message is about the line holding the password)
    const broken = input.replace(`value: "${PW}"`, `value: "${PW}`);
    const b = await execa(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:ci'], { input: broken, reject: false });
    expect(b.exitCode).toBe(20);
    expect(b.stderr).toMatch(/malformed YAML/);
    expect(b.stderr).not.toContain(PW);
  });
});

describe('2. PSA restricted on every chart version', () => {
  for (const v of ['2.38.0', '2.52.0', '3.4.1']) {
    it.skipIf(!haveGo)(`chart ${v}: the input passes, and so does the post-rendered release (both evaluators)`, () => {
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
    if (haveGo) {
      expect(kubePsaOfOurs(out)).toEqual([]);
      expect(kubeCheck(out).find((r) => r.kind === 'Deployment')!.psa.length).toBeGreaterThan(0); // the chart's own containers, as the SCC expects
    }
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
    const p = await execa(process.execPath, [CLI, 'post-render'], {
      input,
      reject: false,
      env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() },
      extendEnv: false,
      stripFinalNewline: false,
    });
    expect(p.exitCode, p.stderr).toBe(0);
    expect(p.stdout).toBe(input);
    expect(p.stderr).toMatch(note);
    // one behaviour on both paths (issue 14 item 6): values writes an empty overlay, exit 0, with the same note
    const v = await execa(process.execPath, [CLI, 'values', '--image', 'kong-db-init:ci'], { input, reject: false });
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stderr).toMatch(note);
    expect(v.stderr).toMatch(/nothing to add \(the overlay is empty/);
    expect(v.stdout).toMatch(/^# Generated by `kong-db-init values`/);
    expect(docs(v.stdout)).toEqual([{}]);
  });
  it('a hybrid data plane: unchanged with a note (values: an empty overlay)', () => {
    const input = fs
      .readFileSync(path.join(FIX, 'hybrid.yaml'), 'utf8')
      .split(/^---$/m)
      .filter((d) => d.includes('dp-kong'))
      .join('---');
    const r = postRender(input, base);
    expect(r.output).toBe(input);
    expect(r.changes.join('\n')).toMatch(/hybrid data plane/);
    expect(valuesOverlay(input, base, [])).toMatch(/^\{\}$/m);
  });
  it('no Kong chart workload at all: exit 20 on both paths unless --allow-no-kong (then unchanged / an empty overlay)', async () => {
    const input = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n';
    for (const cmd of ['post-render', 'values']) {
      const r = await execa(process.execPath, [CLI, cmd, '--image', 'kong-db-init:ci'], {
        input,
        reject: false,
        env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() },
        extendEnv: false,
      });
      expect([cmd, r.exitCode]).toEqual([cmd, 20]);
      expect(r.stderr).toMatch(/no Kong chart workload was found.*--allow-no-kong/);
      const ok = await execa(process.execPath, [CLI, cmd, '--image', 'kong-db-init:ci', '--allow-no-kong'], {
        input,
        reject: false,
        env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() },
        extendEnv: false,
      });
      expect([cmd, ok.exitCode, ok.stderr]).toEqual([cmd, 0, expect.stringMatching(/passed through unchanged/)]);
    }
  });
});

describe("6. Helm 4 hides a post-renderer plugin's stderr", () => {
  it("the plugin sends its stderr to its parent's (Helm's) stderr when HELM_PLUGIN_NAME is set, and to the error file", async () => {
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
    expect(fs.readFileSync(path.join(dir, `kong-db-init-${process.getuid!()}`, 'post-render.err'), 'utf8')).toMatch(/empty input/);
  });
});

describe('7. image, pull policy, resources, service mesh, Vault, help', () => {
  it('no invented registry: without --image the post-renderer says how to build and push it (exit 2); --pull-policy is applied', async () => {
    const run = (args: string[]) =>
      execa(process.execPath, [CLI, 'post-render', ...args], {
        input: render('3.4.1-minimal-postgres'),
        reject: false,
        env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir() },
        extendEnv: false,
      });
    const r = await run([]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /pass --image REF \(or set KONG_DB_INIT_IMAGE\): build and push the image from this repository first, e\.g\. `docker build -t REGISTRY\/kong-db-init:VERSION \. && docker push/,
    );
    const ok = await run(['--image', 'kong-db-init:ci', '--pull-policy', 'Never']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    const install = container(podOf(ok.stdout), 'kong-db-init-install');
    expect([install.image, install.imagePullPolicy]).toEqual(['kong-db-init:ci', 'Never']);
    expect(container(podOf(ok.stdout), 'kong-db-init').imagePullPolicy).toBe('IfNotPresent'); // the proxy's
  });

  it("bounded resources for migrate when the proxy has none (the chart default `resources: {}`); the proxy's when set", () => {
    const spec = podOf(postRender(render('3.4.1-minimal-postgres'), base).output);
    expect(container(spec, 'proxy').resources).toEqual({});
    expect(container(spec, 'kong-db-init').resources).toEqual(DEFAULT_MIGRATE_RESOURCES);
    expect(container(spec, 'kong-db-init-install').resources.limits.memory).toBe('128Mi');
    const withRes = render('3.4.1-minimal-postgres').replace(/(- name: "proxy"[\s\S]*?resources:\n\s+)\{\}/, '$1{limits: {cpu: "2", memory: 2Gi}}');
    expect(container(podOf(postRender(withRes, base).output), 'kong-db-init').resources).toEqual({ limits: { cpu: '2', memory: '2Gi' } });
  });

  it('service mesh without native sidecars: refuses with what to set; native sidecars, an excluded Postgres port or --mesh-ready let it through', () => {
    const input = render('3.4.1-mesh-istio');
    expect(() => postRender(input, base)).toThrow(
      /Istio is injected \(label sidecar.istio.io\/inject=true\).*sidecar.istio.io\/nativeSidecar: "true".*traffic.sidecar.istio.io\/excludeOutboundPorts: "5432".*--mesh-ready/,
    );
    const native = input.replace(/( {4}metadata:\n {6}annotations:\n)/, '$1        sidecar.istio.io/nativeSidecar: "true"\n');
    expect(native).not.toBe(input);
    for (const [i, o] of [
      [native, base],
      [input, { ...base, meshReady: true }],
    ] as const) {
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
    const noPre = render('3.4.1-vault').replace(
      'vault.hashicorp.com/agent-inject: "true"',
      'vault.hashicorp.com/agent-inject: "true"\n        vault.hashicorp.com/agent-pre-populate: "false"',
    );
    expect(() => postRender(noPre, base)).toThrow(/agent-pre-populate is "false".*set podAnnotations vault.hashicorp.com\/agent-pre-populate: "true"/);
  });

  it('post-render --help and the plugin scripts name paths that exist', () => {
    const texts = [
      POST_RENDER_HELP,
      ...['charts/post-renderer/helm3-post-render', 'charts/post-renderer/kong-db-init/post-render.sh'].map((f) => fs.readFileSync(path.join(ROOT, f), 'utf8')),
    ];
    const paths = texts.flatMap((t) => [...t.matchAll(/\.\/(charts\/[\w./-]+)/g)].map((m) => m[1]!));
    expect(paths.length).toBeGreaterThan(3);
    for (const p of paths) expect(fs.existsSync(path.join(ROOT, p)), p).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------------
// Real Helm 3 and 4 at test time. The real Kong chart cannot be in the repository, so these run on
// test/e2e/chart/kong-e2e (shaped like kong/kong: the proxy, wait-for-db, its ServiceAccount, the
// chart's securityContext that passes `restricted`, the three migration Jobs, two of them hooks).
const helm = helmBinaries();
const e2eChart = path.join(ROOT, 'test/e2e/chart/kong-e2e');
const cliEnv = { KONG_DB_INIT_CLI: `${process.execPath} ${CLI}` };

describe.skipIf(!helm.v3 || !helm.v4 || !haveGo || !kubectl)(
  `real helm 3 and 4 render a Kong-shaped chart; every output passes strict decoding and the real Pod Security evaluator${helm.v3 && helm.v4 ? '' : ' (skipped: no helm v3/v4 in KDI_HELM3_BIN/KDI_HELM4_BIN)'}`,
  () => {
    const pr = path.join(ROOT, 'charts/post-renderer/helm3-post-render');
    const set = ['--set', 'pg.host=pg', '--namespace', 'kdi'];
    const check = (stream: string, { jobs }: { jobs: string[] }) => {
      expect(validateWorkloads(stream)).toBeGreaterThan(0);
      noPsaProblems(stream);
      expect(kubePsaOfOurs(stream)).toEqual([]);
      expect(programProblems(stream, ['kong-db-init:ci'])).toEqual([]);
      expect(
        docs(stream)
          .filter((d) => d.kind === 'Job')
          .map((d) => d.metadata.name),
      ).toEqual(jobs);
      kustomizes(stream);
    };

    it('helm 3 through the post-renderer executable (hooks are printed by helm template, never post-rendered)', async () => {
      const r = await execa(
        helm.v3!,
        ['template', 'rel', e2eChart, ...set, '--set', 'migrations.preUpgrade=false', '--post-renderer', pr, '--post-renderer-args', '--image=kong-db-init:ci'],
        { env: helmEnv(cliEnv), reject: false },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      check(r.stdout, { jobs: ['rel-kong-post-upgrade-migrations'] });
    });

    it('helm 3 with --finish-sidecar, the post-upgrade Job off and --post-upgrade-off', async () => {
      const r = await execa(
        helm.v3!,
        [
          'template',
          'rel',
          e2eChart,
          ...set,
          '--set',
          'migrations.preUpgrade=false',
          '--set',
          'migrations.postUpgrade=false',
          '--post-renderer',
          pr,
          '--post-renderer-args',
          '--image=kong-db-init:ci',
          '--post-renderer-args',
          '--finish-sidecar',
          '--post-renderer-args',
          '--post-upgrade-off',
        ],
        { env: helmEnv({ ...cliEnv, HELM_NAMESPACE: 'kdi' }), reject: false },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      check(r.stdout, { jobs: [] });
      expect(
        docs(r.stdout)
          .filter((d) => ['Role', 'RoleBinding'].includes(d.kind))
          .map((d) => d.kind),
      ).toEqual(['Role', 'RoleBinding']);
    });

    it("helm 4 through the plugin with --finish-sidecar (hooks passed: the chart's post-upgrade Job is removed)", async () => {
      const env = helmEnv(cliEnv);
      const inst = await execa(helm.v4!, ['plugin', 'install', path.join(ROOT, 'charts/post-renderer/kong-db-init')], { env, reject: false });
      expect(inst.exitCode, inst.stderr).toBe(0);
      const r = await execa(
        helm.v4!,
        [
          'template',
          'rel',
          e2eChart,
          ...set,
          '--post-renderer',
          'kong-db-init',
          '--post-renderer-args',
          '--image=kong-db-init:ci',
          '--post-renderer-args',
          '--finish-sidecar',
        ],
        { env, reject: false },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      check(r.stdout, { jobs: [] });
    });

    it('helm 3 and 4 apply the values overlay (the Argo CD / Flux path) to the chart', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-e2e-values-'));
      const user = path.join(dir, 'values.yaml');
      fs.writeFileSync(user, 'pg:\n  host: pg\n');
      for (const bin of [helm.v3!, helm.v4!]) {
        const tpl = async (...files: string[]) =>
          (await execa(bin, ['template', 'rel', e2eChart, '--namespace', 'kdi', ...files.flatMap((f) => ['-f', f])], { env: helmEnv() })).stdout;
        const v = await execa(process.execPath, [CLI, 'values', '-f', user, '--image', 'kong-db-init:ci'], { input: await tpl(user), reject: false });
        expect(v.exitCode, v.stderr).toBe(0);
        const overlay = path.join(dir, 'overlay.yaml');
        fs.writeFileSync(overlay, v.stdout);
        const applied = await tpl(user, overlay);
        check(applied, { jobs: ['rel-kong-post-upgrade-migrations'] });
        expect(initNames(podOf(applied))).toEqual(['clear-stale-pid', 'kong-db-init-install', 'kong-db-init', 'wait-for-db']);
      }
    });
  },
);
