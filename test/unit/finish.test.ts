import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSettings } from '../../src/commands/options.js';
import { inClusterAccess, selectorString } from '../../src/kube/client.js';
import { FINISH_CONTAINER, FINISH_RULES, finishAdditions } from '../../src/render/finish-sidecar.js';
import { GROUP_LABEL, IMAGE_ANNOTATION, currentHash, rolloutBlockers, type Observed, type Pod, type Workload } from '../../src/kube/rollout.js';
import { createDb, listCode, runCli, seed, spawnCli, until } from '../helpers/harness.js';

const pod = (name: string, labels: Record<string, string>, extra: Partial<Pod['metadata']> = {}, phase = 'Running'): Pod => ({
  metadata: { name, labels, ...extra },
  status: { phase },
});

function deployment(over: Partial<Workload['status']> = {}, image = 'kong:3.7.1'): Workload {
  return {
    kind: 'Deployment',
    metadata: { name: 'kong', namespace: 'ns', uid: 'd1', generation: 2, annotations: { 'deployment.kubernetes.io/revision': '2' } },
    spec: { replicas: 3, template: { spec: { containers: [{ name: 'proxy', image }] } } },
    status: { observedGeneration: 2, replicas: 3, updatedReplicas: 3, availableReplicas: 3, ...over },
  };
}
const rss = [
  {
    metadata: {
      name: 'kong-old',
      labels: { 'pod-template-hash': 'old' },
      annotations: { 'deployment.kubernetes.io/revision': '1' },
      ownerReferences: [{ uid: 'd1' }],
    },
  },
  {
    metadata: {
      name: 'kong-new',
      labels: { 'pod-template-hash': 'new' },
      annotations: { 'deployment.kubernetes.io/revision': '2' },
      ownerReferences: [{ uid: 'd1' }],
    },
  },
];
const newPods = ['a', 'b', 'c'].map((n) => pod(`kong-new-${n}`, { 'pod-template-hash': 'new' }));

describe('rolloutBlockers (Deployment)', () => {
  it('nothing blocks a completed rollout on our image', () => {
    expect(rolloutBlockers([{ workload: deployment(), replicaSets: rss, pods: newPods }], 'kong:3.7.1')).toEqual([]);
  });
  it('an old pod that is still terminating blocks (and is named)', () => {
    const o: Observed = {
      workload: deployment(),
      replicaSets: rss,
      pods: [...newPods, pod('kong-old-x', { 'pod-template-hash': 'old' }, { deletionTimestamp: '2026-01-01T00:00:00Z' })],
    };
    const b = rolloutBlockers([o], 'kong:3.7.1');
    expect(b).toHaveLength(1);
    expect(b[0]).toMatch(/1 pod\(s\) of an older revision.*kong-old-x terminating/);
  });
  it('old pods that already Succeeded/Failed (evicted) do not block', () => {
    const o: Observed = { workload: deployment(), replicaSets: rss, pods: [...newPods, pod('kong-old-e', { 'pod-template-hash': 'old' }, {}, 'Failed')] };
    expect(rolloutBlockers([o], 'kong:3.7.1')).toEqual([]);
  });
  it('a controller that has not observed the new generation blocks', () => {
    expect(rolloutBlockers([{ workload: deployment({ observedGeneration: 1 }), replicaSets: rss, pods: newPods }], undefined)[0]).toMatch(
      /not seen generation 2/,
    );
  });
  it('unavailable or not-yet-updated replicas block', () => {
    const b = rolloutBlockers([{ workload: deployment({ availableReplicas: 2, updatedReplicas: 2 }), replicaSets: rss, pods: newPods }], undefined);
    expect(b.join('\n')).toMatch(/2\/3 pods updated/);
    expect(b.join('\n')).toMatch(/2\/3 pods available/);
  });
  it('no ReplicaSet for the current revision yet blocks', () => {
    expect(rolloutBlockers([{ workload: deployment(), replicaSets: [rss[0]!], pods: newPods }], undefined)[0]).toMatch(/no ReplicaSet/);
  });
  it('a ReplicaSet of another Deployment with the same revision is not taken as current', () => {
    const foreign = { metadata: { ...rss[1]!.metadata, ownerReferences: [{ uid: 'other' }] } };
    expect(currentHash(deployment(), [rss[0]!, foreign])).toBeUndefined();
    expect(currentHash(deployment(), rss)).toBe('new');
  });
  it('another workload of the group on another Kong image blocks (a release not yet upgraded)', () => {
    const other = { ...deployment({}, 'kong:3.6'), metadata: { ...deployment().metadata, name: 'admin', uid: 'd1' } };
    const b = rolloutBlockers(
      [
        { workload: deployment(), replicaSets: rss, pods: newPods },
        { workload: other, replicaSets: rss, pods: newPods },
      ],
      'kong:3.7.1',
    );
    expect(b).toHaveLength(1);
    expect(b[0]).toMatch(/Deployment\/ns\/admin: runs kong:3.6, this pod runs kong:3.7.1/);
  });
  it('the image annotation wins over the proxy image', () => {
    const w = deployment({}, 'kong:3.6');
    w.spec!.template!.metadata = { annotations: { [IMAGE_ANNOTATION]: 'kong:3.7.1' } };
    expect(rolloutBlockers([{ workload: w, replicaSets: rss, pods: newPods }], 'kong:3.7.1')).toEqual([]);
  });
  it('no labelled workload at all blocks, naming the label', () => {
    expect(rolloutBlockers([], 'kong:3.7.1')[0]).toContain(GROUP_LABEL);
  });
});

