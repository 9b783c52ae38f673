/**
 * `post-render --finish-sidecar` (issue 10, issue 14 items 3, 5, 10): the finish sidecar, its token
 * volume, labels and RBAC injected by the real post-renderer process into real renders of the Kong
 * chart, the chart's post-upgrade Job removed when Helm 4 passes hooks and refused when Helm 3
 * cannot show it, every output strictly decoded and checked against Pod Security `restricted`
 * (hand-written rules and the real evaluator). The values path on the real chart is in
 * test/charts.test.ts (committed real-chart renders with the overlay applied).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { FINISH_CONTAINER, FINISH_RULES, TOKEN_VOLUME } from '../src/render/finish-sidecar.js';
import { GROUP_LABEL, IMAGE_ANNOTATION } from '../src/kube/rollout.js';
import { CLI, ROOT } from './helpers/harness.js';
import { buildKubeCheck, docs, goAvailable, helmBinaries, helmEnv, kubeProblems, psaRestricted, validateWorkloads } from './helpers/k8s-check.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const FIX = path.join(ROOT, 'test/fixtures/render');
const run = (input: string, args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:ci', ...args], {
    input,
    reject: false,
    extendEnv: false,
    env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir(), ...env },
    stripFinalNewline: false,
  });
const haveGo = goAvailable();
beforeAll(async () => {
  if (haveGo) await buildKubeCheck();
}, 900_000);
/** Both PSA checks (hand-written, and the real evaluator with strict decoding when Go is there). */
const passesRestricted = (stream: string) => {
  expect(Object.values(psaRestricted(stream)).flat()).toEqual([]);
  if (haveGo) expect(kubeProblems(stream)).toEqual({});
};
/** The hand-made fixtures run as the namespace's default ServiceAccount: give them one of their own. */
const withSa = (stream: string, sa = 'kong-own') => stream.replace(/^( +)containers:$/m, `$1serviceAccountName: ${sa}\n$1containers:`);

