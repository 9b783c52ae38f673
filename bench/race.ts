/**
 * Benchmark 1: N pods starting at once on an empty database. Ours vs raw `kong migrations bootstrap`,
 * with the Kong processes each pod started (target: the waiters start none).
 */
import { execa } from 'execa';
import { createDb, listCode } from '../test/helpers/harness.js';
import { kongStarts, median, ourMigrate, podEnv, rawKong } from './lib.js';

export interface RaceRow {
  n: number;
  oursMs: number;
  oursFailures: number;
  oursRatio: number;
  /** Kong processes of the pod that migrated (the most of any pod), in the median round. */
  holderKong: number;
  /** Kong processes of all other pods together, summed over the rounds (target 0). */
  waitersKong: number;
  rawMs: number;
  rawFailures: number;
  rawAbortedNoop: number;
  rawEndState: number;
  /** N bare `node -e 0` at once: the CPU floor for any N Node processes on this machine. */
  floorMs: number;
}

export async function raceBench(ns = [1, 8, 32]): Promise<RaceRow[]> {
  const rows: RaceRow[] = [];
  let base = 0;
  for (const n of ns) {
    // ours: median wall time of 3 rounds, each on a fresh empty database
    const walls: number[] = [];
    let oursFailures = 0;
    let holderKong = 0;
    let waitersKong = 0;
    for (let round = 0; round < 3; round++) {
      const db = await createDb();
      const t0 = Date.now();
      const ours = await Promise.all(Array.from({ length: n }, (_, i) => ourMigrate(podEnv(db, i))));
      walls.push(Date.now() - t0);
      oursFailures += ours.filter((r) => r.exitCode !== 0).length + ((await listCode(db)) === 0 ? 0 : 1);
      const perPod = Array.from({ length: n }, (_, i) => kongStarts(db, i).length).sort((a, b) => b - a);
      holderKong = Math.max(holderKong, perPod[0] ?? 0);
      waitersKong += perPod.slice(1).reduce((a, b) => a + b, 0);
    }
    const oursMs = median(walls);
    if (n === ns[0]) base = oursMs;
    let t: number;

    const raw = await createDb();
    t = Date.now();
    const rs = await Promise.all(Array.from({ length: n }, (_, i) => rawKong(podEnv(raw, i), ['migrations', 'bootstrap'])));
    const rawMs = Date.now() - t;
    t = Date.now();
    await Promise.all(Array.from({ length: n }, () => execa(process.execPath, ['-e', '0'])));
    const floorMs = Date.now() - t;
    rows.push({
      n,
      floorMs,
      oursMs,
      oursFailures,
      oursRatio: oursMs / base,
      holderKong,
      waitersKong,
      rawMs,
      rawFailures: rs.filter((r) => r.exitCode !== 0).length,
      rawAbortedNoop: rs.filter((r) => r.exitCode === 0 && String(r.stdout).includes('aborted: another node')).length,
      rawEndState: await listCode(raw),
    });
  }
  return rows;
}