describe('rolloutBlockers (StatefulSet, DaemonSet)', () => {
  it('StatefulSet: pods must carry the update revision', () => {
    const sts: Workload = {
      kind: 'StatefulSet',
      metadata: { name: 's', generation: 1 },
      spec: { replicas: 2 },
      status: { observedGeneration: 1, updateRevision: 's-2', updatedReplicas: 2, readyReplicas: 2 },
    };
    const good = [pod('s-0', { 'controller-revision-hash': 's-2' }), pod('s-1', { 'controller-revision-hash': 's-2' })];
    expect(rolloutBlockers([{ workload: sts, pods: good }], undefined)).toEqual([]);
    expect(rolloutBlockers([{ workload: sts, pods: [good[0]!, pod('s-1', { 'controller-revision-hash': 's-1' })] }], undefined)[0]).toMatch(
      /older revision.*s-1/,
    );
  });
  it('DaemonSet: one revision, no surplus pods, all available', () => {
    const ds: Workload = {
      kind: 'DaemonSet',
      metadata: { name: 'd', generation: 3 },
      status: { observedGeneration: 3, desiredNumberScheduled: 1, updatedNumberScheduled: 1, numberAvailable: 1 },
    };
    expect(rolloutBlockers([{ workload: ds, pods: [pod('d-x', { 'controller-revision-hash': 'h2' })] }], undefined)).toEqual([]);
    const b = rolloutBlockers(
      [{ workload: ds, pods: [pod('d-x', { 'controller-revision-hash': 'h2' }), pod('d-y', { 'controller-revision-hash': 'h1' })] }],
      undefined,
    );
    expect(b[0]).toMatch(/older revision/);
  });
});

describe('selectorString', () => {
  it('renders matchLabels and every matchExpressions operator', () => {
    expect(
      selectorString({
        matchLabels: { app: 'kong', 'app.kubernetes.io/instance': 'a' },
        matchExpressions: [
          { key: 'tier', operator: 'In', values: ['x', 'y'] },
          { key: 'n', operator: 'NotIn', values: ['z'] },
          { key: 'e', operator: 'Exists' },
          { key: 'd', operator: 'DoesNotExist' },
        ],
      }),
    ).toBe('app=kong,app.kubernetes.io/instance=a,tier in (x,y),n notin (z),e,!d');
  });
});

