/**
 * Structured logging (text or JSON lines on stderr). Secrets are kept out by structure: the
 * message and every string field are scrubbed (src/secrets.ts) before the line is formatted, so
 * nothing is ever redacted in JSON-encoded or truncated text.
 */
import { addSecret, scrub, scrubDeep } from './secrets.js';

export type LogFormat = 'text' | 'json';
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export { addSecret };

/** Scrub one text (kept for callers that print text themselves, e.g. a crash's stack). */
export function redact(text: string): string {
  return scrub(text);
}

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A line printed as is on stdout (the final summary): build it from scrubbed values. */
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
  const emit = (level: Level, rawMsg: string, rawFields?: Fields) => {
    if (level === 'debug' && !opts.verbose) return;
    const msg = scrub(rawMsg, false); // outside text in it was scrubbed when it came in
    const fields = rawFields ? scrubDeep(rawFields) : undefined;
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
    write(line);
  };
  return {
    format: opts.format,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    result: (line) => writeOut(line),
  };
}
