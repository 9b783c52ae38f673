/**
 * `post-render --finish-sidecar` (issue 10): the finish sidecar, its token volume, labels and RBAC
 * injected by the real post-renderer process into real renders of the Kong chart, the chart's
 * post-upgrade Job removed when Helm 4 passes hooks, every output strictly decoded and checked
 * against Pod Security `restricted`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { FINISH_CONTAINER, FINISH_RULES, TOKEN_VOLUME } from '../src/render-finish.js';
import { GROUP_LABEL, IMAGE_ANNOTATION } from '../src/rollout.js';
import { CLI, ROOT } from './helpers/harness.js';
import { docs, psaRestricted, validateWorkloads } from './helpers/k8s-check.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const FIX = path.join(ROOT, 'test/fixtures/render');
const run = (input: string, args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:ci', ...args], { input, reject: false, extendEnv: false, env: { PATH: process.env.PATH!, ...env }, stripFinalNewline: false });

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
    expect(binding.subjects[0].name).toBe(spec.serviceAccountName ?? 'default');
    expect(validateWorkloads(r.stdout)).toBeGreaterThan(0);
    expect(Object.values(psaRestricted(r.stdout)).flat()).toEqual([]);
    expect(r.stderr).toMatch(/added container kong-db-init-finish/);
  });

  it('a workload whose pod template has no labels or annotations yet gets plain maps (strict decoding)', async () => {
    const ds = fs.readFileSync(path.join(FIX, 'daemonset.yaml'), 'utf8');
    const r = await run(ds, ['--finish-sidecar', '--namespace', 'kong']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/!!omap/);
    const w = docs(r.stdout).find((d) => d.kind === 'DaemonSet')!;
    expect(w.spec.template.metadata.annotations).toEqual({ [IMAGE_ANNOTATION]: expect.any(String) });
    expect(validateWorkloads(r.stdout)).toBeGreaterThan(0);
  });

  it("removes the chart's post-upgrade finish Job when Helm 4 passes hooks (and keeps it without the flag)", async () => {
    const hooks = fs.readFileSync(path.join(FIX, 'helm4-hooks.yaml'), 'utf8');
    const jobs = (s: string) => docs(s).filter((d) => d.kind === 'Job').map((d) => d.metadata.name as string);
    const without = await run(hooks, []);
    expect(without.exitCode, without.stderr).toBe(0);
    expect(jobs(without.stdout).some((n) => n.endsWith('-post-upgrade-migrations'))).toBe(true);
    const withSidecar = await run(hooks, ['--finish-sidecar', '--namespace', 'default']);
    expect(withSidecar.exitCode, withSidecar.stderr).toBe(0);
    expect(jobs(withSidecar.stdout)).toEqual([]);
    expect(withSidecar.stderr).toMatch(/post-upgrade-migrations \(kong migrations finish: the finish sidecar does it after the rollout\)/);
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

// The values path (Argo CD, Flux) with real helm 3 and the test chart (modelled on the Kong chart's
// value names: deployment.sidecarContainers, userDefinedVolumes, podLabels, podAnnotations,
// extraLabels, extraObjects). The CI run refuses skipped tests, so there this always runs.
const helm3 = [process.env.KDI_HELM3_BIN, path.join(ROOT, '.tmp/helm3/helm')].find((b) => b && fs.existsSync(b));
describe.skipIf(!helm3)(`values --finish-sidecar with real helm 3${helm3 ? '' : ' (skipped: no helm v3 in KDI_HELM3_BIN or .tmp/helm3)'}`, () => {
  const chart = path.join(ROOT, 'test/fixtures/chart/kong-mini');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-values-finish-'));
  const userValues = path.join(tmp, 'user.yaml');
  fs.writeFileSync(userValues, 'deployment:\n  sidecarContainers:\n  - name: log-shipper\n    image: busybox:1\nextraObjects:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: users-own\n');
  const template = (...files: string[]) =>
    execFileSync(helm3!, ['template', 'r', chart, '-n', 'kong', ...files.flatMap((f) => ['-f', f])], { encoding: 'utf8', env: { ...process.env, HELM_CONFIG_HOME: tmp, HELM_CACHE_HOME: tmp, HELM_DATA_HOME: tmp } });
  const values = (input: string, extra: string[] = []) =>
    execa(process.execPath, [CLI, 'values', '--image', 'kong-db-init:ci', '--finish-sidecar', '--namespace', 'kong', '-f', userValues, ...extra], { input, reject: false });

  it("keeps the user's own sidecars and extra objects, adds ours, and round-trips", async () => {
    const first = await values(template(userValues));
    expect(first.exitCode, first.stderr).toBe(0);
    const overlay = path.join(tmp, 'overlay.yaml');
    fs.writeFileSync(overlay, first.stdout);
    const rendered = template(userValues, overlay);
    const all = docs(rendered);
    const dep = all.find((d) => d.kind === 'Deployment')!;
    const names = dep.spec.template.spec.containers.map((c: Obj) => c.name);
    expect(names).toEqual(['proxy', 'log-shipper', FINISH_CONTAINER]);
    const proxy = dep.spec.template.spec.containers[0];
    const side = dep.spec.template.spec.containers[2];
    expect(side.image).toBe(proxy.image);
    expect(side.env.map((e: Obj) => e.name)).toEqual([...proxy.env.map((e: Obj) => e.name), 'POD_NAME']);
    expect(dep.metadata.labels[GROUP_LABEL]).toBe('default');
    expect(dep.spec.template.metadata.labels[GROUP_LABEL]).toBe('default');
    expect(all.filter((d) => ['Role', 'RoleBinding', 'ConfigMap'].includes(d.kind)).map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(
      expect.arrayContaining(['ConfigMap/users-own', 'Role/r-kong-kong-db-init-finish', 'RoleBinding/r-kong-kong-db-init-finish']),
    );
    expect(all.some((d) => d.kind === 'Job')).toBe(false);
    expect(validateWorkloads(rendered)).toBeGreaterThan(0);
    // the render that includes the overlay gives the same overlay
    const again = await values(rendered, ['--check', overlay]);
    expect(again.exitCode, again.stderr).toBe(0);
  });
});
