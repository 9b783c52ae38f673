/**
 * End-to-end scenarios on a real single-node Kubernetes (.ci/k8s.sh up): real pods, real init
 * containers, the e2e chart (shaped like kong/kong) through the post-renderer with Helm 3 and 4,
 * Kong played by the stand-in images (3.6 and 3.7.1 catalogs), Postgres in the cluster.
 */
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CATALOGS, TEARDOWN } from '../kong-standin/catalog.mjs';
import {
  PG_PASSWORD,
  SKIP,
  containerMemory,
  containerProcesses,
  deleteNamespace,
  dump,
  helmInstall,
  helmValuesInstall,
  isReady,
  kc,
  kjson,
  kubectl,
  newNamespace,
  pgDataDir,
  pgDeployment,
  pgSecret,
  pgService,
  pods,
  psql,
  until,
  type PodInfo,
  type Proc,
} from './kube.js';

const created: string[] = [];
const keep = process.env.KDI_E2E_KEEP === '1';
afterAll(async () => {
  if (!keep) for (const ns of created) await deleteNamespace(ns);
});

async function namespace(prefix: string, labels: Record<string, string> = {}): Promise<string> {
  const ns = await newNamespace(prefix, labels);
  created.push(ns);
  return ns;
}

/** Throw with the namespace's pods, events and logs attached. */
async function explain<T>(ns: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    (e as Error).message += `\n--- ${ns} ---\n${await dump(ns)}`;
    throw e;
  }
}

const sel = (release: string) => `app.kubernetes.io/instance=${release}`;
const FINISH = 'kong-db-init-finish';
/** A Node process (the finish command itself, before it hands over to the launcher shell). */
const isNode = (p: Proc) => p.comm === 'node' || /(^|\/)node /.test(p.cmdline);

/** Stop the namespace's Postgres and remove its hostPath data (pgDeployment persistent). */
async function dropPersistentPg(ns: string): Promise<void> {
  await kubectl(['-n', ns, 'delete', 'deployment', 'postgres', '--wait=true']);
  await until(async () => (await pods(ns, 'app=postgres')).length === 0, 60_000, 'Postgres gone').catch(() => undefined);
  fs.rmSync(pgDataDir(ns), { recursive: true, force: true });
}
const initStatus = (p: PodInfo, name: string) => p.status.initContainerStatuses?.find((c) => c.name === name);

async function rollout(ns: string, release: string, secs = 420): Promise<void> {
  await kc(['-n', ns, 'rollout', 'status', `deployment/${release}-kong`, `--timeout=${secs}s`]);
}

interface HistoryRow {
  pod: string;
  outcome: string;
  exit_code: number;
  actions: Array<{ action: string; ms: number; exit: number; note?: string }>;
  started_at: string;
  finished_at: string;
  state_before: string | null;
  state_after: string | null;
  error: string | null;
}

async function history(ns: string): Promise<HistoryRow[]> {
  const out = await psql(ns, `SELECT coalesce(json_agg(h ORDER BY id), '[]') FROM kong_db_init_history h`);
  return JSON.parse(out) as HistoryRow[];
}

const pendingCount = async (ns: string) =>
  Number(await psql(ns, `SELECT count(*) FROM schema_meta WHERE key = 'schema_meta' AND pending IS NOT NULL AND cardinality(pending) > 0`));

/** Every migration of the 3.7.1 stand-in, as `subsystem/name`, in Kong's order. */
const ALL = CATALOGS['3.7.1']!.catalog.flatMap(([sub, migs]) => migs.map((m) => `${sub}/${m}`));

/** What schema_meta records, as sorted `subsystem/name` lists (a migration recorded twice appears twice). */
async function schemaMeta(ns: string): Promise<{ executed: string[]; pending: string[] }> {
  const out = await psql(
    ns,
    `SELECT json_build_object(
       'executed', coalesce((SELECT json_agg(subsystem || '/' || e) FROM schema_meta, unnest(executed) e WHERE key = 'schema_meta'), '[]'),
       'pending', coalesce((SELECT json_agg(subsystem || '/' || p) FROM schema_meta, unnest(pending) p WHERE key = 'schema_meta'), '[]'))`,
  );
  const m = JSON.parse(out) as { executed: string[]; pending: string[] };
  return { executed: m.executed.sort(), pending: m.pending.sort() };
}

/** The stand-in's own log of the migration steps it ran (standin_runs): sorted `subsystem/name`, one entry per run. */
async function standinRuns(ns: string, phase: 'up' | 'teardown'): Promise<string[]> {
  return (
    JSON.parse(await psql(ns, `SELECT coalesce(json_agg(subsystem || '/' || name), '[]') FROM standin_runs WHERE phase = '${phase}'`)) as string[]
  ).sort();
}