describe('inClusterAccess', () => {
  const files = (have: Record<string, string>) => ({ exists: (p: string) => p in have, read: (p: string) => have[p]! });
  const sa = { '/sa/token': 'tok1\n', '/sa/ca.crt': 'CA', '/sa/namespace': 'kong\n' };
  it('reads the service account (token re-read per request) and brackets an IPv6 host', () => {
    const f = { ...sa };
    const a = inClusterAccess({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, files(f), '/sa');
    expect(a).toMatchObject({ server: 'https://[fd00::1]:443', namespace: 'kong', ca: 'CA' });
    expect(a.token()).toBe('tok1');
    f['/sa/token'] = 'tok2';
    expect(a.token()).toBe('tok2');
  });
  it('names the fix when the token is not mounted', () => {
    expect(() => inClusterAccess({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, files({ '/sa/ca.crt': 'CA' }), '/sa')).toThrow(
      /no service-account token.*projected volume/,
    );
  });
});

describe('finish settings (the one flag table)', () => {
  it('defaults, flags over environment, and the flags it shares with migrate', () => {
    const r = parseSettings(['finish', '--group', 'g1', '--deadline=5m', '--then-idle', '--lock-host', 'pg-direct'], {
      KONG_DB_INIT_FINISH_GROUP: 'env',
      KONG_DB_INIT_FINISH_POLL: '2s',
    });
    expect(r).toMatchObject({
      group: 'g1',
      rollout: 'wait',
      pollMs: 2000,
      thenIdle: true,
      namespaces: [],
      deadlineMs: 300_000,
      lockHost: 'pg-direct',
      finish: 'always',
      repair: true,
    });
    expect(parseSettings(['finish'], {}).deadlineMs).toBe(6 * 3600_000);
    expect(parseSettings(['finish', '--no-repair'], {}).repair).toBe(false);
  });
  it.each([
    [['--rollout', 'later'], /--rollout="later" is invalid; use one of wait, skip/],
    [['--group', 'a b'], /not a valid label value/],
    [['--namespaces', 'ok,Bad_NS'], /"Bad_NS" is not a namespace name/],
    [['--poll', '10ms'], /too short/],
    [['--group'], /needs a value/],
    [['--dry-run'], /--dry-run does not apply to "finish"/],
  ])('rejects %j naming the fix', (argv, msg) => {
    expect(() => parseSettings(['finish', ...argv], {})).toThrow(msg);
  });
});

const kongDeployment = {
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name: 'rel-kong', namespace: 'kong', labels: { app: 'kong' } },
  spec: {
    template: {
      metadata: { labels: { app: 'kong' } },
      spec: {
        serviceAccountName: 'rel-kong',
        containers: [
          {
            name: 'proxy',
            image: 'kong:3.7.1',
            env: [{ name: 'KONG_PG_HOST', value: 'pg' }],
            securityContext: { runAsNonRoot: true },
            volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
          },
        ],
        volumes: [{ name: 'tmp', emptyDir: {} }],
      },
    },
  },
};

describe('finishAdditions', () => {
  it('a sidecar in the Kong image with its own token, the group label, and list-only RBAC', () => {
    const a = finishAdditions(kongDeployment, { group: 'edge' });
    expect(a.container).toMatchObject({
      name: FINISH_CONTAINER,
      image: 'kong:3.7.1',
      command: ['/kong-db-init/kong-db-init', 'finish'],
      securityContext: { runAsNonRoot: true },
    });
    expect(a.container.args).toEqual(['--then-idle', '--deadline=6h', '--group=edge', '--kong-image=kong:3.7.1']);
    expect(a.container.env).toContainEqual({ name: 'KONG_PG_HOST', value: 'pg' });
    expect(a.container.volumeMounts.map((m: { mountPath: string }) => m.mountPath)).toEqual([
      '/tmp',
      '/kong-db-init',
      '/var/run/secrets/kubernetes.io/serviceaccount',
    ]);
    expect(a.labels).toEqual({ [GROUP_LABEL]: 'edge' });
    expect(a.documents.map((d) => d.kind)).toEqual(['Role', 'RoleBinding']);
    expect(a.documents[0]!.rules).toEqual(FINISH_RULES);
    for (const r of FINISH_RULES) expect(r.verbs).toEqual(['list']);
    expect(a.documents[1]!.subjects).toEqual([{ kind: 'ServiceAccount', name: 'rel-kong', namespace: 'kong' }]);
  });
  it('other namespaces get the Role too, bound to this service account', () => {
    const a = finishAdditions(kongDeployment, { namespaces: ['kong-admin'] });
    expect(a.documents.map((d) => `${d.kind}/${d.metadata.namespace}`)).toEqual(['Role/kong', 'RoleBinding/kong', 'Role/kong-admin', 'RoleBinding/kong-admin']);
    expect(a.container.args).toContain('--namespaces=kong,kong-admin');
  });
  it('refuses a workload without namespace (unless given) or without a proxy container', () => {
    const noNs = { ...kongDeployment, metadata: { name: 'x' } };
    expect(() => finishAdditions(noNs)).toThrow(/--namespace/);
    expect(finishAdditions(noNs, { namespace: 'n' }).documents[1]!.subjects[0].namespace).toBe('n');
    expect(() => finishAdditions({ kind: 'Deployment', metadata: { name: 'x' }, spec: { template: { spec: { containers: [{ name: 'web' }] } } } })).toThrow(
      /proxy/,
    );
  });
  it('never binds the Role to the namespace\'s "default" ServiceAccount (named or implied): refused with the fix (issue 14 item 10)', () => {
    const withSa = (sa: string | undefined) => ({
      ...kongDeployment,
      spec: { ...kongDeployment.spec, template: { ...kongDeployment.spec.template, spec: { ...kongDeployment.spec.template.spec, serviceAccountName: sa } } },
    });
    for (const sa of [undefined, 'default']) {
      expect(() => finishAdditions(withSa(sa))).toThrow(
        /runs as the namespace's "default" ServiceAccount.*deployment\.serviceAccount\.create=true.*deployment\.serviceAccount\.name=NAME/,
      );
    }
    expect(finishAdditions(withSa('kong-own')).documents[1]!.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kong-own', namespace: 'kong' }]);
  });
  it("all-in-one: the sidecar runs the all-in-one image (the program at /opt/kong-db-init) with no program volume; the rollout still compares the proxy's Kong image (issue 14 item 3)", () => {
    const a = finishAdditions(kongDeployment, { allInOne: 'registry.example.com/kong-db-init-aio:3.7.1', pullPolicy: 'Always' });
    expect(a.container).toMatchObject({
      image: 'registry.example.com/kong-db-init-aio:3.7.1',
      imagePullPolicy: 'Always',
      command: ['/opt/kong-db-init/kong-db-init', 'finish'],
    });
    expect(a.container.volumeMounts.map((m: { name: string }) => m.name)).not.toContain('kong-db-init-bin');
    expect(a.container.args).toContain('--kong-image=kong:3.7.1');
    expect(a.podAnnotations).toEqual({ [IMAGE_ANNOTATION]: 'kong:3.7.1' });
  });
});

describe('finish (real process, real Postgres, Kong stand-in)', () => {
  it('--rollout=skip finishes pending migrations once, records history, and is idempotent', async () => {
    const db = await createDb();
    await seed(db, 'pending');
    expect(await listCode(db)).toBe(4);
    const r = await runCli(['finish', '--rollout=skip'], db.env());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(summary).toMatchObject({
      command: 'finish',
      outcome: 'ok',
      state_before: expect.stringMatching(/pending/),
      actions: [{ action: 'finish', exit: 0 }],
    });
    const hist = await db.query<{ n: string }>(`SELECT count(*) AS n FROM kong_db_init_history WHERE actions @> '[{"action":"finish"}]'`);
    expect(Number(hist.rows[0]!.n)).toBe(1);
    const again = await runCli(['finish', '--rollout=skip'], db.env());
    expect(again.exitCode).toBe(0);
    expect(JSON.parse(again.stdout.trim().split('\n').pop()!)).toMatchObject({ outcome: 'ok', note: 'nothing pending', actions: [] });
    expect(again.stderr).not.toContain(db.password);
    expect(r.stderr).not.toContain(db.password);
  });
  it('--then-idle stays running after its summary (a sidecar must not exit) and exits 0 on SIGTERM', async () => {
    const db = await createDb();
    await seed(db, 'current');
    const child = spawnCli(['finish', '--rollout=skip', '--then-idle'], db.env());
    let out = '';
    let exited = false;
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    void child.finally(() => (exited = true)).catch(() => {});
    await until(() => out.includes('"command":"finish"'), 60_000, 'the finish summary');
    await new Promise((r) => setTimeout(r, 1500));
    expect(exited).toBe(false);
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(out.trim().split('\n').pop()!)).toMatchObject({ outcome: 'ok', note: 'nothing pending' });
  });
  it('waiting for the rollout outside a pod fails with exit 2 naming the fix', async () => {
    const db = await createDb();
    await seed(db, 'pending');
    const r = await runCli(['finish'], db.env());
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/KUBERNETES_SERVICE_HOST is not set.*--rollout=skip/);
    expect(await listCode(db)).toBe(4);
  });
  it('a bad finish flag exits 2 before touching anything', async () => {
    const db = await createDb();
    const r = await runCli(['finish', '--rollout=maybe'], db.env());
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--rollout="maybe" is invalid; use one of wait, skip/);
    expect(fs.existsSync(path.join(db.dir, 'status.json'))).toBe(false);
  });
});
