/**
 * Benchmark: a big release through `post-render` (target ≤ 1 s and ≤ 100 MB peak RSS for 5 MB),
 * against `cat` of the same stream, both measured in this run (median of 3, peak RSS by
 * /usr/bin/time). The stream is the real Kong chart's render (3.4.1, the Enterprise user of
 * test/fixtures) padded with more of its own documents, renamed, to 5 MB: like an umbrella chart.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CLI, ROOT } from '../test/helpers/harness.js';
import { median } from './lib.js';

export interface PostRenderRow {
  mb: number;
  oursMs: number;
  catMs: number;
  oursRssMb: number;
  catRssMb: number;
  nodeRssMb: number;
  nodeMs: number;
}

/** The chart's render, padded to `bytes` with copies of its non-workload documents under new names. */
export function paddedRelease(bytes: number): string {
  const render = fs.readFileSync(path.join(ROOT, 'test/fixtures/render/chart-3.4.1-enterprise.yaml'), 'utf8');
  const docs = render.split(/^(?=---$)/m);
  const filler = docs.filter((d) => !/^kind: (Deployment|Job)$/m.test(d));
  const parts = [render];
  let size = render.length;
  for (let i = 0; size < bytes; i++) {
    const d = filler[i % filler.length]!.replace(/^( {2}name: )(\S+)$/m, `$1$2-pad-${i}`);
    parts.push(d.endsWith('\n') ? d : d + '\n');
    size += d.length;
  }
  return parts.join('');
}

async function timed(cmd: string, args: string[], input: string): Promise<{ ms: number; rssKb: number }> {
  const t0 = performance.now();
  const r = await execa('/usr/bin/time', ['-f', '%M', cmd, ...args], { input, reject: false, stripFinalNewline: false, maxBuffer: 64 * 2 ** 20 });
  const ms = performance.now() - t0;
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
  if (r.stdout.length < input.length * 0.9) throw new Error(`${cmd}: short output (${r.stdout.length} of ${input.length} bytes)`);
  const rssKb = Number(String(r.stderr).trim().split('\n').pop());
  return { ms, rssKb };
}

export async function postRenderBench(mb = 5, rounds = 3): Promise<PostRenderRow> {
  const input = paddedRelease(mb * 2 ** 20);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-bench-pr-')), 'release.yaml');
  fs.writeFileSync(file, input);
  const ours: Array<{ ms: number; rssKb: number }> = [];
  const cat: Array<{ ms: number; rssKb: number }> = [];
  for (let i = 0; i < rounds; i++) {
    ours.push(await timed(process.execPath, [CLI, 'post-render', '--image', 'kong-db-init:bench'], input));
    cat.push(await timed('cat', [], input));
  }
  const node = await timed(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)'], input); // the floor for any Node program
  return {
    mb: input.length / 2 ** 20,
    oursMs: Math.round(median(ours.map((x) => x.ms))),
    catMs: Math.round(median(cat.map((x) => x.ms))),
    oursRssMb: Math.max(...ours.map((x) => x.rssKb)) / 1024,
    catRssMb: Math.max(...cat.map((x) => x.rssKb)) / 1024,
    nodeRssMb: node.rssKb / 1024,
    nodeMs: Math.round(node.ms),
  };
}
