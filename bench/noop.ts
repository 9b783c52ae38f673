/**
 * Benchmark 3: a pod restart with nothing to do (`migrate` on an up-to-date database) side by side
 * with one `kong migrations list`, in a used prefix and in a fresh one (what a new pod's Kong pays,
 * listeners on as by default). Medians of `runs`, interleaved.
 */
import path from 'node:path';
import { createDb, seed } from '../test/helpers/harness.js';
import { kongStarts, median, ourMigrate, podEnv, rawKong } from './lib.js';

export interface NoopRow {
  oursMedian: number;
  /** Kong processes our no-op run started (per run). */
  oursKong: number;
  listUsedMedian: number;
  listFreshMedian: number;
  ratioUsed: number;
  ratioFresh: number;
}

export async function noopBench(runs = 10): Promise<NoopRow> {
  const db = await createDb();
  await seed(db, 'current');
  const env = podEnv(db, 0);
  const listEnv = podEnv(db, 1);
  const ours: number[] = [];
  const used: number[] = [];
  const fresh: number[] = [];
  await ourMigrate(env); // warm the file cache
  const before = kongStarts(db, 0).length;
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const r = await ourMigrate(env);
    if (r.exitCode !== 0) throw new Error(`migrate failed: ${r.stderr}`);
    ours.push(performance.now() - t);
    t = performance.now();
    await rawKong(listEnv, ['migrations', 'list']);
    used.push(performance.now() - t);
    t = performance.now();
    await rawKong({ ...listEnv, KONG_PREFIX: path.join(db.dir, `fresh-prefix-${i}`) }, ['migrations', 'list']);
    fresh.push(performance.now() - t);
  }
  const o = median(ours);
  return {
    oursMedian: o,
    oursKong: (kongStarts(db, 0).length - before) / runs,
    listUsedMedian: median(used),
    listFreshMedian: median(fresh),
    ratioUsed: o / median(used),
    ratioFresh: o / median(fresh),
  };
}
