/** Benchmark 3: `migrate` on an up-to-date database vs one bare `kong migrations list` (median of 10). */
import { createDb, seed } from '../test/helpers/harness.js';
import { median, ourMigrate, podEnv, rawKong } from './lib.js';

export interface NoopRow {
  oursMedian: number;
  listMedian: number;
  extra: number;
  ratio: number;
}

export async function noopBench(runs = 10): Promise<NoopRow> {
  const db = await createDb();
  await seed(db, 'current');
  const env = podEnv(db, 0);
  const ours: number[] = [];
  const list: number[] = [];
  await ourMigrate(env); // warm the file cache
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const r = await ourMigrate(env);
    if (r.exitCode !== 0) throw new Error(`migrate failed: ${r.stderr}`);
    ours.push(performance.now() - t);
    t = performance.now();
    await rawKong(env, ['migrations', 'list']);
    list.push(performance.now() - t);
  }
  const o = median(ours);
  const l = median(list);
  return { oursMedian: o, listMedian: l, extra: o - l, ratio: o / l };
}