describe('post-render --finish-sidecar', () => {
  const enterprise = fs.readFileSync(path.join(FIX, 'chart-3.4.1-enterprise.yaml'), 'utf8');

  it('adds the sidecar (Kong image, proxy env), the token volume, the labels and a list-only Role to the real chart 3.4.1 render', async () => {
    const r = await run(enterprise, ['--finish-sidecar', '--finish-group', 'edge', '--namespace', 'kong']);
    expect(r.exitCode, r.stderr).toBe(0);
    const all = docs(r.stdout);
    const dep = all.find((d) => d.kind === 'Deployment')!;
    const spec = dep.spec.template.spec as Obj;
    const proxy = spec.containers.find((c: Obj) => c.name === 'proxy');
    const side = spec.containers.find((c: Obj) => c.name === FINISH_CONTAINER);
    expect(side.image).toBe(proxy.image);
    expect(side.command).toEqual([expect.stringMatching(/\/kong-db-init$/), 'finish']);
    expect(side.args).toEqual(expect.arrayContaining(['--then-idle', '--group=edge', `--kong-image=${proxy.image}`]));
    expect(side.env.map((e: Obj) => e.name)).toEqual(expect.arrayContaining(proxy.env.map((e: Obj) => e.name)));
    expect(spec.volumes.map((v: Obj) => v.name)).toContain(TOKEN_VOLUME);
    expect(dep.metadata.labels[GROUP_LABEL]).toBe('edge');
    expect(dep.spec.template.metadata.labels[GROUP_LABEL]).toBe('edge');
    expect(dep.spec.template.metadata.annotations[IMAGE_ANNOTATION]).toBe(proxy.image);
    const role = all.find((d) => d.kind === 'Role')!;
    const binding = all.find((d) => d.kind === 'RoleBinding')!;
    expect(role.rules).toEqual(FINISH_RULES);
    expect(role.rules.flatMap((x: Obj) => x.verbs)).toEqual(['list', 'list']);
    expect(binding.roleRef.name).toBe(role.metadata.name);
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'demo-kong', namespace: 'kong' }]);
    expect(spec.serviceAccountName).toBe('demo-kong');
    expect(validateWorkloads(r.stdout)).toBeGreaterThan(0);
    passesRestricted(r.stdout);
    expect(r.stderr).toMatch(/added container kong-db-init-finish/);
  });

  it('a workload whose pod template has no labels or annotations yet gets plain maps (strict decoding)', async () => {
    const ds = withSa(fs.readFileSync(path.join(FIX, 'daemonset.yaml'), 'utf8'));
    const r = await run(ds, ['--finish-sidecar', '--namespace', 'kong', '--post-upgrade-off']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/!!omap/);
    const w = docs(r.stdout).find((d) => d.kind === 'DaemonSet')!;
    expect(w.spec.template.metadata.annotations).toEqual({ [IMAGE_ANNOTATION]: expect.any(String) });
    expect(validateWorkloads(r.stdout)).toBeGreaterThan(0);
  });

  it("removes the chart's post-upgrade finish Job when Helm 4 passes hooks (and keeps it without the flag)", async () => {
    const hooks = withSa(fs.readFileSync(path.join(FIX, 'helm4-hooks.yaml'), 'utf8'));
    const jobs = (s: string) =>
      docs(s)
        .filter((d) => d.kind === 'Job')
        .map((d) => d.metadata.name as string);
    const without = await run(hooks, []);
    expect(without.exitCode, without.stderr).toBe(0);
    expect(jobs(without.stdout).some((n) => n.endsWith('-post-upgrade-migrations'))).toBe(true);
    const withSidecar = await run(hooks, ['--finish-sidecar', '--namespace', 'default']);
    expect(withSidecar.exitCode, withSidecar.stderr).toBe(0);
    expect(jobs(withSidecar.stdout)).toEqual([]);
    expect(withSidecar.stderr).toMatch(/post-upgrade-migrations \(kong migrations finish: the finish sidecar does it after the rollout\)/);
  });

  it('never binds the finish Role to the namespace\'s "default" ServiceAccount: a pod without one of its own is refused with the fix (issue 14 item 10)', async () => {
    const ds = fs.readFileSync(path.join(FIX, 'daemonset.yaml'), 'utf8');
    expect(ds).not.toMatch(/serviceAccountName/);
    for (const input of [ds, withSa(ds, 'default')]) {
      const r = await run(input, ['--finish-sidecar', '--namespace', 'kong', '--post-upgrade-off']);
      expect(r.exitCode).toBe(20);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(
        /runs as the namespace's "default" ServiceAccount: the finish Role \(list pods, workloads\) is not bound to it.*deployment\.serviceAccount\.create=true \(the chart's default\), or deployment\.serviceAccount\.name=NAME/,
      );
    }
  });

  it('--all-in-one: the sidecar runs the all-in-one image, which holds the program at /opt/kong-db-init; no program volume (issue 14 item 3)', async () => {
    const aio = 'registry.example.com/kong-db-init-aio:3.7.1.0';
    const r = await execa(process.execPath, [CLI, 'post-render', '--all-in-one', aio, '--pull-policy', 'Always', '--finish-sidecar', '--namespace', 'kong'], {
      input: enterprise,
      reject: false,
    });
    expect(r.exitCode, r.stderr).toBe(0);
    const dep = docs(r.stdout).find((d) => d.kind === 'Deployment')!;
    const spec = dep.spec.template.spec as Obj;
    const side = spec.containers.find((c: Obj) => c.name === FINISH_CONTAINER);
    const mig = spec.initContainers.find((c: Obj) => c.name === 'kong-db-init');
    expect([side.image, side.imagePullPolicy, side.command]).toEqual([aio, 'Always', ['/opt/kong-db-init/kong-db-init', 'finish']]);
    expect([mig.image, mig.command[0]]).toEqual([aio, '/opt/kong-db-init/kong-db-init']);
    expect(side.args).toContain('--kong-image=kong/kong-gateway:3.7.1.0');
    expect(spec.volumes.map((v: Obj) => v.name)).not.toContain('kong-db-init-bin');
    expect(side.volumeMounts.map((m: Obj) => m.name)).not.toContain('kong-db-init-bin');
    expect(validateWorkloads(r.stdout)).toBeGreaterThan(0);
    passesRestricted(r.stdout);
  });

  it('running it again on its own output changes nothing', async () => {
    const once = await run(enterprise, ['--finish-sidecar', '--namespace', 'kong']);
    const twice = await run(once.stdout, ['--finish-sidecar', '--namespace', 'kong']);
    expect(twice.exitCode, twice.stderr).toBe(0);
    expect(twice.stdout).toBe(once.stdout);
  });

  it('bad input: finish flags without --finish-sidecar exit 2 and write nothing', async () => {
    const r = await run(enterprise, ['--finish-group', 'x']);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--finish-group and --finish-namespaces go with --finish-sidecar/);
  });
});

// Real Helm: Helm 3 never passes hooks to a post-renderer (helm v3.22.0 pkg/action/action.go:
// renderResources post-renders only the non-hook manifests) and shows its stderr only when it
// fails, so a finish sidecar beside the chart's post-upgrade `finish` Job must fail the release.
// test/e2e/chart/kong-e2e is shaped like kong/kong (ServiceAccount, hook Jobs, securityContext).
const helm = helmBinaries();
const e2eChart = path.join(ROOT, 'test/e2e/chart/kong-e2e');
const pr = path.join(ROOT, 'charts/post-renderer/helm3-post-render');
const cliEnv = { KONG_DB_INIT_CLI: `${process.execPath} ${CLI}` };
const jobs = (s: string) =>
  docs(s)
    .filter((d) => d.kind === 'Job')
    .map((d) => d.metadata.name as string);

