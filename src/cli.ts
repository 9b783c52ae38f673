#!/usr/bin/env node
/**
 * Command-line entry point: parse settings (commands/options.ts, one flag table), install the one
 * signal handler, dispatch to a command (commands/), set the exit code. Commands are thin: the
 * machinery they share is the engine (engine/run.ts says how the parts fit).
 */
import fs from 'node:fs';
import { flagHelp } from './commands/flags.js';
import { COMMANDS, OPTIONS, parseSettings, type Command, type Settings } from './commands/options.js';
import type { RunContext } from './engine/run.js';
import { ExitCode, exitCodeSummary, isInitError } from './errors.js';
import { inClusterAccess, type KubeAccess } from './kube/client.js';
import { type Env, type KongPg, loadKongConfig } from './kong/config.js';
import { realFiles } from './kong/files.js';
import { killTrackedGroups } from './kong/process-group.js';
import { addSecret, createLogger, redact, type Logger } from './report/log.js';

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
  wait: "wait until `kong start` would accept the schema (a cheap replacement for the chart's wait-for-db)",
  status: 'print the schema state, the plan and recent history; exit status mirrors `kong migrations list`',
  install: 'install DIR: copy this program (with its Node runtime) into DIR, for use inside the Kong image',
  'post-render': 'Helm post-renderer: read rendered manifests on stdin, write them with our init container on stdout',
  values: 'read a rendered Kong release on stdin, write the values overlay that adds the same init containers (Argo CD, Flux); --check FILE',
  finish: 'run `kong migrations finish` once every Kong workload on the database has completed its rollout (the injected sidecar; `finish --help`)',
};

/** `--help`: the commands, and the flags of `cmd` (or of every database command) from the one flag table. */
export function helpText(cmd?: Command): string {
  const header = cmd ? `kong-db-init ${cmd}: ${COMMAND_HELP[cmd]}\n` : '';
  const flags = cmd ? flagHelp(OPTIONS, cmd) : COMMANDS.map((c) => `${c}:\n${flagHelp(OPTIONS, c)}`).join('\n');
  return `${header}Usage: kong-db-init <command> [options]

Commands:
${Object.entries(COMMAND_HELP)
  .map(([c, h]) => `  ${c.padEnd(12)} ${h}`)
  .join('\n')}

Options (flags win over environment variables; \`kong-db-init post-render --help\` and \`values --help\` list theirs):
${flags}
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

/** The one signal handler: the first signal aborts the run; a second kills any running Kong step now. */
function onSignals(log: Logger, ctl: AbortController): void {
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn(`received ${sig} again: killing any running Kong step now (SIGKILL to its process group); a rerun completes what it cut short`);
      void killTrackedGroups().finally(() => process.exit(ExitCode.INTERRUPTED));
      return;
    }
    log.warn(`received ${sig}: stopping (a running Kong step may finish within --grace-period; a second signal kills it now)`);
    ctl.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** The commands with flags of their own (post-render's come from Helm's --post-renderer-args). */
async function ownParser(argv: string[], env: Env): Promise<number | undefined> {
  const pr = argv.indexOf('post-render');
  if (pr >= 0 && argv.slice(0, pr).every((a) => a.startsWith('-') && a !== '--help' && a !== '-h')) {
    const { postRenderMain } = await import('./commands/post-render.js');
    return postRenderMain(argv.slice(pr + 1), env);
  }
  if (argv[0] === 'values') {
    const { valuesMain } = await import('./commands/values.js');
    return valuesMain(argv.slice(1), env);
  }
  if (argv[0] === 'install') {
    const { installMain } = await import('./commands/install.js');
    return installMain(argv.slice(1));
  }
  return undefined;
}

/** Run a database command (migrate, wait, status, finish) with its settings. */
async function runDbCommand(settings: Settings, env: Env): Promise<number> {
  const log = createLogger({ format: settings.logFormat, verbose: settings.verbose });
  addSecret(env.KONG_PG_PASSWORD);
  let kong: KongPg;
  let kube: KubeAccess | undefined;
  try {
    kong = loadKongConfig(env, settings.conf, realFiles);
    addSecret(kong.password);
    if (settings.command === 'finish' && settings.rollout === 'wait' && kong.database !== 'off') kube = inClusterAccess(env, realFiles);
  } catch (e) {
    log.error(isInitError(e) ? e.message : redact(String(e)), { exit_code: isInitError(e) ? e.exitCode : 1 });
    return isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  const ctl = new AbortController();
  onSignals(log, ctl);
  const ctx: RunContext = { settings, kong, env, log, signal: ctl.signal, toolVersion: toolVersion() };
  switch (settings.command) {
    case 'migrate':
      return (await import('./commands/migrate.js')).migrate(ctx);
    case 'wait':
      return (await import('./commands/wait.js')).waitReady(ctx);
    case 'status':
      return (await import('./commands/status.js')).status(ctx);
    case 'finish': {
      const f = await import('./commands/finish.js');
      const code = await f.finish(ctx, kube);
      return settings.thenIdle ? f.idle(ctx, code) : code;
    }
  }
}

export async function main(argv: string[], env: Env): Promise<number> {
  const own = await ownParser(argv, env);
  if (own !== undefined) return own;
  if (argv.length === 0 || ['--help', '-h', 'help'].includes(argv[0]!)) {
    process.stdout.write(helpText());
    return 0;
  }
  if (['--version', '-V', 'version'].includes(argv[0]!)) {
    process.stdout.write(`kong-db-init ${toolVersion()}\n`);
    return 0;
  }
  let settings: Settings;
  try {
    settings = parseSettings(argv, env);
  } catch (e) {
    process.stderr.write(`kong-db-init: ${isInitError(e) ? e.message : String(e)}\n`);
    return isInitError(e) ? e.exitCode : ExitCode.INTERNAL;
  }
  if (settings.help) {
    process.stdout.write(helpText(settings.command));
    return 0;
  }
  if (settings.positional.length) {
    process.stderr.write(`kong-db-init: unexpected argument ${JSON.stringify(settings.positional[0])}; run "kong-db-init ${settings.command} --help"\n`);
    return ExitCode.CONFIG;
  }
  return runDbCommand(settings, env);
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
