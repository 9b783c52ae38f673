/** Structured logging (text or JSON lines on stderr) with secret redaction applied to every line. */
export type LogFormat = 'text' | 'json';
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

const secrets = new Set<string>();

/** Register a value that must never be printed. Short values are ignored to avoid mangling output. */
export function addSecret(value: string | undefined): void {
  if (value && value.length >= 1) secrets.add(value);
}

const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]+:)([^@/\s]+)@/gi;

/** Remove every registered secret and any password embedded in a URL. */
export function redact(text: string): string {
  let out = text.replace(URL_PASSWORD, '$1***@');
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (out.includes(s)) out = out.split(s).join('***');
  }
  return out;
}

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A line printed as is (after redaction) on stdout: the final summary. */
  result(line: string): void;
  readonly format: LogFormat;
}

export interface LoggerOptions {
  format: LogFormat;
  verbose?: boolean;
  write?: (line: string) => void;
  writeOut?: (line: string) => void;
  now?: () => Date;
}

function fmtValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

export function createLogger(opts: LoggerOptions): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const writeOut = opts.writeOut ?? ((line: string) => process.stdout.write(line + '\n'));
  const now = opts.now ?? (() => new Date());
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (level === 'debug' && !opts.verbose) return;
    let line: string;
    if (opts.format === 'json') {
      line = JSON.stringify({ time: now().toISOString(), level, msg, ...fields });
    } else {
      const kv = fields
        ? Object.entries(fields)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => ` ${k}=${fmtValue(v)}`)
            .join('')
        : '';
      line = `${now().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${kv}`;
    }
    write(redact(line));
  };
  return {
    format: opts.format,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    result: (line) => writeOut(redact(line)),
  };
}
