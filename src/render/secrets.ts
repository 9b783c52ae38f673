/**
 * Literal secrets in rendered manifests. A values overlay is a file users commit, so `values`
 * never writes a literal secret into it (`literalSecrets` finds them in the overlay data, by
 * name); the post-renderer copies env into manifests that Helm applies (never committed), but no
 * message of ours ever shows such a value (`scrubSecretValues`, applied to every error text).
 */

/** Names whose value is a secret: passwords, tokens, keys, credentials, Kong's license and session/auth configs. */
const SECRET_NAME =
  /PASSW(OR)?D|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)(API_?)?KEY(S)?($|_)|APIKEY|LICENSE_DATA|SESSION_CONF|AUTH_CONF|(^|_)AUTH_HEADER/i;
/** Names that hold where the secret is, not the secret (a *_FILE of docker-kong's file_env, a *_PATH). */
const POINTER_NAME = /_(FILE|PATH|DIR)$/i;
/** Names whose value is conventionally a file path (certificate keys: KONG_SSL_CERT_KEY=/etc/secrets/...). */
const PATH_NAME = /(^|_)(CERT_)?KEY$/i;
const STRONG_SECRET = /PASSW(OR)?D|PASSPHRASE|SECRET|TOKEN|CREDENTIAL/i;

export function secretLikeName(name: string): boolean {
  return SECRET_NAME.test(name) && !POINTER_NAME.test(name);
}

/** Whether `value` of env `name` is a literal secret (not empty, not a vault reference, not a key file path). */
export function isLiteralSecret(name: string, value: unknown): value is string {
  if (typeof value !== 'string' || value === '' || !secretLikeName(name)) return false;
  if (/^\{vault:\/\/[^}]+\}$/.test(value.trim())) return false; // a reference, resolved by Kong at run time
  if (PATH_NAME.test(name) && !STRONG_SECRET.test(name) && /^\/[^\s]*$/.test(value)) return false;
  return true;
}

export interface LiteralSecret {
  /** Where: e.g. `deployment.initContainers[kong-db-init].env`. */
  where: string;
  /** The variable (or Secret) name; never the value. */
  name: string;
}

type Obj = Record<string, unknown>;

/** Every literal secret in a values overlay (env entries with a literal `value`, Secrets with data). */
export function literalSecrets(data: unknown): LiteralSecret[] {
  const out: LiteralSecret[] = [];
  const walk = (n: unknown, at: string): void => {
    if (Array.isArray(n)) {
      n.forEach((x, i) => {
        walk(x, `${at}[${typeof (x as Obj)?.name === 'string' ? (x as Obj).name : i}]`);
      });
      return;
    }
    if (!n || typeof n !== 'object') return;
    const o = n as Obj;
    if (o.kind === 'Secret' && ((o.data && Object.keys(o.data).length) || (o.stringData && Object.keys(o.stringData).length))) {
      out.push({ where: at, name: `Secret/${String((o.metadata as Obj | undefined)?.name ?? '?')}` });
    }
    for (const [k, v] of Object.entries(o)) {
      if (k === 'env' && Array.isArray(v)) {
        for (const e of v as Obj[])
          if (e && typeof e.name === 'string' && isLiteralSecret(e.name, e.value)) out.push({ where: `${at}.env`.replace(/^\./, ''), name: e.name });
      } else walk(v, `${at}.${k}`.replace(/^\./, ''));
    }
  };
  walk(data, '');
  return out;
}

/** The chart's values key for a `KONG_*` variable (`env.pg_password` for KONG_PG_PASSWORD), if it is one. */
export function chartEnvKey(name: string): string | undefined {
  return /^KONG_[A-Z0-9_]+$/.test(name) ? `env.${name.slice(5).toLowerCase()}` : undefined;
}

/**
 * Literal secret values in raw manifest text, found without parsing (the text may be malformed):
 * `- name: X` followed by `value: Y` (block style, either order) and `{name: X, value: Y}` (flow).
 */
export function secretValuesInText(text: string): string[] {
  const found = new Set<string>();
  const unquote = (v: string) => v.trim().replace(/^(["'])(.*)\1$/, '$2');
  const block = /^(\s*)-\s+(name|value):\s*(.*?)\s*\r?\n\1\s\s(name|value):\s*(.*?)\s*$/gm;
  for (const m of text.matchAll(block)) {
    if (m[2] === m[4]) continue;
    const [name, value] = m[2] === 'name' ? [unquote(m[3]!), unquote(m[5]!)] : [unquote(m[5]!), unquote(m[3]!)];
    if (isLiteralSecret(name, value)) found.add(value);
  }
  for (const m of text.matchAll(/\{\s*name:\s*([^,}]+?)\s*,\s*value:\s*([^}]*?)\s*\}/g)) {
    const [name, value] = [unquote(m[1]!), unquote(m[2]!)];
    if (isLiteralSecret(name, value)) found.add(value);
  }
  return [...found].filter((v) => v.length >= 3).sort((a, b) => b.length - a.length);
}

/** `message` with every literal secret value of `text` replaced by `<redacted>`. */
export function scrubSecretValues(message: string, text: string | undefined): string {
  if (!text) return message;
  let out = message;
  for (const v of secretValuesInText(text)) out = out.split(v).join('<redacted>');
  return out;
}