describe.skipIf(!helm.v3)(
  `--finish-sidecar with real Helm 3: no silent race with the chart's post-upgrade Job (issue 14 items 5, 14)${helm.v3 ? '' : ' (skipped: no helm v3 in KDI_HELM3_BIN)'}`,
  () => {
    const tpl = (...args: string[]) =>
      execa(
        helm.v3!,
        [
          'template',
          'rel',
          e2eChart,
          '--namespace',
          'kdi',
          '--set',
          'pg.host=pg',
          '--set',
          'migrations.preUpgrade=false',
          '--post-renderer',
          pr,
          '--post-renderer-args',
          '--image=kong-db-init:ci',
          '--post-renderer-args',
          '--finish-sidecar',
          ...args,
        ],
        { env: helmEnv(cliEnv), reject: false },
      );

    it("the chart's post-upgrade Job left on (the old charts/README example): helm fails and shows why and the fix", async () => {
      const r = await tpl();
      expect(r.exitCode).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/--finish-sidecar: Helm passed no hooks \(Helm 3 never shows a post-renderer the chart's hook Jobs\)/);
      expect(r.stderr).toMatch(/--set migrations\.postUpgrade=false --post-renderer-args --post-upgrade-off/);
    });

    it('with migrations.postUpgrade=false and --post-upgrade-off: the sidecar, and no finish Job', async () => {
      const r = await tpl('--set', 'migrations.postUpgrade=false', '--post-renderer-args', '--post-upgrade-off');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(jobs(r.stdout)).toEqual([]);
      const dep = docs(r.stdout).find((d) => d.kind === 'Deployment')!;
      expect(dep.spec.template.spec.containers.map((c: Obj) => c.name)).toEqual(['proxy', FINISH_CONTAINER]);
      passesRestricted(r.stdout);
    });
  },
);

describe.skipIf(!helm.v4)(`--finish-sidecar with real Helm 4 (hooks passed)${helm.v4 ? '' : ' (skipped: no helm v4 in KDI_HELM4_BIN)'}`, () => {
  it('removes the post-upgrade Job; with every hook Job off there is nothing to refuse', async () => {
    const env = helmEnv(cliEnv);
    const inst = await execa(helm.v4!, ['plugin', 'install', path.join(ROOT, 'charts/post-renderer/kong-db-init')], { env, reject: false });
    expect(inst.exitCode, inst.stderr).toBe(0);
    const tpl = (...args: string[]) =>
      execa(
        helm.v4!,
        [
          'template',
          'rel',
          e2eChart,
          '--namespace',
          'kdi',
          '--set',
          'pg.host=pg',
          '--post-renderer',
          'kong-db-init',
          '--post-renderer-args',
          '--image=kong-db-init:ci',
          '--post-renderer-args',
          '--finish-sidecar',
          ...args,
        ],
        { env, reject: false },
      );
    const withHooks = await tpl();
    expect(withHooks.exitCode, withHooks.stderr).toBe(0);
    expect(jobs(withHooks.stdout)).toEqual([]);
    const noHooks = await tpl('--set', 'migrations.preUpgrade=false', '--set', 'migrations.postUpgrade=false');
    expect(noHooks.exitCode, noHooks.stderr).toBe(0);
    expect(jobs(noHooks.stdout)).toEqual([]);
    passesRestricted(noHooks.stdout);
  });
});

// The values path with real helm 3 on test/fixtures/chart/kong-mini (its pod runs as the
// namespace's default ServiceAccount, like the Kong chart with deployment.serviceAccount.create=false).
describe.skipIf(!helm.v3)(`values with real helm 3 on a chart whose pod runs as "default"${helm.v3 ? '' : ' (skipped: no helm v3 in KDI_HELM3_BIN)'}`, () => {
  const chart = path.join(ROOT, 'test/fixtures/chart/kong-mini');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-values-finish-'));
  const userValues = path.join(tmp, 'user.yaml');
  fs.writeFileSync(userValues, 'deployment:\n  sidecarContainers:\n  - name: log-shipper\n    image: busybox:1\n');
  const template = async (...args: string[]) => (await execa(helm.v3!, ['template', 'r', chart, '-n', 'kong', ...args], { env: helmEnv() })).stdout;
  const values = (input: string, extra: string[]) => execa(process.execPath, [CLI, 'values', '--image', 'kong-db-init:ci', ...extra], { input, reject: false });

  it('--finish-sidecar is refused (exit 20) rather than binding the finish Role to "default" (issue 14 item 10)', async () => {
    const r = await values(await template('-f', userValues), ['--finish-sidecar', '--namespace', 'kong', '-f', userValues]);
    expect(r.exitCode).toBe(20);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/runs as the namespace's "default" ServiceAccount.*deployment\.serviceAccount\.create=true/);
  });

  it('--finish-sidecar without -f: exit 2 (your extraObjects would be replaced)', async () => {
    const r = await values(await template('-f', userValues), ['--finish-sidecar', '--namespace', 'kong']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/pass your values files with -f.*extraObjects/);
  });

  it('a DB-less release: exit 0 with an empty overlay and the note, as post-render passes it through (issue 14 item 6)', async () => {
    const input = await template('--set', 'database=off');
    const v = await values(input, []);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stderr).toMatch(/left alone \(DB-less: KONG_DATABASE=off\)/);
    expect(docs(v.stdout)).toEqual([{}]);
    const p = await execa(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:ci'], { input, reject: false, stripFinalNewline: false });
    expect([p.exitCode, p.stdout]).toEqual([0, input]);
  });
});
