/**
 * lua_ssl_trusted_certificate as Kong 3.7.1 reads it: `system` is the operating system's bundle
 * (the first of kong/tools/system.lua's paths that exists), combined with files and inline
 * certificates; our sessions trust exactly that, never Node's bundled roots.
 */
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { loadKongConfig } from '../../src/kong/config.js';
import { SYSTEM_CA_PATHS, trustedCertificates } from '../../src/kong/trust.js';
import { clientConfig } from '../../src/postgres/connect.js';
import { InitError } from '../../src/errors.js';

const files = (m: Record<string, string>) => ({ exists: (p: string) => p in m, read: (p: string) => m[p] ?? '' });
/** Real certificates to stand for CAs (Node's bundled roots): no openssl needed. */
const [CERT_A, CERT_B] = [tls.rootCertificates[0]!, tls.rootCertificates[1]!];
const PRIVATE_CA = `# a private CA added to the image's trust store\n${CERT_B}\n`;
const BUNDLE = `${CERT_A}\n${PRIVATE_CA}`;
const SYSTEM = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];
const VERIFY = { KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on' };

describe('lua_ssl_trusted_certificate', () => {
  it("`system` paths are Kong 3.7.1's, in its order", () => {
    expect(SYSTEM_CA_PATHS).toEqual([
      '/etc/ssl/certs/ca-certificates.crt',
      '/etc/pki/tls/certs/ca-bundle.crt',
      '/etc/ssl/ca-bundle.pem',
      '/etc/pki/tls/cacert.pem',
      '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem',
      '/etc/ssl/cert.pem',
    ]);
  });

  it("`system` (Kong's default) reads the operating system's bundle, the first that exists, with a private CA in it", () => {
    const fsys = files({ [SYSTEM[1]!]: BUNDLE, '/etc/ssl/cert.pem': CERT_A });
    const k = loadKongConfig(VERIFY, undefined, fsys, { systemCaPaths: [...SYSTEM, '/etc/ssl/cert.pem'] });
    expect(k.ca).toEqual([BUNDLE]);
    expect(loadKongConfig({ ...VERIFY, KONG_LUA_SSL_TRUSTED_CERTIFICATE: 'system' }, undefined, fsys, { systemCaPaths: SYSTEM }).ca).toEqual([BUNDLE]);
    // and the pg options carry exactly that: the private CA, not Node's bundled roots in its place
    const ssl = clientConfig(k).ssl as tls.ConnectionOptions;
    expect(ssl.ca).toEqual([BUNDLE]);
    expect(String(ssl.ca)).toContain(CERT_B);
    expect(ssl.rejectUnauthorized).toBe(true);
  });

  it('combinations Kong allows: `system,/path/extra.pem`, files, inline PEM, base64 of PEM or DER', () => {
    const fsys = files({ [SYSTEM[0]!]: CERT_A, '/extra.pem': CERT_B });
    const t = (v: string) => trustedCertificates(v, 'KONG_LUA_SSL_TRUSTED_CERTIFICATE', fsys, SYSTEM);
    expect(t('system,/extra.pem')).toEqual([CERT_A, CERT_B]);
    expect(t(' /extra.pem , system ')).toEqual([CERT_B, CERT_A]);
    expect(t('/extra.pem')).toEqual([CERT_B]);
    const pem = new X509Certificate(CERT_B).toString();
    expect(t(`system,${CERT_B}`)).toEqual([CERT_A, pem]);
    expect(t(Buffer.from(CERT_B).toString('base64'))).toEqual([pem]);
    expect(t(new X509Certificate(CERT_B).raw.toString('base64url'))).toEqual([pem]);
    expect(loadKongConfig({ ...VERIFY, KONG_LUA_SSL_TRUSTED_CERTIFICATE: 'system,/extra.pem' }, undefined, fsys, { systemCaPaths: SYSTEM }).ca).toEqual([
      CERT_A,
      CERT_B,
    ]);
  });

  it('no system bundle: Kong drops `system` (other entries stay); nothing left to trust is exit 2 naming the paths', () => {
    const fsys = files({ '/extra.pem': CERT_B });
    expect(trustedCertificates('system,/extra.pem', 'S', fsys, SYSTEM)).toEqual([CERT_B]);
    let err: unknown;
    try {
      loadKongConfig(VERIFY, undefined, fsys, { systemCaPaths: SYSTEM });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InitError);
    expect((err as InitError).exitCode).toBe(2);
    expect((err as Error).message).toBe(
      'default lua_ssl_trusted_certificate="system": "system" names the operating system\'s CA bundle, but none of /etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt exists, so Kong would trust no server certificate; set it to the CA file of the Postgres server (or install the CA bundle), or set KONG_PG_SSL_VERIFY=off',
    );
  });

  it('a missing file that is no certificate either: the same message as before', () => {
    expect(() => loadKongConfig({ ...VERIFY, KONG_LUA_SSL_TRUSTED_CERTIFICATE: '/nope.pem' }, undefined, files({}), { systemCaPaths: SYSTEM })).toThrow(
      /KONG_LUA_SSL_TRUSTED_CERTIFICATE: CA file \/nope.pem not found/,
    );
    expect(() => trustedCertificates('/etc/ssl/ca', 'S', files({}), SYSTEM)).toThrow(/CA file \/etc\/ssl\/ca not found/);
  });

  it('read only when verifying', () => {
    const none = files({});
    expect(loadKongConfig({ KONG_PG_SSL: 'on' }, undefined, none, { systemCaPaths: SYSTEM }).ca).toBeUndefined();
    expect(loadKongConfig({ KONG_PG_SSL_VERIFY: 'on' }, undefined, none, { systemCaPaths: SYSTEM }).ca).toBeUndefined();
  });
});
