// A stand-in for the Kong 3.7.1 CLI, for tests only: the top of a five-process chain like the
// real one (recorded in test/fixtures/kong-cli-3.7.1/process-chain.md):
//
//   node kong.mjs  (this; real: perl resty)  -> sh chain.sh (real: nginx) -> sh (real: sh -c)
//     -> sh (real: perl resty) -> node worker.mjs (real: nginx, the one that migrates)
//
// Like the real top process it ignores SIGTERM/SIGINT/SIGHUP and exits when the worker has
// finished; SIGKILL to it orphans the rest, which keep migrating. It prepares the prefix: a fresh
// one costs CPU for every SSL listener's keys (real Kong: 1.53 s against 0.45 s with the listeners
// off), and "prefix directory <p> not found, trying to create it" goes to stdout after the rest.
//
// Test knobs (environment), read here or by worker.mjs:
//   KONG_STANDIN_CATALOG   3.7.1 (default) or 3.6: which migrations this Kong knows; `kong version` matches
//   KONG_STANDIN_PLUGIN_MIGRATIONS  "sub/name,...": extra (custom plugin) migrations
//   KONG_STANDIN_LOG       append one JSON line per event (start, worker chain, migration run, exit)
//   KONG_STANDIN_DELAY_MS  sleep this long before each migration (to be killed mid-way)
//   KONG_STANDIN_RECORD_DELAY_MS  sleep between a migration's commit and its schema_meta record
//   KONG_STANDIN_FAIL      "subsystem/name": that migration fails with a Postgres error
//   KONG_STANDIN_IGNORE_TERM  the worker ignores SIGTERM too (only SIGKILL stops it)
//   KONG_STANDIN_BARRIER   "DIR:N": the worker waits until N workers reached Kong's race window
//                          (bootstrap: before creating the schema; up/finish: before the locks row)
//   KONG_STANDIN_KEY_COST  pbkdf2 iterations per SSL listener key in a fresh prefix (default 400000)
//   KONG_STANDIN_KILL_AT, KONG_STANDIN_HOLD_AT, KONG_STANDIN_STALL_AT, KONG_STANDIN_PG_BUSY: stop, pause,
//                          stall or slow down the worker at a named point (see the top of worker.mjs)
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { selectCatalog } from './catalog.mjs';
import { argv, errorExit, event, loadConf, opt } from './common.mjs';

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => event('top-signal', { sig }));
const here = path.dirname(fileURLToPath(import.meta.url));

function die(msg) {
  errorExit(msg);
  process.exit(1);
}

let selected;
try {
  selected = selectCatalog(process.env);
} catch (e) {
  die(e.message);
}

/** Kong 3.7.1's listener defaults; an SSL listener gets keys generated in a fresh prefix. */
const LISTENERS = {
  proxy_listen: ['0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384', 'kong-default'],
  admin_listen: ['127.0.0.1:8001 reuseport backlog=16384, 127.0.0.1:8444 http2 ssl reuseport backlog=16384', 'admin-kong-default'],
  admin_gui_listen: ['0.0.0.0:8002, 0.0.0.0:8445 ssl', 'admin-gui-kong-default'],
  status_listen: ['off', 'status-kong-default'],
  stream_listen: ['off', 'stream-kong-default'],
};

function preparePrefix(conf) {
  const prefix = opt('-p', opt('--prefix', conf.prefix || '/usr/local/kong'));
  const created = !fs.existsSync(prefix);
  try {
    fs.mkdirSync(prefix, { recursive: true });
    fs.accessSync(prefix, fs.constants.W_OK);
  } catch (e) {
    die(`could not prepare Kong prefix at ${prefix}: ${e.code}`);
  }
  const cost = Number(process.env.KONG_STANDIN_KEY_COST || 400000);
  for (const [key, [def, file]] of Object.entries(LISTENERS)) {
    const value = conf[key] ?? def;
    if (value === 'off' || !/\bssl\b/.test(value)) continue;
    const f = path.join(prefix, 'ssl', `${file}.key`);
    if (fs.existsSync(f)) continue;
    fs.mkdirSync(path.dirname(f), { recursive: true });
    // the real CLI generates an RSA and an ECDSA key pair per SSL listener; this costs comparable CPU
    fs.writeFileSync(f, crypto.pbkdf2Sync(file, crypto.randomBytes(16), cost, 32, 'sha256').toString('hex'));
    event('keygen', { listener: key });
  }
  return { prefix, created };
}

event('start', { pgid: process.pid });
const [cmd, sub] = argv;
if (cmd === 'version') {
  process.stdout.write(selected.version + '\n');
  process.exit(0);
}
if (!((cmd === 'migrations' && ['list', 'bootstrap', 'up', 'finish', 'reset'].includes(sub)) || cmd === 'start')) die(`unknown command: ${argv.join(' ')}`);

const { prefix, created } = preparePrefix(loadConf());
const child = spawn('sh', [path.join(here, 'chain.sh'), '3', ...argv], {
  stdio: 'inherit',
  env: { ...process.env, KONG_STANDIN_TOP_PID: String(process.pid) },
});
child.on('exit', (code, signal) => {
  if (created) process.stdout.write(`prefix directory ${prefix} not found, trying to create it\n`);
  event('top-exit', { code, signal });
  process.exit(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15));
});
