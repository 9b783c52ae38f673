/**
 * Benchmark 6: what the finish sidecar costs once it is done. Its launcher runs `finish --then-idle`
 * with Node as a child and, once finish is done, only a shell (and its `sleep`) waits for SIGTERM;
 * baseline in the same run: a Node process idling the way the sidecar used to (`setInterval`).
 * Both are measured as the RSS of every process of the container-to-be (the launcher's tree).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CLI, createDb, until } from '../test/helpers/harness.js';
import { podEnv } from './lib.js';

export interface IdleRow {
  sidecarKb: number;
  nodeIdleKb: number;
  ratio: number;
}

/** RSS (kB) of a process and all its descendants. */
function treeRssKb(pid: number): number {
  const kids = (p: number): number[] => {
    try {
      return fs.readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const rss = (p: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...kids(all[i]!));
  return all.reduce((n, p) => n + rss(p), 0);
}

export async function idleBench(): Promise<IdleRow> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-bench-idle-'));
  try {
    await execa(process.execPath, [CLI, 'install', dir]);
    const db = await createDb();
    const env = podEnv(db, 0);
    const sidecar = execa(path.join(dir, 'kong-db-init'), ['finish', '--then-idle', '--rollout=skip'], { env, extendEnv: false, reject: false });
    let err = '';
    sidecar.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    await until(() => /finish: done; idling|nothing pending|kong migrations finish done/.test(err), 60_000, 'finish to be done');
    await until(
      () =>
        !fs
          .readFileSync(`/proc/${sidecar.pid}/task/${sidecar.pid}/children`, 'utf8')
          .trim()
          .split(/\s+/)
          .some((p) => p && fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'node'),
      30_000,
      'node to exit',
    );
    await new Promise((r) => setTimeout(r, 500));
    const sidecarKb = treeRssKb(sidecar.pid!);
    sidecar.kill('SIGTERM');
    await sidecar;
    const node = execa(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)'], { reject: false });
    await new Promise((r) => setTimeout(r, 1500));
    const nodeIdleKb = treeRssKb(node.pid!);
    node.kill('SIGTERM');
    await node;
    return { sidecarKb, nodeIdleKb, ratio: sidecarKb / nodeIdleKb };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
