// Shared by the stand-in's processes: arguments, Kong's configuration (kong.conf + KONG_*), events.
import fs from 'node:fs';

export const argv = process.argv.slice(2);

export function opt(name, def) {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def;
}

/** kong.conf (-c) then KONG_* variables, like Kong. */
export function loadConf() {
  const conf = {};
  const c = opt('-c', opt('--conf'));
  if (c) {
    for (const line of fs.readFileSync(c, 'utf8').split('\n')) {
      const l = line.replace(/#.*/, '').trim();
      const eq = l.indexOf('=');
      if (eq > 0) conf[l.slice(0, eq).trim()] = l.slice(eq + 1).trim();
    }
  }
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('KONG_')) conf[k.slice(5).toLowerCase()] = v;
  return conf;
}

/** KONG_STANDIN_LOG: one JSON line per event, for tests. */
export function event(ev, extra = {}) {
  const f = process.env.KONG_STANDIN_LOG;
  if (f)
    fs.appendFileSync(f, JSON.stringify({ pid: process.pid, pod: process.env.POD_NAME, cmd: argv.slice(0, 2).join(' '), ev, t: Date.now(), ...extra }) + '\n');
}

export function errorExit(msg) {
  process.stderr.write(`Error: ${msg}\n\n  Run with --v (verbose) or --vv (debug) for more details\n`);
}
