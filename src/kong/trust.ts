/**
 * Which certificates Kong trusts for Postgres TLS: `lua_ssl_trusted_certificate` as Kong 3.7.1
 * reads it, including `system` (the operating system's bundle, from the same files Kong tries).
 */
import { X509Certificate } from 'node:crypto';
import { configError } from '../errors.js';
import type { FileReader } from './config.js';

/**
 * The files Kong 3.7.1 reads for `lua_ssl_trusted_certificate = system` (kong/tools/system.lua
 * `get_system_trusted_certs_filepath`): the first that exists is the operating system's bundle.
 */
export const SYSTEM_CA_PATHS: readonly string[] = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu (the kong image), Gentoo
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL 6
  '/etc/ssl/ca-bundle.pem', // openSUSE
  '/etc/pki/tls/cacert.pem', // OpenELEC
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', // CentOS, RHEL 7+ (ubi)
  '/etc/ssl/cert.pem', // Alpine, OpenBSD
];

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Certificates given inline, as Kong allows when the entry is no file: PEM text, or base64 (or base64url) of PEM or DER. */
function inlineCertificates(value: string): string[] | undefined {
  const asPem = (text: string) => {
    const certs = text.match(PEM_CERT) ?? [];
    try {
      return certs.length > 0 ? certs.map((c) => new X509Certificate(c).toString()) : undefined;
    } catch {
      return undefined;
    }
  };
  const pem = asPem(value);
  if (pem) return pem;
  const compact = value.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(compact)) return undefined;
  const bytes = Buffer.from(compact.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  const decodedPem = asPem(bytes.toString('latin1'));
  if (decodedPem) return decodedPem;
  try {
    return [new X509Certificate(bytes).toString()];
  } catch {
    return undefined;
  }
}

/**
 * lua_ssl_trusted_certificate as Kong 3.7.1 reads it (kong/conf_loader/parse.lua): a comma-separated
 * list; `system` is the first of `systemPaths` that exists (none: Kong drops the entry); any other
 * entry is a file, or else the certificate itself (PEM, or base64 of PEM/DER). Kong concatenates
 * them all (`.ca_combined`): so do we. Nothing left to trust is a configuration error, since Kong
 * would then verify against nothing.
 */
export function trustedCertificates(value: string, setting: string, files: FileReader, systemPaths: readonly string[]): string[] {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const pems: string[] = [];
  let systemMissing = false;
  for (const e of entries) {
    if (e === 'system') {
      const bundle = systemPaths.find((p) => files.exists(p));
      if (bundle) pems.push(readPem(files, bundle, `${setting} (system)`, 'system CA bundle'));
      else systemMissing = true;
    } else if (files.exists(e)) {
      pems.push(readPem(files, e, setting, 'CA'));
    } else {
      const inline = inlineCertificates(e);
      if (!inline)
        throw configError(
          `${setting}: CA file ${e.length > 80 ? `${e.slice(0, 40)}...` : e} not found (nor is it a PEM or base64 certificate); mount the CA bundle or fix the path`,
        );
      pems.push(inline.join(''));
    }
  }
  if (pems.length === 0) {
    const why = systemMissing ? `"system" names the operating system's CA bundle, but none of ${systemPaths.join(', ')} exists` : 'it names no certificate';
    throw configError(
      `${setting}=${JSON.stringify(value)}: ${why}, so Kong would trust no server certificate; set it to the CA file of the Postgres server (or install the CA bundle), or set KONG_PG_SSL_VERIFY=off`,
    );
  }
  return pems;
}

export function readPem(files: FileReader, file: string, setting: string, what: string): string {
  if (!files.exists(file)) throw configError(`${setting}: ${what} file ${file} not found; mount it there or fix the path`);
  try {
    return files.read(file);
  } catch (err) {
    throw configError(
      `${setting}: cannot read ${what} file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'}); make it readable by the container's user`,
    );
  }
}
