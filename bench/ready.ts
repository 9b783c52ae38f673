/**
 * Benchmark 2: Postgres comes up D seconds after the pods. Gap between Postgres accepting
 * connections and each pod's first Kong command: ours vs the stock chart's two loops.
 */
import { execa, type ResultPromise } from 'execa';
import pg from 'pg';
import { embeddedServer } from '../test/helpers/embedded.js';
import { createDb, KONG_PASSWORD } from '../test/helpers/harness.js';
import { CLI } from '../test/helpers/harness.js';
import { firstKongEventAt, percentile, podEnv } from './lib.js';

export interface ReadyRow {
  delayS: number;
  variant: string;
  p50: number;
  p95: number;
  pods: number;
}

// the stock init-migrations Job: a TCP check every 2 s, then Kong
const TCP_LOOP = `until timeout 2 bash -c "9<>/dev/tcp/\${KONG_PG_HOST}/\${KONG_PG_PORT}" 2>/dev/null; do sleep 2; done; exec kong migrations bootstrap`;
// the chart's wait-for-db container
const START_LOOP = `until kong start >/dev/null 2>&1; do sleep 1; done`;

async function acceptsAt(port: number, until: number): Promise<number> {
  while (Date.now() < until) {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: KONG_PASSWORD, database: 'postgres', connectionTimeoutMillis: 200 });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query('SELECT 1');
      const t = Date.now();
      await c.end();
      return t;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  throw new Error('postgres never became ready');
}

export async function readyBench(delays = [3, 10], pods = 8): Promise<ReadyRow[]> {
  const rows: ReadyRow[] = [];
  for (const delayS of delays) {
    for (const variant of ['kong-db-init migrate', 'stock: TCP check every 2 s, then kong', 'stock: until kong start; sleep 1']) {
      const server = await embeddedServer({ password: KONG_PASSWORD, started: false });
      const db = await createDb();
      const envs = Array.from({ length: pods }, (_, i) =>
        podEnv(db, i, { KONG_PG_HOST: '127.0.0.1', KONG_PG_PORT: String(server.port), KONG_PG_USER: 'postgres', KONG_PG_DATABASE: 'postgres' }),
      );
      const children: ResultPromise[] = envs.map((env) =>
        variant.startsWith('kong-db-init')
          ? execa(process.execPath, [CLI, 'migrate'], { env, extendEnv: false, reject: false })
          : execa('bash', ['-c', variant.includes('TCP') ? TCP_LOOP : START_LOOP], { env, extendEnv: false, reject: false }),
      );
      await new Promise((r) => setTimeout(r, delayS * 1000));
      const startCall = Date.now();
      void server.start();
      const ready = await acceptsAt(server.port, startCall + 30_000);
      if (variant.includes('kong start')) {
        // the loop only ends once someone migrates: do it, as the init Job would
        await execa(process.execPath, [CLI, 'migrate'], { env: { ...envs[0]!, KONG_STANDIN_LOG: '/dev/null' }, extendEnv: false, reject: false });
      }
      await Promise.all(children.map((c) => Promise.race([c, new Promise((r) => setTimeout(r, 60_000))])));
      for (const c of children) c.kill('SIGKILL');
      const gaps = envs.map((_, i) => (firstKongEventAt(db, i, ready) ?? Number.NaN) - ready).filter((g) => !Number.isNaN(g));
      rows.push({ delayS, variant, p50: percentile(gaps, 50), p95: percentile(gaps, 95), pods: gaps.length });
      await server.destroy();
    }
  }
  return rows;
}
