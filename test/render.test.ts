/** The post-renderer: golden outputs, offline validation, byte preservation, bad input, real Helm. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { postRender, splitStream, type RenderOptions } from '../src/render/transform.js';
import { CLI, ROOT } from './helpers/harness.js';
import { buildKubeCheck, docs, goAvailable, helmBinaries, helmEnv, kubePsaOfOurs, psaProblemsOfOurs, validateWorkloads } from './helpers/k8s-check.js';

const FIX = path.join(ROOT, 'test/fixtures/render');
const read = (f: string) => fs.readFileSync(path.join(FIX, f), 'utf8');
const base: RenderOptions = {
  image: 'registry.example.com/kong-db-init:test',
  pullPolicy: 'IfNotPresent',
  finish: 'auto',
  replaceWait: false,
  allowNoKong: false,
};
const haveGo = goAvailable();
beforeAll(async () => {
  if (haveGo) await buildKubeCheck();
}, 900_000);

const cases: Array<[string, string, Partial<RenderOptions>]> = [
  ['helm3-postgres', 'helm3-postgres.yaml', {}],
  ['helm3-postgres-replace-wait', 'helm3-postgres.yaml', { replaceWait: true, requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } }],
  ['helm4-hooks', 'helm4-hooks.yaml', {}],
  ['helm4-hooks-all-in-one', 'helm4-hooks.yaml', { allInOne: 'registry.example.com/kong-db-init-aio:3.7.1.2', finish: 'never' }],
  ['hybrid', 'hybrid.yaml', {}],
  ['daemonset', 'daemonset.yaml', {}],
  ['umbrella-gateway', 'umbrella-gateway.yaml', {}],
  ['sidecars', 'sidecars.yaml', {}],
];

describe('post-render transform', () => {
  for (const [name, file, opts] of cases) {
    it(`${name}: matches the golden output, validates, keeps untouched documents byte for byte, is idempotent`, () => {
      const input = read(file);
      const { output } = postRender(input, { ...base, ...opts });
      const golden = path.join(FIX, 'golden', `${name}.yaml`);
      if (process.env.UPDATE_GOLDEN) fs.writeFileSync(golden, output);
      expect(output).toBe(fs.readFileSync(golden, 'utf8'));
      expect(validateWorkloads(output)).toBeGreaterThan(0);
      expect(psaProblemsOfOurs(output)).toEqual([]);
      if (haveGo) expect(kubePsaOfOurs(output)).toEqual([]);
      // every input document is either removed, edited, or present verbatim
      const outChunks = splitStream(output).map((c) => c.text);
      const verbatim = splitStream(input).filter((c) => outChunks.includes(c.text)).length;
      const inDocs = docs(input);
      const edited = inDocs.filter(
        (d) => ['Deployment', 'DaemonSet'].includes(d.kind) && JSON.stringify(d).includes('KONG_DATABASE","value":"postgres'),
      ).length;
      const removed = inDocs.filter((d) => d.kind === 'Job' && /init-migrations|pre-upgrade/.test(d.metadata.name)).length;
      expect(verbatim + edited + removed).toBe(splitStream(input).length);
      expect(postRender(output, { ...base, ...opts }).output).toBe(output);
    });
  }

  it('injects before wait-for-db, from the proxy container: image, env, envFrom, mounts, securityContext; no ports or probes', () => {
    const out = docs(postRender(read('helm3-postgres.yaml'), base).output);
    const dep = out.find((d) => d.kind === 'Deployment')!;
    const spec = dep.spec.template.spec;
    expect(spec.initContainers.map((c: { name: string }) => c.name)).toEqual(['clear-stale-pid', 'kong-db-init-install', 'kong-db-init', 'wait-for-db']);
    const proxy = spec.containers.find((c: { name: string }) => c.name === 'proxy');
    const mig = spec.initContainers[2];
    expect(mig.image).toBe(proxy.image);
    expect(mig.env).toEqual(proxy.env);
    expect(mig.envFrom).toEqual(proxy.envFrom);
    // neither the pod nor the proxy sets a seccompProfile (a pre-2.30 chart): ours get RuntimeDefault
    expect(mig.securityContext).toEqual({ ...proxy.securityContext, seccompProfile: { type: 'RuntimeDefault' } });
    expect(mig.volumeMounts).toEqual([...proxy.volumeMounts, { name: 'kong-db-init-bin', mountPath: '/kong-db-init', readOnly: true }]);
    expect(mig.command).toEqual(['/kong-db-init/kong-db-init', 'migrate']);
    for (const k of ['ports', 'readinessProbe', 'livenessProbe', 'lifecycle']) expect(mig[k]).toBeUndefined();
    expect(spec.volumes.at(-1)).toEqual({ name: 'kong-db-init-bin', emptyDir: {} });
    expect(spec.volumes.find((v: { name: string }) => v.name === 'custom-plugins').configMap.defaultMode).toBe(0o755);
    expect(out.some((d) => d.kind === 'Job')).toBe(false);
  });

  it('Helm 4: removes the init and pre-upgrade Jobs, keeps the post-upgrade finish Job and every postrender-filename annotation', () => {
    const input = read('helm4-hooks.yaml');
    const out = docs(postRender(input, base).output);
    expect(out.filter((d) => d.kind === 'Job').map((d) => d.metadata.name)).toEqual(['edge-kong-post-upgrade-migrations']);
    for (const d of out) expect(d.metadata.annotations['postrenderer.helm.sh/postrender-filename']).toMatch(/^kong\/templates\//);
  });

  it('hybrid: the control plane gets the init container, the data plane is left alone', () => {
    const out = docs(postRender(read('hybrid.yaml'), base).output);
    const inits = (n: string) => (out.find((d) => d.metadata.name === n)!.spec.template.spec.initContainers ?? []).map((c: { name: string }) => c.name);
    expect(inits('cp-kong')).toContain('kong-db-init');
    expect(inits('dp-kong')).toEqual([]);
    expect(postRender(read('hybrid.yaml'), base).output).toContain(splitStream(read('hybrid.yaml'))[1]!.text);
  });

  it('DB-less: passes through unchanged (exit 0) with a note, without --allow-no-kong', () => {
    const r = postRender(read('dbless.yaml'), base);
    expect(r.output).toBe(read('dbless.yaml'));
    expect(r.changes.join('\n')).toMatch(/left alone \(DB-less/);
  });

  it('sidecars before proxy: the init container is built from proxy, not the first container', () => {
    const dep = docs(postRender(read('sidecars.yaml'), base).output)[0]!;
    const mig = dep.spec.template.spec.initContainers.find((c: { name: string }) => c.name === 'kong-db-init');
    expect(mig.image).toBe('registry.example.com/platform/kong-custom:3.7.1-plugins.4');
    expect(mig.env.map((e: { name: string }) => e.name)).toContain('KONG_PG_PASSWORD_FILE');
  });

  it.each([
    [
      'malformed YAML names line and column',
      '---\nkind: ConfigMap\n---\nkind: Deployment\nspec: [\n  a: b\n',
      /malformed YAML at line 7, column 1: Flow sequence/,
    ],
    ['empty input', '  \n', /empty input/],
    ['no Kong chart objects at all', 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n', /no Kong chart workload was found.*--allow-no-kong/],
    [
      'a Postgres-backed Kong workload without a proxy container',
      'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: k\n  labels:\n    app.kubernetes.io/name: kong\nspec:\n  template:\n    spec:\n      containers:\n      - name: gateway\n        image: kong:3.7\n        env:\n        - name: KONG_DATABASE\n          value: postgres\n',
      /Kong workload Deployment\/k runs Kong with KONG_DATABASE=postgres but has no container named "proxy"/,
    ],
  ])('%s', (_n, input, re) => {
    expect(() => postRender(input, base)).toThrow(re);
  });
});

describe('post-render process (stdin → stdout)', () => {
  const run = (args: string[], input: string, env: Record<string, string> = {}) =>
    execa(process.execPath, [CLI, 'post-render', ...args], {
      input,
      reject: false,
      env: { PATH: process.env.PATH!, TMPDIR: os.tmpdir(), ...env },
      extendEnv: false,
      stripFinalNewline: false,
    });

  it('writes the transformed stream and reports what it changed on stderr', async () => {
    const r = await run(['--finish', 'always', '--image', 'kong-db-init:ci', '--pull-policy=Never'], read('helm3-postgres.yaml'));
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(postRender(read('helm3-postgres.yaml'), { ...base, image: 'kong-db-init:ci', pullPolicy: 'Never', finish: 'always' }).output);
    expect(r.stderr).toMatch(/removed Job\/demo-kong-init-migrations/);
    expect(r.stderr).toMatch(/Helm 3 never passes hooks to a post-renderer\): set migrations.preUpgrade=false/);
  });

  it.each([
    [['--frobnicate'], 'x', 2, /unknown option --frobnicate/],
    [['--finish', 'sometimes'], 'x', 2, /--finish "sometimes" is invalid/],
    [[], '', 20, /empty input/],
    [[], 'a: [\n', 20, /malformed YAML at line 2/],
    [[], 'apiVersion: v1\nkind: Secret\n', 20, /no Kong chart workload/],
    [['--pull-policy', 'Sometimes'], 'x', 2, /--pull-policy "Sometimes" is invalid; use Always, IfNotPresent or Never/],
  ])('bad input: flags %j, stdin %j → exit %i, nothing on stdout, the message is also in the error file', async (args, input, code, re) => {
    const errFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-pr-')), 'err.txt');
    const r = await run(code === 20 ? [...args, '--error-file', errFile] : args, input);
    expect(r.exitCode).toBe(code);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(re);
    if (code === 20) {
      expect(r.stderr).toContain(`(also written to ${errFile})`);
      expect(fs.readFileSync(errFile, 'utf8')).toMatch(re);
    }
  });

  it('drains large outputs completely (> 64 KiB through a pipe)', async () => {
    const filler = Array.from(
      { length: 400 },
      (_, i) => `---\n# Source: big/cm-${i}.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-${i}\ndata:\n  blob: "${'x'.repeat(400)}"\n`,
    ).join('');
    const input = filler + read('helm3-postgres.yaml');
    expect(input.length).toBeGreaterThan(200_000);
    const r = await run([], input, { KONG_DB_INIT_IMAGE: 'kong-db-init:ci' });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(200_000);
    expect(r.stdout.startsWith(filler)).toBe(true);
    expect(r.stdout).toBe(postRender(input, { ...base, image: 'kong-db-init:ci' }).output);
  });
});

// ---------------------------------------------------------------------------------------------
// Real Helm (3 and 4) through the shipped post-renderer executable and plugin, when available.

const helm = helmBinaries();
if (!helm.v3) console.warn('skipping the real Helm 3 suite: no helm v3 on PATH, KDI_HELM3_BIN or .tmp/helm3');
if (!helm.v4) console.warn('skipping the real Helm 4 suite: no helm v4 on PATH, KDI_HELM4_BIN or .tmp/helm4');
const chart = path.join(ROOT, 'test/fixtures/chart/kong-mini');

const cliEnv = { KONG_DB_INIT_CLI: `${process.execPath} ${CLI}` };

describe.skipIf(!helm.v3)(
  `helm 3 template through the post-renderer executable${helm.v3 ? '' : ' (skipped: no helm v3 on PATH, KDI_HELM3_BIN or .tmp/helm3)'}`,
  () => {
    const pr = path.join(ROOT, 'charts/post-renderer/helm3-post-render');
    it('removes the init Job, injects the init container, leaves the hooks (Helm 3 never passes them)', async () => {
      const r = await execa(
        helm.v3!,
        ['template', 'rel', chart, '--post-renderer', pr, '--post-renderer-args', '--finish=always', '--post-renderer-args', '--image=kong-db-init:ci'],
        { reject: false, env: cliEnv },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      const out = docs(r.stdout);
      expect(out.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
        'ConfigMap/rel-scripts',
        'Deployment/rel-kong',
        'Job/rel-kong-pre-upgrade-migrations',
        'Job/rel-kong-post-upgrade-migrations',
      ]);
      const mig = out[1]!.spec.template.spec.initContainers.find((c: { name: string }) => c.name === 'kong-db-init');
      expect(mig.args).toEqual(['--finish=always']);
      expect(out[1]!.spec.template.spec.volumes[0].configMap.defaultMode).toBe(0o755);
      validateWorkloads(r.stdout);
    });
    it('a failing post-render fails helm with our message (no --image: how to build and push it)', async () => {
      const r = await execa(helm.v3!, ['template', 'rel', chart, '--post-renderer', pr], { reject: false, env: cliEnv });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/no image for the kong-db-init-install init container: pass --image REF \(or set KONG_DB_INIT_IMAGE\): build and push/);
    });
    it('DB-less: helm succeeds and the release is unchanged', async () => {
      const plain = await execa(helm.v3!, ['template', 'rel', chart, '--set', 'database=off'], { reject: false });
      const r = await execa(helm.v3!, ['template', 'rel', chart, '--set', 'database=off', '--post-renderer', pr], { reject: false, env: cliEnv });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(docs(r.stdout)).toEqual(docs(plain.stdout));
    });
    it('values overlay: generated from a render, applied with -f, round-trips; post-render then changes nothing; --check catches a stale overlay', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-values-'));
      const user = path.join(dir, 'user.yaml');
      fs.writeFileSync(
        user,
        'envFrom:\n- secretRef:\n    name: kong-db\ndeployment:\n  initContainers:\n  - name: fetch-geoip\n    image: busybox:1.36\n    command: ["true"]\n    volumeMounts:\n    - {name: geoip, mountPath: /data}\n  userDefinedVolumes:\n  - name: geoip\n    emptyDir: {}\n  userDefinedVolumeMounts:\n  - {name: geoip, mountPath: /opt/geoip}\n',
      );
      const tpl = async (...f: string[]) => (await execa(helm.v3!, ['template', 'rel', chart, ...f.flatMap((x) => ['-f', x])])).stdout;
      const values = (input: string, ...args: string[]) =>
        execa(process.execPath, [CLI, 'values', '--image', 'kong-db-init:ci', ...args], { input, reject: false });
      const first = await values(await tpl(user), '-f', user);
      expect(first.exitCode, first.stderr).toBe(0);
      const overlay = path.join(dir, 'kong-db-init-values.yaml');
      fs.writeFileSync(overlay, first.stdout);
      const withOverlay = await tpl(user, overlay);
      const out = docs(withOverlay);
      expect(out.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(['ConfigMap/rel-scripts', 'Deployment/rel-kong', 'Job/rel-kong-post-upgrade-migrations']);
      const spec = out[1]!.spec.template.spec;
      expect(spec.initContainers.map((c: { name: string }) => c.name)).toEqual([
        'clear-stale-pid',
        'fetch-geoip',
        'kong-db-init-install',
        'kong-db-init',
        'wait-for-db',
      ]);
      const proxy = spec.containers[0];
      const mig = spec.initContainers[3];
      expect(mig.env).toEqual(proxy.env);
      expect(mig.envFrom).toEqual([{ secretRef: { name: 'kong-db' } }]);
      expect(mig.volumeMounts.slice(0, -1)).toEqual(proxy.volumeMounts);
      expect(spec.volumes.map((v: { name: string }) => v.name)).toEqual(['scripts', 'geoip', 'kong-db-init-bin']);
      validateWorkloads(withOverlay);
      // round trip: the render that includes the overlay gives the same overlay, and post-render leaves it alone
      const again = await values(withOverlay, '-f', user);
      expect(again.stdout).toBe(first.stdout);
      const same = await values(withOverlay, '-f', user, '--check', overlay);
      expect(same.exitCode, same.stderr).toBe(0);
      expect(postRender(withOverlay, base).output).toBe(withOverlay);
      // the user changes the Kong image: the committed overlay is stale
      fs.appendFileSync(user, 'image: kong:3.8.0\n');
      const stale = await values(await tpl(user, overlay), '-f', user, '--check', overlay);
      expect(stale.exitCode).toBe(21);
      expect(stale.stderr).toMatch(/is stale/);
      expect(stale.stderr).toMatch(/^- +image: kong:3\.7\.1$/m);
      expect(stale.stderr).toMatch(/^\+ +image: kong:3\.8\.0$/m);
      // without -f, a volume of the user's cannot be told from the chart's: refuse rather than drop it
      const noF = await values(await tpl(user));
      expect(noF.exitCode).toBe(2);
      expect(noF.stderr).toMatch(/pass your values files with -f/);
    });
  },
);

describe.skipIf(!helm.v4)(
  `helm 4 template through the post-renderer plugin${helm.v4 ? '' : ' (skipped: no helm v4 on PATH, KDI_HELM4_BIN or .tmp/helm4)'}`,
  () => {
    it('plugin install, then hooks are passed: the pre-upgrade Job goes, the post-upgrade Job stays; a failure shows our message', async () => {
      const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-helm4-'));
      const env = helmEnv(cliEnv);
      const inst = await execa(helm.v4!, ['plugin', 'install', path.join(ROOT, 'charts/post-renderer/kong-db-init')], { env, reject: false });
      expect(inst.exitCode, inst.stderr).toBe(0);
      const r = await execa(helm.v4!, ['template', 'rel', chart, '--post-renderer', 'kong-db-init'], {
        env: { ...env, KONG_DB_INIT_IMAGE: 'kong-db-init:ci' },
        reject: false,
      });
      expect(r.exitCode, r.stderr).toBe(0);
      const out = docs(r.stdout);
      expect(out.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
        'ConfigMap/rel-scripts',
        'Deployment/rel-kong',
        'Job/rel-kong-post-upgrade-migrations',
      ]);
      validateWorkloads(r.stdout);
      // Helm 4 drops a plugin's stderr: the plugin writes to Helm's own stderr, and to the error file
      // (helm's stderr as a user's terminal or CI log would be: a file here, since a Node parent's would be a socket)
      const helmStderr = path.join(home, 'helm.stderr');
      const bad = await execa('sh', ['-c', 'exec "$0" template rel "$1" --post-renderer kong-db-init 2>>"$2"', helm.v4!, chart, helmStderr], {
        env: { ...env, TMPDIR: home },
        reject: false,
      });
      const seen = fs.readFileSync(helmStderr, 'utf8');
      expect(bad.exitCode).not.toBe(0);
      expect(seen).toMatch(/plugin "kong-db-init" exited with error/);
      expect(seen, seen).toMatch(/kong-db-init post-render: no image for the kong-db-init-install init container/);
      expect(fs.readFileSync(path.join(home, `kong-db-init-${process.getuid!()}`, 'post-render.err'), 'utf8')).toMatch(
        /no image for the kong-db-init-install init container/,
      );
    });

    // issue 14 item 4: `helm … 2> file` opens the file without O_APPEND; Helm writes its own error
    // after the plugin exits, from its own offset, over whatever the plugin appended.
    it.each([
      ['a short message', [] as string[], /^kong-db-init post-render: empty input: expected the manifests rendered by helm on stdin/m, 'x'],
      [
        'a long message',
        ['--post-renderer-args', '--pull-policy=Always'],
        /^kong-db-init post-render: no image for the kong-db-init-install init container: pass --image REF .*or use --all-in-one IMAGE \(also written to /m,
        '',
      ],
    ])("helm 4 with its stderr a file (`2> file`): %s survives, after Helm's own error", async (_n, extra, re, stdin) => {
      const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-helm4-file-'));
      const env = helmEnv({ ...cliEnv, TMPDIR: home });
      expect((await execa(helm.v4!, ['plugin', 'install', path.join(ROOT, 'charts/post-renderer/kong-db-init')], { env, reject: false })).exitCode).toBe(0);
      // the short message: a post-renderer that gets empty input (a chart that renders nothing)
      const target = stdin === 'x' ? path.join(home, 'empty-chart') : chart;
      if (stdin === 'x') {
        fs.mkdirSync(path.join(target, 'templates'), { recursive: true });
        fs.writeFileSync(path.join(target, 'Chart.yaml'), 'apiVersion: v2\nname: empty\nversion: 0.1.0\n');
      }
      const log = path.join(home, 'deploy.log');
      const r = await execa(
        'sh',
        [
          '-c',
          'h=$1 c=$2 l=$3; shift 3; exec "$h" template rel "$c" --post-renderer kong-db-init "$@" > /dev/null 2> "$l"',
          'sh',
          helm.v4!,
          target,
          log,
          ...extra,
        ],
        { env, reject: false },
      );
      const seen = fs.readFileSync(log, 'utf8');
      expect(r.exitCode).not.toBe(0);
      expect(seen).toMatch(/^Error: .*plugin "kong-db-init" exited with error$/m);
      expect(seen, seen).toMatch(re);
      // in that order, and nothing of ours cut or overwritten
      expect(seen.indexOf('kong-db-init post-render:')).toBeGreaterThan(seen.indexOf('Error: '));
      expect(
        seen
          .split('\n')
          .filter((l) => l.trim() !== '')
          .every((l) => /^(Error: |Use --debug|kong-db-init post-render: )/.test(l)),
        seen,
      ).toBe(true);
    });
  },
);

describe('the error file (issue 14 item 12)', () => {
  const fail = (env: Record<string, string>, args: string[] = []) =>
    execa(process.execPath, [CLI, 'post-render', ...args], { input: '', reject: false, env: { PATH: process.env.PATH!, ...env }, extendEnv: false });
  it("goes to a directory of the user's own (0700), as a new file (0600); a symlink planted there is replaced, never followed", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-errfile-'));
    const dir = path.join(tmp, `kong-db-init-${process.getuid!()}`);
    const victim = path.join(tmp, 'victim');
    fs.writeFileSync(victim, 'precious\n');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.symlinkSync(victim, path.join(dir, 'post-render.err'));
    const r = await fail({ TMPDIR: tmp });
    expect(r.exitCode).toBe(20);
    expect(r.stderr).toContain(`(also written to ${path.join(dir, 'post-render.err')})`);
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious\n');
    const st = fs.lstatSync(path.join(dir, 'post-render.err'));
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(path.join(dir, 'post-render.err'), 'utf8')).toMatch(/empty input/);
    // the old fixed name in the shared directory is not used at all
    expect(fs.existsSync(path.join(tmp, 'kong-db-init-post-render.err'))).toBe(false);
  });
  it('a directory that is not private, or not ours, is not written into (the message still goes to stderr)', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-errfile-'));
    const dir = path.join(tmp, `kong-db-init-${process.getuid!()}`);
    fs.mkdirSync(dir, { mode: 0o777 });
    fs.chmodSync(dir, 0o777);
    const r = await fail({ TMPDIR: tmp });
    expect(r.exitCode).toBe(20);
    expect(r.stderr).toMatch(/empty input.*\(not written to an error file: .* is not a private directory of this user/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
  it('--error-file PATH: created new with mode 0600; a symlink there is replaced, not followed; a success removes it', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-errfile-'));
    const victim = path.join(tmp, 'victim');
    fs.writeFileSync(victim, 'precious\n');
    const file = path.join(tmp, 'err.txt');
    fs.symlinkSync(victim, file);
    const r = await fail({ TMPDIR: tmp }, ['--error-file', file]);
    expect(r.exitCode).toBe(20);
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(fs.lstatSync(file).isFile()).toBe(true);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const ok = await execa(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:ci', '--error-file', file], {
      input: read('helm3-postgres.yaml'),
      reject: false,
    });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(fs.existsSync(file)).toBe(false);
  });
});
