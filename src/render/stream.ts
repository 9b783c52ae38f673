/**
 * A rendered manifest stream, cut into documents without parsing them: each chunk keeps its bytes
 * (separator and comments included) and the line it starts on. Only documents that the transform
 * may change are parsed into a document model (`parseChunk`); the rest are copied as they are.
 */
import { parseDocument, type Document } from 'yaml';
import { RenderError } from './errors.js';

export interface Chunk {
  text: string;
  /** 1-based line of the chunk's first line in the whole stream. */
  line: number;
}

const SEPARATOR = /^---(?:[ \t][^\n]*)?$/;

/** Split a stream at `---` lines, keeping every byte (each chunk starts with its separator). */
export function splitStream(input: string): Chunk[] {
  const chunks: Chunk[] = [];
  let start = 0;
  let startLine = 1;
  let line = 1;
  let pos = 0;
  while (pos < input.length) {
    const nl = input.indexOf('\n', pos);
    const end = nl < 0 ? input.length : nl;
    // cheap test first: most lines do not start with "---"
    if (input.charCodeAt(pos) === 45 && input.startsWith('---', pos) && SEPARATOR.test(input.slice(pos, end).replace(/\r$/, '')) && pos > start) {
      chunks.push({ text: input.slice(start, pos), line: startLine });
      start = pos;
      startLine = line;
    }
    if (nl < 0) break;
    pos = nl + 1;
    line++;
  }
  if (start < input.length) chunks.push({ text: input.slice(start), line: startLine });
  return chunks;
}

/** Kinds the transform may edit; every other document is passed through unparsed. */
export const PARSED_KINDS = new Set(['Deployment', 'DaemonSet', 'StatefulSet']);

const KIND_LINE = /^kind:[ \t]*(["']?)([A-Za-z0-9]+)\1[ \t]*(?:#.*)?\r?$/m;

/**
 * The document's top-level `kind` read from its text, or undefined when the text does not show it
 * plainly (flow style, anchors, a kind split over lines): such documents are parsed to be sure.
 */
export function quickKind(text: string): string | undefined {
  const m = KIND_LINE.exec(text);
  return m ? m[2] : undefined;
}

export type JobRole = 'init' | 'pre-upgrade' | 'post-upgrade';

const JOB_COMPONENT = /^ {4}app\.kubernetes\.io\/component: ["']?(init|pre-upgrade|post-upgrade)-migrations["']?[ \t]*\r?$/m;
/** The chart's Jobs run `kong migrations …` (as args or a shell command); other apps' "-migrations" Jobs do not. */
export const RUNS_KONG_MIGRATIONS = /\bkong["']?[\s,]+["']?migrations\b/;
const JOB_NAME = /^ {2}name: ["']?([^"'\s#]+)["']?[ \t]*\r?$/m;

/**
 * One of the Kong chart's migration Jobs, read from the text as the chart renders it (component
 * label under metadata.labels, or the name suffix). `undefined`: not one; `'parse'`: it mentions
 * migrations but not in the chart's layout, so it must be parsed to be sure.
 */
export function quickMigrationJob(text: string): { role: JobRole; name: string } | undefined | 'parse' {
  if (!text.includes('-migrations') || !RUNS_KONG_MIGRATIONS.test(text)) return undefined;
  const name = JOB_NAME.exec(text)?.[1];
  const role = (JOB_COMPONENT.exec(text)?.[1] ?? name?.match(/-(init|pre-upgrade|post-upgrade)-migrations$/)?.[1]) as JobRole | undefined;
  return role && name ? { role, name } : 'parse';
}

/** Whether a chunk must be parsed: a kind we may change, a kind we cannot read from the text, or an unusual migration Job. */
export function needsParse(c: Chunk): boolean {
  const kind = quickKind(c.text);
  if (kind === 'Job') return quickMigrationJob(c.text) === 'parse';
  if (kind !== undefined) return PARSED_KINDS.has(kind);
  // comments and blank lines only: nothing to parse
  return /^(?!\s*(?:#|---|$))/m.test(c.text);
}

/** Parse one document as YAML 1.1 (like Helm), with an error that names the line and column in the stream. */
export function parseChunk(c: Chunk): Document {
  const doc = parseDocument(c.text, { version: '1.1', prettyErrors: true, uniqueKeys: false });
  const err = doc.errors[0];
  if (err) {
    const pos = err.linePos?.[0];
    const where = pos ? `line ${c.line + pos.line - 1}, column ${pos.col}` : `the document starting at line ${c.line}`;
    throw new RenderError(`malformed YAML at ${where}: ${err.message.split('\n')[0]}; fix the chart values or template that produced it`);
  }
  return doc;
}
