/** Shared helpers for the benchmarks: a real Postgres, per-pod environments, Kong process counts, statistics. */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { CLI, STANDIN_BIN, type TestDb } from '../test/helpers/harness.js';

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
export const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

/** The Kong under test: `--kong-bin` (bench/run.ts sets KDI_BENCH_KONG_BIN), else the stand-in. */
export function kongBin(): string {
  return process.env.KDI_BENCH_KONG_BIN ?? path.join(STANDIN_BIN, 'kong');
}

/**
 * A `kong` first on PATH that logs each start (epoch ms and arguments) to KDI_BENCH_KONG_LOG, then
 * execs the Kong under test: Kong processes per pod are counted the same way for the stand-in
 * and a real Kong, for ours and for the stock loops alike.
 */
function countingKong(db: TestDb): string {
  const dir = path.join(db.dir, 'counting-bin');
  const f = path.join(dir, 'kong');
  if (!fs.existsSync(f)) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(f, `#!/bin/sh\nprintf '%s %s\\n' "$(date +%s%3N)" "$*" >> "$KDI_BENCH_KONG_LOG"\nexec '${kongBin().replace(/'/g, `'\\''`)}' "$@"\n`, {
      mode: 0o755,
    });
  }
  return dir;
}

/** Environment of one pod: its own Kong start log, so that its Kong processes can be counted and timed. */
export function podEnv(db: TestDb, pod: number, extra: Record<string, string> = {}): Record<string, string> {
  const base = db.env();
  return db.env({
    PATH: `${countingKong(db)}:${base.PATH}`,
    KDI_BENCH_KONG_LOG: path.join(db.dir, `pod-${pod}.kong`),
    KONG_DB_INIT_STATUS_FILE: '-',
    POD_NAME: `pod-${pod}`,
    ...extra,
  });
}

/** Kong starts of one pod: epoch ms and arguments. */
export function kongStarts(db: TestDb, pod: number): Array<{ t: number; args: string }> {
  const f = path.join(db.dir, `pod-${pod}.kong`);
  if (!fs.existsSync(f)) return [];
  return fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const i = l.indexOf(' ');
      return { t: Number(l.slice(0, i)), args: l.slice(i + 1) };
    });
}

export function firstKongEventAt(db: TestDb, pod: number, notBefore = 0): number | undefined {
  const ts = kongStarts(db, pod)
    .map((e) => e.t)
    .filter((t) => t >= notBefore);
  return ts.length ? Math.min(...ts) : undefined;
}

export function ourMigrate(env: Record<string, string>, args: string[] = []) {
  return execa(process.execPath, [CLI, 'migrate', ...args], { env, extendEnv: false, reject: false });
}

export function rawKong(env: Record<string, string>, args: string[]) {
  return execa('kong', args, { env, extendEnv: false, reject: false });
}
