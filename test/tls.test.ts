/** KONG_PG_SSL / KONG_PG_SSL_VERIFY / KONG_LUA_SSL_TRUSTED_CERTIFICATE apply to our own connections. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKongConfig } from '../src/kong/config.js';
import { realFiles } from '../src/kong/files.js';
import { classify, clientConfig, closeClient, connectChecked } from '../src/postgres/connect.js';
import { embeddedServer, type Server } from './helpers/embedded.js';
import { adminQuery, createDb, KONG_PASSWORD, listCode, runCli, until, type TestDb } from './helpers/harness.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const skip = !hasOpenssl();
if (skip) console.warn('skipping the TLS suite: openssl not found');

describe.skipIf(skip)('TLS to Postgres', () => {
  let server: Server;
  let dir: string;
  let db: TestDb;
  const ssl = (c: string[]) => execFileSync('openssl', c, { cwd: dir, stdio: 'ignore' });
  /** pg_hba.conf: password logins, and for one database also a client certificate signed by our CA. */
  const writeHba = (mtlsDb: string | undefined) =>
    fs.writeFileSync(
      path.join(dir, 'hba.conf'),
      [
        mtlsDb ? `hostssl ${mtlsDb} all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca` : '',
        'local all all scram-sha-256',
        'host all all 127.0.0.1/32 scram-sha-256',
        'host all all ::1/128 scram-sha-256',
      ].join('\n') + '\n',
      { mode: 0o644 },
    );

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-tls-'));
    fs.chmodSync(dir, 0o755);
    ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=kdi test CA']);
    ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other-ca.key', '-out', 'other-ca.pem', '-days', '2', '-subj', '/CN=another CA']);
    ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
    fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl([
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '2',
      '-extfile',
      'san.ext',
    ]);
    ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=kdi-client']);
    ssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '2']);
    writeHba(undefined);
    server = await embeddedServer({
      password: KONG_PASSWORD,
      started: false,
      flags: [
        '-c',
        'ssl=on',
        '-c',
        `ssl_cert_file=${dir}/server.pem`,
        '-c',
        `ssl_key_file=${dir}/server.key`,
        '-c',
        `ssl_ca_file=${dir}/ca.pem`,
        '-c',
        `hba_file=${dir}/hba.conf`,
      ],
    });
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    for (const f of ['server.key', 'server.pem']) fs.chownSync(path.join(dir, f), uid, 0);
    fs.chmodSync(path.join(dir, 'server.key'), 0o600);
    await server.start();
    const target = { host: '127.0.0.1', port: server.port, user: 'postgres', password: KONG_PASSWORD };
    db = await createDb(target);
    expect((await adminQuery<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()', [], 'postgres', target)).rows).toHaveLength(1);
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it('verify on with the right CA file: migrates over TLS', async () => {
    const env = db.env({ KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: `${dir}/ca.pem` });
    const r = await runCli(['migrate'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
  });

  it('verify on with a CA that did not sign the server: fails fast (exit 10) naming the trust setting', async () => {
    const r = await runCli(['migrate'], db.env({ KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: `${dir}/other-ca.pem` }));
    expect(r.exitCode).toBe(10);
    expect(r.stderr).toMatch(/TLS: .*KONG_LUA_SSL_TRUSTED_CERTIFICATE/);
    expect(r.durationMs).toBeLessThan(3000);
  });

  it('pg_ssl_cert / pg_ssl_cert_key: our sessions present the client certificate to a server that requires one', async () => {
    const target = { host: '127.0.0.1', port: server.port, user: 'postgres', password: KONG_PASSWORD };
    const mtls = await createDb(target);
    writeHba(mtls.name);
    await adminQuery('SELECT pg_reload_conf()', [], 'postgres', target);
    await until(
      async () => (await adminQuery('SELECT 1 FROM pg_hba_file_rules WHERE $1 = ANY(database)', [mtls.name], 'postgres', target)).rows.length > 0,
      10_000,
      'the new pg_hba.conf',
    );
    const tlsEnv = { KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: `${dir}/ca.pem` };
    const without = await runCli(['migrate', '--dry-run'], mtls.env(tlsEnv));
    expect(without.exitCode, without.stderr).toBe(10);
    expect(without.stderr).toMatch(/certificate/);
    const withCert = await runCli(
      ['migrate', '--dry-run'],
      mtls.env({ ...tlsEnv, KONG_PG_SSL_CERT: `${dir}/client.pem`, KONG_PG_SSL_CERT_KEY: `${dir}/client.key` }),
    );
    expect(withCert.exitCode, withCert.stderr).toBe(0);
    expect(withCert.stderr).toMatch(/dry run/);
  });

  it("`system` trusts the operating system's bundle as Kong does: a private CA in the image's trust store works, alone or with `system,/path/extra.pem`", async () => {
    // the image's trust store: public roots plus the private CA (update-ca-certificates' output), at the
    // second of Kong's system paths (the first does not exist), and one without the private CA
    const trustStore = path.join(dir, 'ca-certificates.crt');
    fs.writeFileSync(trustStore, `${tls.rootCertificates.join('\n')}\n${fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8')}`);
    const publicOnly = path.join(dir, 'public-only.crt');
    fs.writeFileSync(publicOnly, `${tls.rootCertificates.join('\n')}\n`);
    const connect = async (env: Record<string, string>, systemCaPaths: string[]) => {
      const k = loadKongConfig({ ...db.env(), KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_PG_SSL_REQUIRED: 'on', ...env }, undefined, realFiles, {
        systemCaPaths,
      });
      const c = await connectChecked(clientConfig(k));
      try {
        return (await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0]?.ssl;
      } finally {
        await closeClient(c);
      }
    };
    const missing = path.join(dir, 'no-such-bundle.crt');
    expect(await connect({}, [missing, trustStore])).toBe(true); // lua_ssl_trusted_certificate defaults to `system`
    expect(await connect({ KONG_LUA_SSL_TRUSTED_CERTIFICATE: 'system' }, [missing, trustStore])).toBe(true);
    expect(await connect({ KONG_LUA_SSL_TRUSTED_CERTIFICATE: `system,${dir}/ca.pem` }, [publicOnly])).toBe(true);
    expect(await connect({ KONG_LUA_SSL_TRUSTED_CERTIFICATE: `${dir}/other-ca.pem,system` }, [trustStore])).toBe(true);
    // the operating system's bundle without the private CA: refused, as Kong would refuse it
    const refused = await connect({ KONG_LUA_SSL_TRUSTED_CERTIFICATE: 'system' }, [publicOnly]).catch((e: unknown) => e);
    expect(classify(refused, { host: '127.0.0.1', port: server.port, db: db.name, user: db.user, ssl: true, sslVerify: true })).toMatchObject({
      kind: 'fatal',
      reason: expect.stringMatching(/^TLS: /),
    });
  });

  it('ssl on, verify off: connects without checking the certificate', async () => {
    const r = await runCli(['status'], db.env({ KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'off' }));
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('pg_ssl_required (the test server has no TLS)', () => {
  it('pg_ssl=on alone: plain text when the server has no TLS, as Kong (pgmoon) does; pg_ssl_required=on refuses (exit 10)', async () => {
    const db = await createDb();
    const preferred = await runCli(['migrate', '--dry-run'], db.env({ KONG_PG_SSL: 'on' }));
    expect(preferred.exitCode, preferred.stderr).toBe(0);
    const required = await runCli(['migrate', '--dry-run'], db.env({ KONG_PG_SSL: 'on', KONG_PG_SSL_REQUIRED: 'on' }));
    expect(required.exitCode).toBe(10);
    expect(required.stderr).toMatch(/the server does not support SSL connections; fix: .*KONG_PG_SSL_REQUIRED=off/);
  });
});
