/** Benchmark 4: peak RSS of `migrate` (bootstrapping an empty database), against a bare `node -e ''`. */
import { execa } from 'execa';
import { CLI, createDb } from '../test/helpers/harness.js';
import { podEnv } from './lib.js';

export interface MemoryRow {
  migrateMb: number;
  nodeMb: number;
  ratio: number;
}

async function peakKb(cmd: string, args: string[], env: Record<string, string>): Promise<number> {
  const r = await execa('/usr/bin/time', ['-f', '%M', cmd, ...args], { env, extendEnv: false, reject: false });
  const kb = Number(String(r.stderr).trim().split('\n').pop());
  if (!Number.isFinite(kb)) throw new Error(`no peak RSS from /usr/bin/time: ${r.stderr}`);
  return kb;
}

export async function memoryBench(): Promise<MemoryRow> {
  const db = await createDb();
  const migrate = await peakKb(process.execPath, [CLI, 'migrate'], podEnv(db, 0));
  const node = await peakKb(process.execPath, ['-e', ''], podEnv(db, 1));
  return { migrateMb: migrate / 1024, nodeMb: node / 1024, ratio: migrate / node };
}
