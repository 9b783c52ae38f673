/**
 * Kong's `{vault://…}` references in its own settings, resolved as Kong 3.7.1 resolves them
 * (kong/pdk/vault.lua `parse_reference`, kong/vaults/env/init.lua `get`), for the one vault
 * that Kong's open-source CLI can read without a database: the built-in `env` vault.
 *
 *   {vault://env/pg-password}            → $PG_PASSWORD  (prefix .. resource, "-" → "_", upper case)
 *   {vault://env/pg-password?prefix=kong-} → $KONG_PG_PASSWORD
 *   {vault://env/db-creds/password}      → JSON object in $DB_CREDS, its string field "password"
 *   {vault://env/pg-password#2}          → $PG_PASSWORD_PREVIOUS
 * The prefix comes from the reference's `?prefix=`, else from `vault_env_prefix`
 * (KONG_VAULT_ENV_PREFIX or kong.conf). Pure functions; the environment is passed in. Errors
 * name the setting and the variable, never a value.
 */
import { configError } from '../errors.js';

export type Env = Record<string, string | undefined>;

export interface VaultReference {
  name: string;
  resource: string;
  key: string | undefined;
  config: Record<string, string>;
  version: number | undefined;
}

/** Kong's `is_reference`: starts with `{vault://`, ends with `}`. */
export function isReference(value: string | undefined): value is string {
  return typeof value === 'string' && value.startsWith('{vault://') && value.endsWith('}');
}

function unescapeValue(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** Parse a reference like Kong's `parse_reference`; the message says what is wrong with it. */
export function parseReference(ref: string, setting: string): VaultReference {
  const bad = (why: string) => configError(`${setting} (${ref}): ${why}; write it as {vault://env/NAME} or {vault://env/NAME/KEY}`);
  if (!isReference(ref)) throw bad('not a vault reference');
  const m = /^vault:\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/.exec(ref.slice(1, -1));
  if (!m) throw bad('the reference is not a URL');
  const [, name = '', path = '', query, fragment] = m;
  if (name === '') throw bad('the reference names no vault');
  if (path === '' || path === '/') throw bad('the reference has no resource (the variable name)');
  let version: number | undefined;
  if (fragment !== undefined) {
    if (!/^\d+$/.test(fragment)) throw bad(`version "#${fragment}" is not a number`);
    version = Number(fragment);
  }
  const parts = path.slice(1).split('/');
  let resource: string;
  let key: string | undefined;
  if (parts.length === 1) resource = unescapeValue(parts[0]!);
  else {
    resource = unescapeValue(parts.slice(0, -1).join('/'));
    const last = parts[parts.length - 1]!;
    if (last !== '') key = unescapeValue(last);
  }
  if (resource === '') throw bad('the reference has an empty resource');
  const config: Record<string, string> = {};
  for (const pair of (query ?? '').split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    config[unescapeValue(eq < 0 ? pair : pair.slice(0, eq))] = eq < 0 ? '' : unescapeValue(pair.slice(eq + 1));
  }
  return { name, resource, key, config, version };
}

/** The environment variable Kong's env vault reads for a resource. */
export function envVaultVariable(resource: string, prefix: string | undefined, version: number | undefined): string {
  const name = ((prefix ?? '') + resource).replace(/-/g, '_').toUpperCase();
  return version === 2 ? `${name}_PREVIOUS` : name;
}

const PREFIX_RE = /^[A-Za-z_-][A-Za-z0-9_-]*$/;

/**
 * Resolve one setting's reference. `vaultEnvPrefix` is Kong's `vault_env_prefix` setting.
 * Only the env vault is supported: other vaults (aws, gcp, hcv, azure, conjur, or a vault
 * entity) need Kong's database or Kong Enterprise, so they are refused with a clear error.
 */
export function resolveReference(ref: string, setting: string, env: Env, vaultEnvPrefix: string | undefined): string {
  const r = parseReference(ref, setting);
  if (r.name !== 'env') {
    throw configError(
      `${setting} (${ref}): vault "${r.name}" cannot be read by kong-db-init (only Kong's built-in env vault, {vault://env/NAME}); ` +
        'put the value in an environment variable (e.g. from a Kubernetes Secret) and reference it as {vault://env/NAME}, or set the value itself',
    );
  }
  const prefix = r.config.prefix ?? (vaultEnvPrefix?.trim() || undefined);
  if (prefix !== undefined && !PREFIX_RE.test(prefix)) {
    throw configError(`${setting} (${ref}): env vault prefix "${prefix}" is invalid (letters, digits, "_" and "-", not starting with a digit); fix the prefix`);
  }
  const variable = envVaultVariable(r.resource, prefix, r.version);
  const value = env[variable];
  if (value === undefined) {
    throw configError(`${setting} (${ref}): environment variable ${variable} is not set; set it (e.g. from a Secret with env or envFrom) or fix the reference`);
  }
  if (r.key === undefined) return value;
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    json = undefined;
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw configError(
      `${setting} (${ref}): environment variable ${variable} does not hold a JSON object (needed for the key "${r.key}"); store a JSON object there or drop "/${r.key}" from the reference`,
    );
  }
  const field = (json as Record<string, unknown>)[r.key];
  if (field === undefined) throw configError(`${setting} (${ref}): the JSON object in ${variable} has no field "${r.key}"; add it or fix the key`);
  if (typeof field !== 'string')
    throw configError(
      `${setting} (${ref}): field "${r.key}" of the JSON object in ${variable} is a ${field === null ? 'null' : typeof field}, not a string; store it as a string`,
    );
  return field;
}
