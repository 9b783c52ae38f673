/**
 * Secrets: which values must never be printed, and how text from outside (Kong's output,
 * Postgres errors) is scrubbed of them before it is stored in a log field, a summary field, an
 * error message or a history row. Pure string functions; JSON is serialised after scrubbing,
 * never scrubbed itself, and nothing is truncated before it is scrubbed.
 *
 * The rule (README "Secrets"):
 * 1. a password in a URL (`scheme://user:PASSWORD@`) is always masked, whatever it is;
 * 2. the value of a password-like key (`password=…`, `pg_password = …`, `"password":"…"`,
 *    `KONG_PG_PASSWORD=…`, `PGPASSWORD: …`) is always masked, whatever it is;
 * 3. a registered secret of at least STRONG_MIN characters is masked wherever it appears, raw,
 *    JSON-escaped or URL-encoded; so is each line of a multi-line secret of that length;
 * 4. a text (or a line of it) that is exactly a registered secret, of any length, is masked.
 * A shorter secret (Kong's documented default `kong`, `1`) is masked only by rules 1, 2 and 4:
 * masking every occurrence of a common word would blank out unrelated text (`kong-db-init`,
 * `[kong migrations bootstrap]`, the role name), and the places where a password really
 * appears in text are the contexts above.
 */
export const STRONG_MIN = 8;
export const MASK = '***';

const registered = new Set<string>();

/** Register a value that must never be printed (the password, wherever it came from). */
export function addSecret(value: string | undefined): void {
  // a vault reference names where the secret is; it is not the secret
  if (value === undefined || value === '' || /^\{vault:\/\/.*\}$/s.test(value)) return;
  registered.add(value);
  // a multi-line secret may be printed one line at a time
  for (const part of value.split(/\r?\n/)) if (part !== '' && part !== value) registered.add(part);
}

/** For tests: forget every registered secret. */
export function clearSecrets(): void {
  registered.clear();
}

export function secrets(): readonly string[] {
  return [...registered];
}

/** The encodings in which a strong secret is looked for (raw first). */
export function encodings(secret: string): string[] {
  const out = new Set<string>([secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret)]);
  try {
    out.add(encodeURI(secret));
  } catch {
    // lone surrogates: no URI form
  }
  return [...out].filter((s) => s !== '');
}

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:)([^@\s/]*)@/gi;
/** A password-like key, its separator, then a quoted or bare value. */
const KEY_VALUE = /(\b[a-z_]*(?:pass(?:word|wd)?|pwd)\b["']?\s*[=:]\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,;&)}\]"']+)/gi;

function maskValue(v: string): string {
  if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) return `"${MASK}"`;
  if (v.startsWith("'") && v.endsWith("'") && v.length >= 2) return `'${MASK}'`;
  return MASK;
}

function replaceAll(text: string, needle: string): string {
  return text.includes(needle) ? text.split(needle).join(MASK) : text;
}

/**
 * Scrub one text from outside (Kong's output, a Postgres error) as it comes in: rules 1 to 4.
 * `wholeText: false` (the safety net over our own fields, see scrubDeep) leaves out rule 4, so
 * that a field we wrote, such as `"outcome":"ok"`, is never masked by a password "ok".
 */
export function scrub(text: string, wholeText = true): string {
  if (text === '') return text;
  // rule 3 first: a strong secret is masked whole before a context rule could cut it at a quote
  const list = [...registered].sort((a, b) => b.length - a.length);
  let out = text;
  for (const s of list) {
    if (s.length < STRONG_MIN) continue;
    for (const form of encodings(s)) out = replaceAll(out, form);
  }
  out = out.replace(URL_USERINFO, (_m, head: string) => `${head}${MASK}@`);
  out = out.replace(
    KEY_VALUE,
    (_m, head: string, value: string) => head + (value === MASK || value === `"${MASK}"` || value === `'${MASK}'` ? value : maskValue(value)),
  );
  // rule 4: a whole text, or a whole line, that is exactly a secret
  if (wholeText && list.length > 0) {
    const exact = new Set(list);
    if (exact.has(out) || exact.has(out.trim())) return MASK;
    if (out.includes('\n')) {
      out = out
        .split('\n')
        .map((line) => (exact.has(line.replace(/\r$/, '')) || exact.has(line.trim()) ? MASK : line))
        .join('\n');
    }
  }
  return out;
}

/**
 * The safety net over fields we build (log fields, summary, history rows): rules 1 to 3 on every
 * string inside a value (objects and arrays are copied; other values kept).
 */
export function scrubDeep<T>(value: T): T {
  if (typeof value === 'string') return scrub(value, false) as T;
  if (Array.isArray(value)) return value.map((v) => scrubDeep(v)) as T;
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = scrubDeep(v);
    return out as T;
  }
  return value;
}
