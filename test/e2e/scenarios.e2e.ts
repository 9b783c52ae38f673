/**
 * End-to-end scenarios on a real single-node Kubernetes (.ci/k8s.sh up): real pods, real init
 * containers, the e2e chart (shaped like kong/kong) through the post-renderer with Helm 3 and 4,
 * Kong played by the stand-in images (3.6 and 3.7.1 catalogs), Postgres in the cluster.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { PG_PASSWORD, SKIP, deleteNamespace, dump, helmInstall, helmValuesInstall, isReady, kc, kjson, kubectl, newNamespace, pgDeployment, pgSecret, pgService, pods, psql, until, type PodInfo } from './kube.js';

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
}

async function history(ns: string): Promise<HistoryRow[]> {
  const out = await psql(ns, `SELECT coalesce(json_agg(h ORDER BY id), '[]') FROM kong_db_init_history h`);
  return JSON.parse(out) as HistoryRow[];
}

const pendingCount = async (ns: string) => Number(await psql(ns, `SELECT count(*) FROM schema_meta WHERE key = 'schema_meta' AND pending IS NOT NULL AND cardinality(pending) > 0`));

describe.skipIf(Boolean(SKIP))(`e2e on a real Kubernetes${SKIP ? ` (skipped: ${SKIP})` : ''}`, () => {
  it('install with 3 replicas racing, in a namespace enforcing the restricted Pod Security Standard (Helm 3)', async () => {
    const ns = await namespace('kdi-race', { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' });
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const h = await helmInstall({ helm: 3, ns, release: 'race', set: { 'pg.host': host, replicaCount: 3, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false } });
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
      const h = await helmInstall({ helm: 4, ns, release: 'badpw', set: { 'pg.host': host, replicaCount: 1, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false } });
      expect(h.exitCode, h.stderr).toBe(0);
      const p = await until(async () => {
        const [pod] = await pods(ns, sel('badpw'));
        const s = pod && initStatus(pod, 'kong-db-init');
        return s && (s.state.terminated ?? s.lastState?.terminated) ? pod : undefined;
      }, 300_000, 'the kong-db-init init container to fail');
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
      const h = await helmInstall({ helm: 3, ns, release: 'late', set: { 'pg.host': host, replicaCount: 2, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false } });
      expect(h.exitCode, h.stderr).toBe(0);
      // both pods are inside our init container, waiting
      await until(async () => {
        const ps = await pods(ns, sel('late'));
        return ps.length === 2 && ps.every((p) => initStatus(p, 'kong-db-init')?.state.running) ? ps : undefined;
      }, 240_000, 'both pods waiting in kong-db-init');
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
      for (const [release, n] of [['admin', 1], ['proxy', 2]] as const) {
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
      const blocked = await until(async () => {
        // the new admin pod (the old one may still be terminating)
        const admin = (await pods(ns, sel('admin'))).find((p) => !oldPods.has(p.metadata.name));
        if (!admin) return undefined;
        const l = await kc(['-n', ns, 'logs', admin.metadata.name, '-c', 'kong-db-init-finish']);
        return /runs kdi-standin\/kong:3\.6, this pod runs kdi-standin\/kong:3\.7\.1/.test(l) ? l : undefined;
      }, 120_000, 'the admin finisher to name the 3.6 proxy release as the blocker');
      expect(blocked).toMatch(/waiting for the rollout/);
      expect(await pendingCount(ns)).toBeGreaterThan(0);
      sawPendingWithOldPods = (await pods(ns, sel('proxy'))).some((p) => oldPods.has(p.metadata.name) && isReady(p));
      expect(sawPendingWithOldPods).toBe(true);

      // 2. upgrade the proxy release: rolling update (maxSurge 1, maxUnavailable 0) keeps old pods serving meanwhile
      const up2 = await helmInstall({ helm: 3, ns, release: 'proxy', set: { ...base, 'image.tag': '3.7.1', replicaCount: 2 }, finishSidecar: true });
      expect(up2.exitCode, up2.stderr).toBe(0);
      await rollout(ns, 'proxy');
      const finishRow = await until(async () => (await history(ns)).find((r) => r.actions.some((a) => a.action === 'finish')), 180_000, 'a finish history row', 2000);
      watching = false;
      await watcher;
      expect(await pendingCount(ns)).toBe(0);
      const rows = await history(ns);
      expect(rows.filter((r) => r.actions.some((a) => a.action === 'finish'))).toHaveLength(1);
      // the `up` ran in a new pod while old ones still ran (pending left for finish)
      const upRow = rows.find((r) => r.actions.some((a) => a.action === 'up'))!;
      expect(upRow.state_after).toMatch(/pending/);
      // timestamps: the finish step started after the last old pod was last seen
      const step = finishRow.actions.find((a) => a.action === 'finish')!;
      const finishStart = Date.parse(/started (\S+)/.exec(step.note ?? '')?.[1] ?? '');
      expect(Number.isNaN(finishStart), `finish action note: ${step.note}`).toBe(false);
      const lastOldSeen = Math.max(...oldPods.values());
      for (const name of oldPods.keys()) expect((await kubectl(['-n', ns, 'get', 'pod', name])).exitCode).not.toBe(0);
      expect(finishStart).toBeGreaterThan(lastOldSeen);
      console.log(`upgrade: last old pod seen ${new Date(lastOldSeen).toISOString()}, finish started ${new Date(finishStart).toISOString()} (+${finishStart - lastOldSeen} ms)`);
      // the other finishers saw nothing left to do, and stay idle (no restarts)
      for (const p of [...(await pods(ns, sel('admin'))), ...(await pods(ns, sel('proxy')))]) {
        expect(p.status.containerStatuses!.find((c) => c.name === 'kong-db-init-finish')!.restartCount).toBe(0);
      }
    });
  });

  it('a pod deleted while its migration runs: nothing half-applied, the next pod completes (Helm 3)', async () => {
    const ns = await namespace('kdi-kill');
    await explain(ns, async () => {
      await pgSecret(ns);
      const host = await pgService(ns);
      await pgDeployment(ns);
      const h = await helmInstall({ helm: 3, ns, release: 'kill', set: { 'pg.host': host, replicaCount: 1, 'migrations.preUpgrade': false, 'migrations.postUpgrade': false, standinDelayMs: 400 } });
      expect(h.exitCode, h.stderr).toBe(0);
      // wait until the first pod's Kong is migrating (schema_meta has rows), then delete the pod
      const first = await until(async () => {
        const [p] = await pods(ns, sel('kill'));
        if (!p || !initStatus(p, 'kong-db-init')?.state.running) return undefined;
        const n = await psql(ns, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_meta'`).catch(() => '0');
        if (n === '0') return undefined;
        const rows = await psql(ns, `SELECT count(*) FROM schema_meta`).catch(() => '0');
        return Number(rows) > 0 ? p : undefined;
      }, 300_000, 'the first pod migrating', 300);
      await kc(['-n', ns, 'delete', 'pod', first.metadata.name, '--wait=false']);
      await rollout(ns, 'kill', 600);
      const [next] = await pods(ns, sel('kill'));
      expect(next!.metadata.name).not.toBe(first.metadata.name);
      expect(initStatus(next!, 'kong-db-init')!.state.terminated!.exitCode).toBe(0);
      const rows = await history(ns);
      const killed = rows.find((r) => r.pod === first.metadata.name);
      // the killed run recorded itself as interrupted (SIGTERM: Kong stopped, lock released)
      if (killed) expect(killed.outcome).toBe('interrupted');
      expect(rows.find((r) => r.pod === next!.metadata.name)?.outcome).toBe('ok');
      // nothing half-applied: Kong's own `list` finds every migration executed (0) or only teardowns
      // pending for `finish` (4, as Kong's own `up` leaves a bootstrap that was cut short), none new
      const list = await kubectl(['-n', ns, 'exec', next!.metadata.name, '-c', 'proxy', '--', 'kong', 'migrations', 'list']);
      expect([0, 4], list.stdout + list.stderr).toContain(list.exitCode);
      expect(list.stdout).toMatch(/Executed migrations/);
      expect(list.stdout).not.toMatch(/New migrations available/);
      // and the run that completed it says so
      const done = rows.find((r) => r.pod === next!.metadata.name)!;
      expect(done.state_before).toMatch(/new|bootstrap/);
      expect(done.actions.some((a) => a.action === 'up' || a.action === 'bootstrap')).toBe(true);
    });
  });
});
