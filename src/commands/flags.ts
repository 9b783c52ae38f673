/**
 * One table-driven flag parser for every command. A flag wins over its environment variable,
 * which wins over the default; a switch (no `arg`) takes no value; `--flag=value` and
 * `--flag value` are both accepted. Pure: the caller supplies argv and the environment.
 */
export type Env = Record<string, string | undefined>;

export interface FlagSpec<O> {
  flag: string;
  alias?: string;
  env?: string;
  /** The value's name in `--help` (e.g. DURATION); absent for a switch. */
  arg?: string;
  def?: string;
  help: string;
  commands: readonly string[];
  /** Store `value` in `o`; `name` is the flag or variable it came from (for error messages). */
  apply(o: O, value: string, name: string): void;
}

export interface Parsed {
  positional: string[];
  help: boolean;
}

const HELP = new Set(['--help', '-h']);

/** Split argv into (spec, value) pairs and positionals. */
function scan<O>(specs: readonly FlagSpec<O>[], cmd: string, argv: readonly string[], fail: (m: string) => Error) {
  const given: Array<[FlagSpec<O>, string, string]> = [];
  const out: Parsed = { positional: [], help: false };
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    if (HELP.has(raw)) {
      out.help = true;
      continue;
    }
    if (!raw.startsWith('-') || raw === '-') {
      out.positional.push(raw);
      continue;
    }
    const eq = raw.startsWith('--') ? raw.indexOf('=') : -1;
    const name = eq > 0 ? raw.slice(0, eq) : raw;
    const named = specs.filter((s) => s.flag === name || s.alias === name);
    if (named.length === 0) throw fail(`unknown option ${name}; run "kong-db-init ${cmd} --help" for the list`);
    const spec = named.find((s) => s.commands.includes(cmd));
    if (!spec) throw fail(`option ${name} does not apply to "${cmd}"; run "kong-db-init ${cmd} --help"`);
    if (!spec.arg) {
      given.push([spec, eq > 0 ? raw.slice(eq + 1) : 'true', name]);
      continue;
    }
    const value = eq > 0 ? raw.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '') throw fail(`option ${name} needs a value (${spec.arg})`);
    given.push([spec, value, name]);
  }
  return { given, out };
}

/** Parse `argv` for `cmd` into `o`: defaults, then environment variables, then flags in order. */
export function parseFlags<O>(specs: readonly FlagSpec<O>[], cmd: string, argv: readonly string[], env: Env, o: O, fail: (m: string) => Error): Parsed {
  const { given, out } = scan(specs, cmd, argv, fail);
  const fromFlag = new Set(given.map(([s]) => s));
  for (const s of specs) {
    if (!s.commands.includes(cmd) || fromFlag.has(s)) continue;
    const e = s.env ? env[s.env] : undefined;
    if (e !== undefined && e !== '') s.apply(o, e, s.env!);
    else if (s.def !== undefined) s.apply(o, s.def, s.flag);
  }
  for (const [s, v, name] of given) s.apply(o, v, name);
  return out;
}

/** The flag lines of `--help` for `cmd`, from the same table. */
export function flagHelp<O>(specs: readonly FlagSpec<O>[], cmd: string): string {
  return specs
    .filter((s) => s.commands.includes(cmd))
    .map((s) => {
      const name = `${s.alias ? `${s.alias}, ` : ''}${s.flag}${s.arg ? ` ${s.arg}` : ''}`;
      const meta = [s.env ? `env ${s.env}` : '', s.def !== undefined && s.arg ? `default ${s.def}` : ''].filter(Boolean).join(', ');
      return `  ${name.padEnd(30)} ${s.help}${meta ? ` (${meta})` : ''}`;
    })
    .join('\n');
}

/** A Markdown table of every flag of `cmd` (docs/flags.md, checked for staleness by a test). */
export function flagTable<O>(specs: readonly FlagSpec<O>[], cmd: string): string {
  const cell = (t: string) => t.replace(/\|/g, '\\|');
  const rows = specs
    .filter((s) => s.commands.includes(cmd))
    .map(
      (s) =>
        `| \`${cell(`${s.alias ? `${s.alias}, ` : ''}${s.flag}${s.arg ? ` ${s.arg}` : ''}`)}\` | ${s.env ? `\`${s.env}\`` : ''} | ${s.def ? `\`${cell(s.def)}\`` : ''} | ${cell(s.help)} |`,
    );
  return ['| flag | environment variable | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
