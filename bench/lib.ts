/** Shared helpers for the benchmarks: a real Postgres, per-pod environments, statistics. */
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

/** Environment of one pod: its own stand-in log so that its first Kong command can be timed. */
export function podEnv(db: TestDb, pod: number, extra: Record<string, string> = {}): Record<string, string> {
  return db.env({ KONG_STANDIN_LOG: path.join(db.dir, `pod-${pod}.log`), KONG_DB_INIT_STATUS_FILE: '-', POD_NAME: `pod-${pod}`, ...extra });
}

export function firstKongEventAt(db: TestDb, pod: number, notBefore = 0): number | undefined {
  const f = path.join(db.dir, `pod-${pod}.log`);
  if (!fs.existsSync(f)) return undefined;
  const ts = fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { ev: string; t: number }).filter((e) => e.ev === 'start' && e.t >= notBefore).map((e) => e.t);
  return ts.length ? Math.min(...ts) : undefined;
}

export function ourMigrate(env: Record<string, string>, args: string[] = []) {
  return execa(process.execPath, [CLI, 'migrate', ...args], { env, extendEnv: false, reject: false });
}

export function rawKong(env: Record<string, string>, args: string[]) {
  return execa(path.join(STANDIN_BIN, 'kong'), args, { env, extendEnv: false, reject: false });
}
