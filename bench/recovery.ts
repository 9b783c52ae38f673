/**
 * Benchmark 7: recovering from a Kong killed mid-`up` (its `locks` row left with Kong's default ttl,
 * 60 s): the next `migrate`, with the dead row cleared (no other session on the database) against
 * `--no-repair`, which waits the row out as Kong itself would (runs 30, 37, 38: ~56-60 s).
 */
import path from 'node:path';
import { execa } from 'execa';
import { CLI, createDb, seedKong, STANDIN_BIN } from '../test/helpers/harness.js';
import { podEnv } from './lib.js';

export interface RecoveryRow {
  repairMs: number;
  waitMs: number;
  ratio: number;
}

async function killedUp(): Promise<ReturnType<typeof podEnv>> {
  const db = await createDb();
  await seedKong(db, 'new');
  const env = podEnv(db, 0);
  const k = await execa(path.join(STANDIN_BIN, 'kong'), ['migrations', 'up'], {
    env: { ...env, KONG_STANDIN_KILL_AT: 'locked' },
    extendEnv: false,
    reject: false,
    detached: true,
  });
  if (k.signal !== 'SIGKILL') throw new Error(`the stand-in was not killed: ${k.stderr}`);
  return env;
}

async function timedMigrate(env: Record<string, string>, args: string[]): Promise<number> {
  const t = Date.now();
  const r = await execa(process.execPath, [CLI, 'migrate', ...args], { env, extendEnv: false, reject: false });
  if (r.exitCode !== 0) throw new Error(`migrate exited ${r.exitCode}: ${r.stderr}`);
  return Date.now() - t;
}

export async function recoveryBench(): Promise<RecoveryRow> {
  const repairMs = await timedMigrate(await killedUp(), []);
  const waitMs = await timedMigrate(await killedUp(), ['--no-repair']);
  return { repairMs, waitMs, ratio: repairMs / waitMs };
}
