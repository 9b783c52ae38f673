#!/usr/bin/env node
/** Command-line entry point: parse settings, install signal handlers, dispatch, set the exit code. */
import fs from 'node:fs';
import { OPTIONS, parseSettings, type Command, type Settings } from './commands/options.js';
import { loadKongConfig, type Env } from './kong/config.js';
import { ExitCode, exitCodeSummary, isInitError } from './errors.js';
import { realFiles } from './kong/files.js';
import { addSecret, createLogger, redact } from './report/log.js';
import { killTrackedGroups } from './kong/process-group.js';
import type { RunContext } from './commands/migrate.js';

declare const __KDI_VERSION__: string | undefined;

/** Set at build time (esbuild --define); read from package.json when run from source. */
function toolVersion(): string {
  if (typeof __KDI_VERSION__ === 'string' && __KDI_VERSION__) return __KDI_VERSION__;
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

const COMMAND_HELP: Record<string, string> = {
  migrate: 'wait for Postgres, take the migration lock, run kong migrations bootstrap/up/finish as the state requires (the init container)',
  wait: 'wait until `kong start` would accept the schema (a cheap replacement for the chart\'s wait-for-db)',
  status: 'print the schema state, the plan and recent history; exit status mirrors `kong migrations list`',
  install: 'install DIR: copy this program (with its Node runtime) into DIR, for use inside the Kong image',
  'post-render': 'Helm post-renderer: read rendered manifests on stdin, write them with our init container on stdout',
  values: 'read a rendered Kong release on stdin, write the values overlay that adds the same init containers (Argo CD, Flux); --check FILE',
  finish: 'run `kong migrations finish` once every Kong workload on the database has completed its rollout (the injected sidecar; `finish --help`)',
};

export function helpText(cmd?: Command): string {
  const opts = OPTIONS.filter((o) => !cmd || o.commands.includes(cmd));
  const optLines = opts.map((o) => {
    const val = o.type === 'bool' ? '' : o.type === 'enum' ? ` <${o.values!.join('|')}>` : o.type === 'duration' ? ' <duration>' : ' <value>';
    const meta = [o.env ? `env ${o.env}` : '', o.def !== undefined && o.type !== 'bool' ? `default ${o.def}` : ''].filter(Boolean).join(', ');
    return `  ${(o.flag + val).padEnd(36)} ${o.help}${meta ? ` (${meta})` : ''}`;
  });
  const header = cmd && COMMAND_HELP[cmd] ? `kong-db-init ${cmd}: ${COMMAND_HELP[cmd]}\n` : '';
  return `${header}Usage: kong-db-init <command> [options]

Commands:
${Object.entries(COMMAND_HELP).map(([c, h]) => `  ${c.padEnd(12)} ${h}`).join('\n')}

Options (flags win over environment variables):
${optLines.join('\n')}
  --help, --version

Postgres settings are Kong's own: KONG_DATABASE, KONG_PG_HOST, KONG_PG_PORT, KONG_PG_USER,
KONG_PG_PASSWORD (or KONG_PG_PASSWORD_FILE), KONG_PG_DATABASE, KONG_PG_SCHEMA, KONG_PG_TIMEOUT,
KONG_PG_SSL, KONG_PG_SSL_VERIFY, KONG_PG_SSL_REQUIRED, KONG_PG_SSL_CERT, KONG_PG_SSL_CERT_KEY,
KONG_LUA_SSL_TRUSTED_CERTIFICATE, KONG_PG_USER_FILE, KONG_PG_DATABASE_FILE, and kong.conf (--conf).
Values may be {vault://env/NAME} references (Kong's env vault).

Exit codes: ${exitCodeSummary()}.
\`status\` exits like \`kong migrations list\` (0, 3, 4, 5).
`;
}


export async function main(argv: string[], env: Env): Promise<number> {
  if (argv[0] === 'finish') {
    // finish has flags of its own besides migrate's (see src/finish.ts)
    const { finishMain } = await import('./commands/finish.js');
    return finishMain(argv.slice(1), env, toolVersion());
  }
  const pr = argv.indexOf('post-render');
  if (pr >= 0 && argv.slice(0, pr).every((a) => a.startsWith('-') && a !== '--help' && a !== '-h')) {
    // the post-renderer has flags of its own (passed by Helm with --post-renderer-args)
    const { postRenderMain } = await import('./commands/post-render.js');
    return postRenderMain(argv.slice(pr + 1), env);
  }
  if (argv[0] === 'values') {
    // flags of its own, shared with post-render (src/render-args.ts)
    const { valuesMain } = await import('./commands/values.js');
    return valuesMain(argv.slice(1), env);
  }
  let settings: Settings & { helpFor?: Command };
  try {
    settings = parseSettings(argv, env);
  } catch (e) {
    process.stderr.write(`kong-db-init: ${isInitError(e) ? e.message : String(e)}\n`);
    return isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  if (settings.command === 'help') {
    process.stdout.write(helpText(settings.helpFor));
    return 0;
  }
  if (settings.command === 'version') {
    process.stdout.write(`kong-db-init ${toolVersion()}\n`);
    return 0;
  }
  if (settings.command === 'install') {
    const { installMain } = await import('./commands/install.js');
    return installMain(settings.positional);
  }
  const log = createLogger({ format: settings.logFormat, verbose: settings.verbose });
  addSecret(env.KONG_PG_PASSWORD);
  let kong;
  try {
    kong = loadKongConfig(env, settings.conf, realFiles);
  } catch (e) {
    log.error(isInitError(e) ? e.message : redact(String(e)), { exit_code: isInitError(e) ? e.exitCode : 1 });
    return isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  addSecret(kong.password);
  const ctl = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      // a second signal: stop now, but never leave Kong's process group running behind us
      log.warn(`received ${sig} again: killing any running Kong step now (SIGKILL to its process group); a rerun completes what it cut short`);
      void killTrackedGroups().finally(() => process.exit(ExitCode.INTERRUPTED));
      return;
    }
    log.warn(`received ${sig}: stopping (a running Kong step may finish within --grace-period; a second signal kills it now)`);
    ctl.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const ctx: RunContext = { settings, kong, env, log, signal: ctl.signal, toolVersion: toolVersion() };
  // loaded only for the commands that use it, so that post-render/values/install start lighter
  const { migrate, status, waitReady } = await import('./commands/migrate.js');
  switch (settings.command) {
    case 'migrate':
      return migrate(ctx);
    case 'wait':
      return waitReady(ctx);
    case 'status':
      return status(ctx);
    default:
      return ExitCode.INTERNAL;
  }
}

main(process.argv.slice(2), process.env).then(
  (code) => {
    process.exitCode = code;
    // let stdout/stderr drain; do not linger on a stray handle
    setTimeout(() => process.exit(code), 3000).unref();
  },
  (e: unknown) => {
    process.stderr.write(redact(`kong-db-init: internal error: ${(e as Error)?.stack ?? String(e)}\n`));
    process.exitCode = ExitCode.INTERNAL;
  },
);