describe.skipIf(Boolean(SKIP))(`e2e on a real Kubernetes${SKIP ? ` (skipped: ${SKIP})` : ''}`, () => {
  it('install with 3 replicas racing, in a namespace enforcing the restricted Pod Security Standard (Helm 3)', async () => {
    const ns = await namespace('kdi-race', { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' });
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const h = await helmInstall({
        helm: 3,
        ns,
        release: 'race',
        set: { 'pg.host': host, replicaCount: 3, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false },
      });
      expect(h.exitCode, h.stderr).toBe(0);
      await rollout(ns, 'race');
      const ps = await pods(ns, sel('race'));
      expect(ps).toHaveLength(3);
      expect(ps.every(isReady)).toBe(true);
      // restricted admitted every pod: no ReplicaSet failed to create one
      const events = await kjson<{ items: Array<{ reason: string; message: string }> }>(['-n', ns, 'get', 'events']);
      expect(events.items.filter((e) => e.reason === 'FailedCreate').map((e) => e.message)).toEqual([]);
      // the chart's init-migrations Job is gone (the post-renderer removed it)
      expect((await kubectl(['-n', ns, 'get', 'job', 'race-kong-init-migrations'])).exitCode).not.toBe(0);
      for (const p of ps) {
        expect(p.spec.initContainers.map((c) => c.name)).toEqual(['clear-stale-pid', 'kong-db-init-install', 'kong-db-init', 'wait-for-db']);
        const order = ['clear-stale-pid', 'kong-db-init-install', 'kong-db-init', 'wait-for-db'].map((n) => initStatus(p, n)!.state.terminated!);
        for (const t of order) expect(t.exitCode).toBe(0);
        for (let i = 1; i < order.length; i++) expect(Date.parse(order[i]!.startedAt)).toBeGreaterThanOrEqual(Date.parse(order[i - 1]!.finishedAt) - 1000);
        const summary = JSON.parse(initStatus(p, 'kong-db-init')!.state.terminated!.message!);
        expect(summary).toMatchObject({ tool: 'kong-db-init', command: 'migrate', outcome: 'ok', exit_code: 0 });
        expect(JSON.stringify(summary)).not.toContain(PG_PASSWORD);
      }
      const rows = await history(ns);
      expect(rows.filter((r) => r.actions.some((a) => a.action === 'bootstrap'))).toHaveLength(1);
      expect(rows.every((r) => r.outcome === 'ok')).toBe(true);
      expect(await psql(ns, `SELECT count(*) FROM schema_meta WHERE key = 'schema_meta'`)).not.toBe('0');
    });
  });

  it('the values overlay (Argo CD / Flux path, no post-renderer): 2 replicas race, all Ready, one bootstrap (Helm 4)', async () => {
    const ns = await namespace('kdi-values', { 'pod-security.kubernetes.io/enforce': 'restricted' });
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const h = await helmValuesInstall({ helm: 4, ns, release: 'vals', values: { pg: { host }, replicaCount: 2 } });
      expect(h.exitCode, h.stderr).toBe(0);
      expect(h.overlay).toMatch(/init: false/);
      await rollout(ns, 'vals');
      const ps = await pods(ns, sel('vals'));
      expect(ps).toHaveLength(2);
      for (const p of ps) {
        expect(isReady(p)).toBe(true);
        expect(p.spec.initContainers.map((c) => c.name)).toEqual(['clear-stale-pid', 'kong-db-init-install', 'kong-db-init', 'wait-for-db']);
        expect(JSON.parse(initStatus(p, 'kong-db-init')!.state.terminated!.message!)).toMatchObject({ command: 'migrate', outcome: 'ok' });
      }
      expect((await kubectl(['-n', ns, 'get', 'job', 'vals-kong-init-migrations'])).exitCode).not.toBe(0);
      expect((await history(ns)).filter((r) => r.actions.some((a) => a.action === 'bootstrap'))).toHaveLength(1);
    });
  });

  it('a wrong password: the init container fails with the message naming the fix, visible in kubectl describe pod (Helm 4)', async () => {
    const ns = await namespace('kdi-badpw');
    await explain(ns, async () => {
      const wrong = 'Wrong-pw-for-e2e-91';
      await pgSecret(ns, wrong);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const h = await helmInstall({
        helm: 4,
        ns,
        release: 'badpw',
        set: { 'pg.host': host, replicaCount: 1, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false },
      });
      expect(h.exitCode, h.stderr).toBe(0);
      const p = await until(
        async () => {
          const [pod] = await pods(ns, sel('badpw'));
          const s = pod && initStatus(pod, 'kong-db-init');
          return s && (s.state.terminated ?? s.lastState?.terminated) ? pod : undefined;
        },
        300_000,
        'the kong-db-init init container to fail',
      );
      const describe = await kc(['-n', ns, 'describe', 'pod', p.metadata.name]);
      expect(describe).toMatch(/kong-db-init:[\s\S]*?Exit Code:\s+10/);
      expect(describe).toMatch(/password authentication failed[\s\S]*?(KONG_PG_PASSWORD|fix)/i);
      expect(describe).not.toContain(wrong);
      // the Kong container never started
      expect(p.status.containerStatuses?.[0]?.state.running).toBeUndefined();
    });
  });

  it('Postgres arriving after the pods: they wait and proceed, no restarts, no CrashLoopBackOff (Helm 3)', async () => {
    const ns = await namespace('kdi-late');
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      const h = await helmInstall({
        helm: 3,
        ns,
        release: 'late',
        set: { 'pg.host': host, replicaCount: 2, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false },
      });
      expect(h.exitCode, h.stderr).toBe(0);
      // both pods are inside our init container, waiting
      await until(
        async () => {
          const ps = await pods(ns, sel('late'));
          return ps.length === 2 && ps.every((p) => initStatus(p, 'kong-db-init')?.state.running) ? ps : undefined;
        },
        240_000,
        'both pods waiting in kong-db-init',
      );
      await new Promise((r) => setTimeout(r, 15_000));
      const waiting = await pods(ns, sel('late'));
      for (const p of waiting) expect(initStatus(p, 'kong-db-init')!.state.running).toBeDefined();
      const logs = await kc(['-n', ns, 'logs', waiting[0]!.metadata.name, '-c', 'kong-db-init']);
      expect(logs).toMatch(/waiting for postgres/);
      await pgDeployment(ns);
      await rollout(ns, 'late');
      const ps = await pods(ns, sel('late'));
      for (const p of ps) {
        expect(initStatus(p, 'kong-db-init')!.restartCount).toBe(0);
        expect(initStatus(p, 'kong-db-init')!.state.terminated!.exitCode).toBe(0);
        expect(p.status.containerStatuses!.every((c) => c.restartCount === 0)).toBe(true);
      }
      expect((await history(ns)).filter((r) => r.actions.some((a) => a.action === 'bootstrap'))).toHaveLength(1);
    });
  });

  it('upgrade 3.6 -> 3.7.1 of two releases on one database: new pods run `up` beside the old ones; `finish` runs only after the last old pod is gone (Helm 3)', async () => {
    const ns = await namespace('kdi-upgrade');
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const base = { 'pg.host': host, 'image.tag': '3.6', 'migrations.preUpgrade': false, 'migrations.postUpgrade': false };
      // the "separate admin and proxy nodes" pattern: two releases, one database
      for (const [release, n] of [
        ['admin', 1],
        ['proxy', 2],
      ] as const) {
        const h = await helmInstall({ helm: 3, ns, release, set: { ...base, replicaCount: n }, finishSidecar: true });
        expect(h.exitCode, h.stderr).toBe(0);
      }
      await rollout(ns, 'admin');
      await rollout(ns, 'proxy');
      expect(await pendingCount(ns)).toBe(0);
      const oldPods = new Map<string, number>(); // name -> last time seen (ms)
      for (const p of [...(await pods(ns, sel('admin'))), ...(await pods(ns, sel('proxy')))]) oldPods.set(p.metadata.name, Date.now());
      let watching = true;
      let sawPendingWithOldPods = false;
      const watcher = (async () => {
        while (watching) {
          const now = (await kjson<{ items: PodInfo[] }>(['-n', ns, 'get', 'pods', '-l', 'app.kubernetes.io/name=kong'])).items;
          const t = Date.now();
          for (const p of now) if (oldPods.has(p.metadata.name)) oldPods.set(p.metadata.name, t);
          await new Promise((r) => setTimeout(r, 250));
        }
      })();

      // 1. upgrade the admin release only: its new pod runs `up`; the proxy release still runs 3.6, so no finish
      const up1 = await helmInstall({ helm: 3, ns, release: 'admin', set: { ...base, 'image.tag': '3.7.1', replicaCount: 1 }, finishSidecar: true });
      expect(up1.exitCode, up1.stderr).toBe(0);
      await rollout(ns, 'admin');
      const blocked = await until(
        async () => {
          // the new admin pod (the old one may still be terminating)
          const admin = (await pods(ns, sel('admin'))).find((p) => !oldPods.has(p.metadata.name));
          if (!admin) return undefined;
          const l = await kc(['-n', ns, 'logs', admin.metadata.name, '-c', 'kong-db-init-finish']);
          return /runs kdi-standin\/kong:3\.6, this pod runs kdi-standin\/kong:3\.7\.1/.test(l) ? l : undefined;
        },
        120_000,
        'the admin finisher to name the 3.6 proxy release as the blocker',
      );
      expect(blocked).toMatch(/waiting for the rollout/);
      expect(await pendingCount(ns)).toBeGreaterThan(0);
      sawPendingWithOldPods = (await pods(ns, sel('proxy'))).some((p) => oldPods.has(p.metadata.name) && isReady(p));
      expect(sawPendingWithOldPods).toBe(true);

      // 2. upgrade the proxy release: rolling update (maxSurge 1, maxUnavailable 0) keeps old pods serving meanwhile
      const up2 = await helmInstall({ helm: 3, ns, release: 'proxy', set: { ...base, 'image.tag': '3.7.1', replicaCount: 2 }, finishSidecar: true });
      expect(up2.exitCode, up2.stderr).toBe(0);
      await rollout(ns, 'proxy');
      const finishRow = await until(
        async () => (await history(ns)).find((r) => r.actions.some((a) => a.action === 'finish')),
        180_000,
        'a finish history row',
        2000,
      );
      watching = false;
      await watcher;
      expect(await pendingCount(ns)).toBe(0);
      const rows = await history(ns);
      expect(rows.filter((r) => r.actions.some((a) => a.action === 'finish'))).toHaveLength(1);
      // the `up` ran in a new pod while old ones still ran (pending left for finish)
      const upRow = rows.find((r) => r.actions.some((a) => a.action === 'up'))!;
      expect(upRow.state_after).toMatch(/pending/);
      // timestamps: the finish step started after the last old pod was last seen (the finishing
      // pod's log line that starts the step; the history row has the run's start only)
      const flog = await kc(['-n', ns, 'logs', finishRow.pod, '-c', 'kong-db-init-finish']);
      const stepLine = flog.split('\n').find((l) => l.includes('running kong migrations finish'));
      const finishStart = Date.parse(stepLine?.split(' ')[0] ?? '');
      expect(Number.isNaN(finishStart), `the finisher's log:\n${flog}`).toBe(false);
      const lastOldSeen = Math.max(...oldPods.values());
      for (const name of oldPods.keys()) expect((await kubectl(['-n', ns, 'get', 'pod', name])).exitCode).not.toBe(0);
      expect(finishStart).toBeGreaterThan(lastOldSeen);
      console.log(
        `upgrade: last old pod seen ${new Date(lastOldSeen).toISOString()}, finish started ${new Date(finishStart).toISOString()} (+${finishStart - lastOldSeen} ms)`,
      );
      // the other finishers saw nothing left to do, and stay idle (no restarts)
      for (const p of [...(await pods(ns, sel('admin'))), ...(await pods(ns, sel('proxy')))]) {
        expect(p.status.containerStatuses!.find((c) => c.name === 'kong-db-init-finish')!.restartCount).toBe(0);
      }
    });
  });

  it('a pod deleted while Kong bootstraps: Kong is stopped mid-step and the history row says so; the next pod completes every migration exactly once (Helm 3)', async () => {
    const ns = await namespace('kdi-kill');
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      // The stand-in holds the bootstrap just before core/010 (KONG_STANDIN_HOLD_AT: until the file
      // exists, at most 60 s), so the deletion lands inside the Kong step at a known point: core
      // 000..009 recorded, the rest not. --grace-period 2s: the held Kong is still running when it
      // ends, so kong-db-init must stop it (the pod's own grace, 30 s, leaves room for the
      // re-read and the history row). --finish=always: the next pod runs `up` and `finish`.
      const hold = 'core/010_210_to_211';
      const releaseFile = '/tmp/kdi-e2e-release';
      const h = await helmInstall({
        helm: 3,
        ns,
        release: 'kill',
        set: { 'pg.host': host, replicaCount: 1, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false, terminationGracePeriodSeconds: 30 },
        values: {
          extraEnv: [
            { name: 'KONG_DB_INIT_GRACE_PERIOD', value: '2s' },
            { name: 'KONG_STANDIN_HOLD_AT', value: `up:${hold}=${releaseFile}` },
          ],
        },
        rendererArgs: ['--finish=always'],
      });
      expect(h.exitCode, h.stderr).toBe(0);
      const before = ALL.slice(0, ALL.indexOf(hold));
      expect(before.length).toBeGreaterThan(0);
      // inside the Kong step: our container said it runs bootstrap, and Kong recorded exactly the
      // migrations before the hold point (some, not all)
      const first = await until(
        async () => {
          const [p] = await pods(ns, sel('kill'));
          if (!p || !initStatus(p, 'kong-db-init')?.state.running) return undefined;
          const l = await kubectl(['-n', ns, 'logs', p.metadata.name, '-c', 'kong-db-init']);
          if (!/running kong migrations bootstrap/.test(l.stdout + l.stderr)) return undefined;
          const m = await schemaMeta(ns).catch(() => undefined);
          return m && m.executed.length === before.length ? { pod: p, meta: m } : undefined;
        },
        300_000,
        'the first pod inside kong migrations bootstrap, held before ' + hold,
        500,
      );
      expect(first.meta.executed).toEqual([...before].sort());
      expect(first.meta.pending).toEqual([]);
      const name = first.pod.metadata.name;
      await kc(['-n', ns, 'delete', 'pod', name, '--wait=false']);

      // the deleted pod's history row: interrupted, the step recorded as killed mid-step, the state re-read
      const killed = await until(async () => (await history(ns)).find((r) => r.pod === name), 120_000, `the history row of ${name}`, 1000);
      expect(killed).toMatchObject({ outcome: 'interrupted', exit_code: 130, state_before: 'needs-bootstrap', state_after: 'new' });
      expect(killed.actions.map((a) => [a.action, a.note])).toEqual([['bootstrap', 'killed mid-step after --grace-period']]);
      expect(killed.error).toContain('kong migrations bootstrap was still running after --grace-period and was killed mid-step; the schema is now "new"');
      // and it is true: Kong did nothing after the kill (the next pod's Kong is held at the same
      // point until the file exists, so nothing it does can be counted here)
      expect((await schemaMeta(ns)).executed).toEqual([...before].sort());
      expect(await standinRuns(ns, 'up')).toEqual([...before].sort());

      // the next pod: let its Kong pass the hold point, then it completes
      const next = await until(
        async () => {
          const p = (await pods(ns, sel('kill'))).find((x) => x.metadata.name !== name);
          return p && initStatus(p, 'kong-db-init')?.state.running ? p : undefined;
        },
        180_000,
        'the next pod in kong-db-init',
        500,
      );
      await kc(['-n', ns, 'exec', next.metadata.name, '-c', 'kong-db-init', '--', 'sh', '-c', `: > ${releaseFile}`]);
      await rollout(ns, 'kill', 600);
      const [done] = (await pods(ns, sel('kill'))).filter((p) => !p.metadata.deletionTimestamp);
      expect(done!.metadata.name).toBe(next.metadata.name);
      const t = initStatus(done!, 'kong-db-init')!.state.terminated!;
      expect(t.exitCode).toBe(0);
      expect(JSON.parse(t.message!)).toMatchObject({ command: 'migrate', outcome: 'ok', state_before: 'new', state_after: 'up-to-date' });
      const row = (await history(ns)).find((r) => r.pod === next.metadata.name)!;
      expect(row).toMatchObject({ outcome: 'ok', exit_code: 0, state_before: 'new', state_after: 'up-to-date' });
      // one `up` and one `finish` that did the work (a repair of the killed Kong's locks row, or
      // a try aborted by it, may come before them: they carry a note)
      expect(row.actions.filter((a) => !a.note).map((a) => [a.action, a.exit])).toEqual([
        ['up', 0],
        ['finish', 0],
      ]);

      // the exact end state: Kong's own `list` exits 0, every migration recorded and applied once
      const list = await kubectl(['-n', ns, 'exec', done!.metadata.name, '-c', 'proxy', '--', 'kong', 'migrations', 'list']);
      expect(list.exitCode, list.stdout + list.stderr).toBe(0);
      expect(list.stdout).not.toMatch(/Pending migrations|New migrations/);
      const end = await schemaMeta(ns);
      expect(end.pending).toEqual([]);
      expect([...end.executed].sort()).toEqual([...ALL].sort());
      expect(await standinRuns(ns, 'up')).toEqual([...ALL].sort());
      // the teardowns `finish` ran (the stand-in logs those of `finish` only): each once, exactly
      // the ones the killed bootstrap had not done
      expect(await standinRuns(ns, 'teardown')).toEqual(ALL.filter((id) => TEARDOWN.has(id) && !before.includes(id)).sort());
    });
  });

  it('Postgres restarted while the finish sidecar waits for a paused rollout, and again under `kong migrations finish`: finish runs once, no sidecar restarts; the idle sidecar has no Node left (Helm 4)', async () => {
    const ns = await namespace('kdi-pgrestart');
    try {
      await explain(ns, async () => {
        await pgSecret(ns);
        const host = await pgService(ns);
        await pgDeployment(ns, true, { persistent: true }); // hostPath: the data outlives the pod
        const base = { 'pg.host': host, replicaCount: 2, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false };
        const inst = await helmInstall({ helm: 4, ns, release: 'pgr', set: { ...base, 'image.tag': '3.6' }, finishSidecar: true });
        expect(inst.exitCode, inst.stderr).toBe(0);
        await rollout(ns, 'pgr');
        const oldPods = (await pods(ns, sel('pgr'))).map((p) => p.metadata.name);
        expect(oldPods).toHaveLength(2);
        const fresh = async () => (await pods(ns, sel('pgr'))).filter((p) => !oldPods.includes(p.metadata.name));
        const sidecarLog = async (pod: string) => (await kubectl(['-n', ns, 'logs', pod, '-c', FINISH])).stdout;
        // the schema after 3.7.1's `up`: everything executed but the one migration left for `finish`
        const upgraded = { executed: ALL.filter((id) => id !== 'ai-proxy/001_360_to_370').sort(), pending: ['ai-proxy/001_360_to_370'] };

        // 1. the upgrade, paused as soon as its first pod exists: with 2 replicas the paused
        //    Deployment keeps both old pods (a paused rollout of 1 replica would still scale the old
        //    one down once the new one is available), so the new pod's finisher waits. Its Kong is
        //    held (KONG_STANDIN_HOLD_AT) inside `finish`, before the teardown, until the file exists.
        const releaseFile = '/tmp/kdi-e2e-release';
        const up = await helmInstall({
          helm: 4,
          ns,
          release: 'pgr',
          set: { ...base, 'image.tag': '3.7.1', minReadySeconds: 10 },
          values: { extraEnv: [{ name: 'KONG_STANDIN_HOLD_AT', value: `teardown:ai-proxy/001_360_to_370=${releaseFile}` }] },
          finishSidecar: true,
        });
        expect(up.exitCode, up.stderr).toBe(0);
        await until(async () => (await fresh()).length > 0, 60_000, 'the first pod of the new revision', 100);
        await kc(['-n', ns, 'rollout', 'pause', 'deployment/pgr-kong']);
        const waiter = await until(
          async () => {
            const [p] = await fresh();
            return p && isReady(p) && /waiting for the rollout before kong migrations finish/.test(await sidecarLog(p.metadata.name)) ? p : undefined;
          },
          300_000,
          'the new pod Ready and its finisher waiting for the rollout',
        );
        const now = await pods(ns, sel('pgr'));
        expect(now.filter((p) => !oldPods.includes(p.metadata.name)).map((p) => p.metadata.name)).toEqual([waiter.metadata.name]);
        expect(now.filter((p) => oldPods.includes(p.metadata.name) && !p.metadata.deletionTimestamp)).toHaveLength(2);
        expect(await schemaMeta(ns)).toEqual(upgraded);
        // it holds no Postgres session while it waits
        expect(await psql(ns, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kong-db-init/${waiter.metadata.name}'`)).toBe('0');

        // 2. Postgres restarted while it waits: the pod deleted, re-created by its Deployment with the
        //    same data; the finisher notices nothing and goes on waiting
        const rowsBefore = await history(ns);
        const pg1 = (await pods(ns, 'app=postgres'))[0]!.metadata.name;
        await kc(['-n', ns, 'delete', 'pod', pg1]); // returns once the pod is gone
        const pg2 = await until(async () => (await pods(ns, 'app=postgres')).find((p) => p.metadata.name !== pg1 && isReady(p)), 180_000, 'Postgres back');
        expect(await schemaMeta(ns)).toEqual(upgraded);
        expect(await history(ns)).toEqual(rowsBefore);
        const quiet = await sidecarLog(waiter.metadata.name);
        expect(quiet).not.toMatch(/waiting for postgres|finish failed|lost the connection|session was lost/);
        expect(quiet).not.toMatch(/rollout complete/);

        // 3. resume: the rollout completes, one finisher runs `kong migrations finish` and its Kong
        //    stops at the hold point with Kong's locks row taken
        await kc(['-n', ns, 'rollout', 'resume', 'deployment/pgr-kong']);
        const holder = await until(
          async () => {
            for (const p of await fresh()) if (/running kong migrations finish/.test(await sidecarLog(p.metadata.name))) return p;
            return undefined;
          },
          300_000,
          'a finisher running kong migrations finish',
          1000,
        );
        await until(
          async () => (await psql(ns, `SELECT count(*) FROM locks WHERE key = 'migrations'`)) === '1',
          60_000,
          "Kong's locks row of the held finish",
          500,
        );
        expect(await schemaMeta(ns)).toEqual(upgraded);
        const finishers = (await fresh()).map((p) => p.metadata.name);
        expect(finishers).toHaveLength(2);

        // 4. Postgres restarted under the running step: every session is cut (fast shutdown); then the
        //    held Kong goes on on its dead connection and fails
        await kc(['-n', ns, 'delete', 'pod', pg2.metadata.name]);
        for (const p of finishers) await kc(['-n', ns, 'exec', p, '-c', 'proxy', '--', 'sh', '-c', `: > ${releaseFile}`]);
        await until(
          async () => (await pods(ns, 'app=postgres')).find((p) => p.metadata.name !== pg2.metadata.name && isReady(p)),
          180_000,
          'Postgres back again',
        );

        // 5. finish completes after all: one successful `finish` step in the history, the teardown
        //    applied once, Kong's own `list` exits 0, no sidecar restarted
        const finishOk = (r: HistoryRow) => r.actions.some((a) => a.action === 'finish' && a.exit === 0 && !a.note);
        await until(async () => (await history(ns)).some(finishOk), 300_000, 'a finish that completed', 3000);
        const idle = await until(
          async () => {
            const all = await Promise.all(finishers.map(async (p) => ({ pod: p, procs: await containerProcesses(ns, p, FINISH) })));
            return all.every((x) => !x.procs.some(isNode)) ? all : undefined;
          },
          120_000,
          'both finishers done (no Node process left in their sidecars)',
          2000,
        );
        const rows = await history(ns);
        expect(rows.filter(finishOk)).toHaveLength(1);
        expect(rows.filter(finishOk)[0]).toMatchObject({ outcome: 'ok', exit_code: 0, state_after: 'up-to-date' });
        expect(await standinRuns(ns, 'teardown')).toEqual(['ai-proxy/001_360_to_370']); // `finish`'s teardowns (bootstrap's are not logged)
        const end = await schemaMeta(ns);
        expect(end).toEqual({ executed: [...ALL].sort(), pending: [] });
        const list = await kubectl(['-n', ns, 'exec', holder.metadata.name, '-c', 'proxy', '--', 'kong', 'migrations', 'list']);
        expect(list.exitCode, list.stdout + list.stderr).toBe(0);
        for (const p of await fresh()) expect(p.status.containerStatuses!.find((c) => c.name === FINISH)!.restartCount, p.metadata.name).toBe(0);

        // the held finisher logged the failure once, retried, and ended well
        const logs = await sidecarLog(holder.metadata.name);
        const failures = logs.split('\n').filter((l) => l.includes('finish failed; retrying until --deadline'));
        expect(failures, logs).toHaveLength(1);
        const summaries = logs.split('\n').filter((l) => l.startsWith('{"tool":"kong-db-init"'));
        expect(summaries, logs).toHaveLength(1);
        const summary = JSON.parse(summaries[0]!) as { outcome: string; exit_code: number; actions: HistoryRow['actions'] };
        expect(summary).toMatchObject({ outcome: 'ok', exit_code: 0 });
        expect(summary.actions[0]).toMatchObject({ action: 'finish' });
        expect(summary.actions[0]!.exit).not.toBe(0);
        const evidence = logs
          .split('\n')
          .filter((l) =>
            /finish failed|waiting for postgres|postgres is ready|lost|running kong migrations finish|finish done|nothing pending|rollout complete/.test(l),
          );
        console.log(`pgrestart: the held finisher ${holder.metadata.name}:\n  ${evidence.join('\n  ')}`);

        // 6. the idle sidecars: the launcher shell alone, no Node (figures printed, not asserted)
        for (const { pod, procs } of idle) {
          expect(procs.filter(isNode), JSON.stringify(procs)).toEqual([]);
          expect(procs.find((p) => p.pid === 1)?.cmdline, JSON.stringify(procs)).toMatch(/kong-db-init finish/);
          const mem = await containerMemory(ns, pod, FINISH);
          const mb = (b: number | undefined) => (b === undefined ? '?' : `${(b / 1048576).toFixed(1)} MB`);
          console.log(
            `idle finish sidecar ${pod}: processes ${procs.map((p) => `${p.pid} ${p.comm} ${p.rssKb} kB`).join(', ')}; ` +
              `cgroup usage ${mb(mem.cgroup_usage)} (rss ${mb(mem.cgroup_rss)}, cache ${mb(mem.cgroup_cache)}, inactive file ${mb(mem.cgroup_inactive_file)}); ` +
              `kubelet working set ${mb(mem.kubelet_working_set)}, rss ${mb(mem.kubelet_rss)}`,
          );
        }
      });
    } finally {
      if (!keep) await dropPersistentPg(ns);
    }
  });

  it('a plugin migration from a ConfigMap changed between rollouts: same content, Kong not started; new content, Kong lists; a new migration, the new pod runs `up` (Helm 4, restricted)', async () => {
    const ns = await namespace('kdi-plugin', { 'pod-security.kubernetes.io/enforce': 'restricted' });
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      // A custom plugin the way Kong finds one: named in KONG_PLUGINS, its files under a root of
      // KONG_LUA_PACKAGE_PATH as kong/plugins/<name>/migrations/*.lua, here a ConfigMap mounted
      // there (files are symlinks into ..data/). The stand-in reads the migration names from that
      // directory; the identity of our Kong (src/engine/identity.ts) hashes the files' content.
      const dir = '/opt/e2e-lua/kong/plugins/e2e-plugin/migrations';
      const lua = (what: string) =>
        `-- e2e plugin migration (${what})\nreturn { postgres = { up = [[ CREATE TABLE IF NOT EXISTS e2e_plugin (id uuid PRIMARY KEY); ]] } }\n`;
      const configMap = async (data: Record<string, string>) =>
        kc(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'e2e-plugin-migrations', namespace: ns }, data }));
      const v1 = { 'init.lua': 'return { "000_base_e2e_plugin" }\n', '000_base_e2e_plugin.lua': lua('first version') };
      await configMap(v1);
      const h = await helmInstall({
        helm: 4,
        ns,
        release: 'plug',
        set: { 'pg.host': host, replicaCount: 1, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false },
        values: {
          extraEnv: [
            { name: 'KONG_PLUGINS', value: 'bundled,e2e-plugin' },
            { name: 'KONG_LUA_PACKAGE_PATH', value: '/opt/e2e-lua/?.lua;/opt/e2e-lua/?/init.lua;;' },
          ],
          deployment: {
            userDefinedVolumes: [{ name: 'e2e-plugin', configMap: { name: 'e2e-plugin-migrations' } }],
            userDefinedVolumeMounts: [{ name: 'e2e-plugin', mountPath: dir, readOnly: true }],
          },
        },
      });
      expect(h.exitCode, h.stderr).toBe(0);
      await rollout(ns, 'plug');
      const verifiedRows = async () => Number(await psql(ns, 'SELECT count(*) FROM kong_db_init_verified'));
      const migrateLog = async (pod: string) => (await kc(['-n', ns, 'logs', pod, '-c', 'kong-db-init'])).toString();
      const SKIPPED = 'state verified earlier by an identical Kong; not starting Kong';
      const restart = async (prev: string) => {
        await kc(['-n', ns, 'rollout', 'restart', 'deployment/plug-kong']);
        await rollout(ns, 'plug');
        const p = (await pods(ns, sel('plug'))).filter((x) => !x.metadata.deletionTimestamp && x.metadata.name !== prev);
        expect(p).toHaveLength(1);
        const t = initStatus(p[0]!, 'kong-db-init')!.state.terminated!;
        expect(t.exitCode).toBe(0);
        return {
          pod: p[0]!.metadata.name,
          summary: JSON.parse(t.message!) as { outcome: string; state_before: string; state_after: string; actions: HistoryRow['actions'] },
        };
      };
      const [p1] = await pods(ns, sel('plug'));
      expect(p1!.spec.initContainers.find((c) => c.name === 'kong-db-init')).toBeDefined();
      expect(await standinRuns(ns, 'up')).toContain('e2e-plugin/000_base_e2e_plugin');
      expect((await schemaMeta(ns)).executed).toContain('e2e-plugin/000_base_e2e_plugin');
      expect(await verifiedRows()).toBe(1);

      // 1. a restart with the same ConfigMap: the state the first pod verified holds; no Kong
      //    (the mount's ..<timestamp> directory differs, its content does not)
      const r1 = await restart(p1!.metadata.name);
      expect(await migrateLog(r1.pod)).toContain(SKIPPED);
      expect(r1.summary).toMatchObject({ outcome: 'ok', state_before: 'up-to-date', actions: [] });
      expect(await verifiedRows()).toBe(1);

      // 2. the migration file's content changed (same name): another Kong, so the pod runs
      //    `kong migrations list` itself (and records the state for its identity)
      await configMap({ ...v1, '000_base_e2e_plugin.lua': lua('second version, same name') });
      const r2 = await restart(r1.pod);
      expect(await migrateLog(r2.pod)).not.toContain(SKIPPED);
      expect(r2.summary).toMatchObject({ outcome: 'ok', state_before: 'up-to-date', actions: [] });
      expect(await verifiedRows()).toBe(2);

      // 3. a new migration in the ConfigMap: the new pod finds it and runs `up`; Kong starts
      await configMap({
        ...v1,
        'init.lua': 'return { "000_base_e2e_plugin", "001_e2e_plugin_more" }\n',
        '000_base_e2e_plugin.lua': lua('second version, same name'),
        '001_e2e_plugin_more.lua': lua('a new migration'),
      });
      const r3 = await restart(r2.pod);
      expect(await migrateLog(r3.pod)).not.toContain(SKIPPED);
      expect(r3.summary).toMatchObject({ outcome: 'ok', state_before: 'new', state_after: 'up-to-date' });
      expect(r3.summary.actions.map((a) => [a.action, a.exit])).toEqual([['up', 0]]);
      const row = (await history(ns)).find((r) => r.pod === r3.pod)!;
      expect(row).toMatchObject({ outcome: 'ok', state_before: 'new', state_after: 'up-to-date' });
      expect((await standinRuns(ns, 'up')).filter((id) => id.startsWith('e2e-plugin/'))).toEqual([
        'e2e-plugin/000_base_e2e_plugin',
        'e2e-plugin/001_e2e_plugin_more',
      ]);
      expect((await schemaMeta(ns)).executed.filter((id) => id.startsWith('e2e-plugin/'))).toEqual([
        'e2e-plugin/000_base_e2e_plugin',
        'e2e-plugin/001_e2e_plugin_more',
      ]);
      const list = await kubectl(['-n', ns, 'exec', r3.pod, '-c', 'proxy', '--', 'kong', 'migrations', 'list']);
      expect(list.exitCode, list.stdout + list.stderr).toBe(0);
      expect(list.stdout).toMatch(/e2e-plugin: 000_base_e2e_plugin, 001_e2e_plugin_more/);
      expect(await verifiedRows()).toBe(3);
    });
  });
});
