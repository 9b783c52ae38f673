import { describe, expect, it } from 'vitest';
import { loadKongConfig, parseKongConf } from '../../src/kong/config.js';
import { parseDuration, parseSettings } from '../../src/commands/options.js';

const files = (m: Record<string, string>) => ({ exists: (p: string) => p in m, read: (p: string) => m[p] ?? '' });

describe('Kong configuration', () => {
  it("uses Kong's defaults", () => {
    const k = loadKongConfig({}, undefined, files({}));
    expect(k).toMatchObject({
      database: 'postgres',
      host: '127.0.0.1',
      port: 5432,
      user: 'kong',
      db: 'kong',
      timeoutMs: 5000,
      ssl: false,
      sslVerify: false,
      schema: undefined,
    });
  });
  it('kong.conf, then KONG_* on top; booleans only on/true', () => {
    const conf = '# comment\npg_host = db.example # trailing\npg_port=6543\npg_ssl = true\npg_password = pa\\#ss\n';
    const k = loadKongConfig({ KONG_CONF: '/k.conf', KONG_PG_PORT: '7000', KONG_PG_SSL_VERIFY: 'off' }, undefined, files({ '/k.conf': conf }));
    expect(k).toMatchObject({ host: 'db.example', port: 7000, ssl: true, sslVerify: false, password: 'pa#ss', confPath: '/k.conf', confExplicit: true });
  });
  it('reads /etc/kong/kong.conf when present', () => {
    const k = loadKongConfig({}, undefined, files({ '/etc/kong/kong.conf': 'pg_user = admin\n' }));
    expect(k.user).toBe('admin');
    expect(k.confExplicit).toBe(false);
  });
  it('KONG_PG_PASSWORD_FILE: trailing newlines go, like `$(< file)` in the Kong image; spaces and CR stay', () => {
    expect(loadKongConfig({ KONG_PG_PASSWORD_FILE: '/pw' }, undefined, files({ '/pw': 'from-file\n\n\n' })).password).toBe('from-file');
    expect(loadKongConfig({ KONG_PG_PASSWORD_FILE: '/pw' }, undefined, files({ '/pw': ' sp ace \r\n' })).password).toBe(' sp ace \r');
    expect(loadKongConfig({ KONG_PG_PASSWORD: '', KONG_PG_PASSWORD_FILE: '/pw' }, undefined, files({ '/pw': 'f' })).password).toBe('f');
  });
  it('KONG_PG_USER_FILE and KONG_PG_DATABASE_FILE too, and the Kong child gets the values', () => {
    const k = loadKongConfig({ KONG_PG_USER_FILE: '/u', KONG_PG_DATABASE_FILE: '/d' }, undefined, files({ '/u': 'admin\n', '/d': 'kongdb\n' }));
    expect(k).toMatchObject({ user: 'admin', db: 'kongdb', fromFiles: { KONG_PG_USER: 'admin', KONG_PG_DATABASE: 'kongdb' } });
  });
  it('both KONG_PG_PASSWORD and KONG_PG_PASSWORD_FILE: refused, as the Kong image refuses it', () => {
    expect(() => loadKongConfig({ KONG_PG_PASSWORD: 'x', KONG_PG_PASSWORD_FILE: '/pw' }, undefined, files({ '/pw': 'y' }))).toThrow(
      /both KONG_PG_PASSWORD and KONG_PG_PASSWORD_FILE are set, but they are exclusive.*unset one of them/,
    );
  });
  it('a broken kong.conf line that may hold a secret is not echoed', () => {
    expect(() => parseKongConf('pg_password: hunter2-secret\n', '/k.conf')).toThrow(
      /\/k.conf:1: expected "key = value", got a line starting with "pg_password" \(not shown/,
    );
    expect(() => parseKongConf('pg_password: hunter2-secret\n', '/k.conf')).not.toThrow(/hunter2/);
  });
  it.each([
    [{ KONG_PG_PORT: 'abc' }, /KONG_PG_PORT="abc" is not a number/],
    [{ KONG_PG_PORT: '70000' }, /KONG_PG_PORT=70000 is out of range/],
    [{ KONG_DATABASE: 'mysql' }, /KONG_DATABASE="mysql" is not supported/],
    [{ KONG_PG_SSL: 'maybe' }, /KONG_PG_SSL="maybe" is not a boolean/],
    [
      { KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: '/nope.pem' },
      /KONG_LUA_SSL_TRUSTED_CERTIFICATE: CA file \/nope.pem not found/,
    ],
    [{ KONG_PG_PASSWORD_FILE: '/missing' }, /KONG_PG_PASSWORD_FILE=\/missing: file not found/],
    [{ KONG_CONF: '/missing.conf' }, /kong.conf not found at \/missing.conf \(from KONG_CONF\)/],
  ])('%j → config error naming the variable', (env, re) => {
    expect(() => loadKongConfig(env, undefined, files({}))).toThrow(re);
  });
  it('a broken kong.conf line names file and line', () => {
    expect(() => parseKongConf('pg_host = a\nthis is not valid\n', '/k.conf')).toThrow(/\/k.conf:2: expected "key = value"/);
  });
  it("{vault://env/…} references in pg settings are resolved like Kong's env vault", () => {
    const env = {
      KONG_PG_PASSWORD: '{vault://env/pg-password}',
      PG_PASSWORD: 'from-vault',
      KONG_PG_USER: '{vault://env/db-creds/user}',
      DB_CREDS: '{"user":"vault_user","password":"p"}',
      KONG_PG_DATABASE: '{vault://env/name?prefix=kong-}',
      KONG_NAME: 'vaultdb',
    };
    expect(loadKongConfig(env, undefined, files({}))).toMatchObject({ password: 'from-vault', user: 'vault_user', db: 'vaultdb' });
  });
  it('vault_env_prefix (KONG_VAULT_ENV_PREFIX or kong.conf) applies unless the reference has its own prefix', () => {
    const conf = 'vault_env_prefix = secure_\npg_password = {vault://env/pg-password}\n';
    expect(loadKongConfig({ KONG_CONF: '/k.conf', SECURE_PG_PASSWORD: 's' }, undefined, files({ '/k.conf': conf })).password).toBe('s');
    expect(loadKongConfig({ KONG_VAULT_ENV_PREFIX: 'x_', KONG_PG_PASSWORD: '{vault://env/pw?prefix=y_}', Y_PW: 'y' }, undefined, files({})).password).toBe('y');
  });
  it.each([
    [
      { KONG_PG_PASSWORD: '{vault://aws/pg/password}' },
      /KONG_PG_PASSWORD \(\{vault:\/\/aws\/pg\/password\}\): vault "aws" cannot be read by kong-db-init.*\{vault:\/\/env\/NAME\}/,
    ],
    [{ KONG_PG_PASSWORD: '{vault://env/pg-password}' }, /KONG_PG_PASSWORD \(\{vault:\/\/env\/pg-password\}\): environment variable PG_PASSWORD is not set/],
    [
      { KONG_PG_PASSWORD: '{vault://env/creds/password}', CREDS: 'not json' },
      /environment variable CREDS does not hold a JSON object \(needed for the key "password"\)/,
    ],
    [{ KONG_PG_PASSWORD: '{vault://env/creds/password}', CREDS: '{"pw":"x"}' }, /the JSON object in CREDS has no field "password"/],
    [{ KONG_PG_HOST: '{vault://env/}' }, /KONG_PG_HOST \(\{vault:\/\/env\/\}\): the reference has no resource/],
    [{ KONG_PG_PASSWORD: '{vault://env/pw}', PW: 'x', KONG_VAULTS: 'off' }, /KONG_VAULTS=off turns Kong's env vault off.*add "bundled"/],
  ])('%j → config error naming the setting, never the value', (env, re) => {
    expect(() => loadKongConfig(env, undefined, files({}))).toThrow(re);
    expect(() => loadKongConfig(env, undefined, files({}))).not.toThrow(/not json|"x"/);
  });
  it('pg_ssl_required defaults to off (plain text when the server has no TLS, like Kong); on refuses', () => {
    expect(loadKongConfig({ KONG_PG_SSL: 'on' }, undefined, files({})).sslRequired).toBe(false);
    expect(loadKongConfig({ KONG_PG_SSL: 'on', KONG_PG_SSL_REQUIRED: 'on' }, undefined, files({})).sslRequired).toBe(true);
    expect(() => loadKongConfig({ KONG_PG_SSL_REQUIRED: 'yes' }, undefined, files({}))).toThrow(/KONG_PG_SSL_REQUIRED="yes" is not a boolean/);
  });
  it('pg_ssl_cert / pg_ssl_cert_key: read when pg_ssl is on, both needed, PEM checked', () => {
    const pem = {
      '/c.pem': '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n',
      '/k.pem': '-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n',
    };
    const on = { KONG_PG_SSL: 'on', KONG_PG_SSL_CERT: '/c.pem', KONG_PG_SSL_CERT_KEY: '/k.pem' };
    expect(loadKongConfig(on, undefined, files(pem))).toMatchObject({ clientCert: pem['/c.pem'], clientKey: pem['/k.pem'] });
    expect(loadKongConfig({ ...on, KONG_PG_SSL: 'off' }, undefined, files(pem)).clientCert).toBeUndefined();
    expect(() => loadKongConfig({ ...on, KONG_PG_SSL_CERT_KEY: '' }, undefined, files(pem))).toThrow(/KONG_PG_SSL_CERT is set but pg_ssl_cert_key is not/);
    expect(() => loadKongConfig({ ...on, KONG_PG_SSL_CERT: '' }, undefined, files(pem))).toThrow(/KONG_PG_SSL_CERT_KEY is set but pg_ssl_cert is not/);
    expect(() => loadKongConfig({ ...on, KONG_PG_SSL_CERT: '/nope.pem' }, undefined, files(pem))).toThrow(
      /KONG_PG_SSL_CERT: client certificate file \/nope.pem not found/,
    );
    expect(() => loadKongConfig({ ...on, KONG_PG_SSL_CERT_KEY: '/c.pem' }, undefined, files(pem))).toThrow(
      /KONG_PG_SSL_CERT_KEY: \/c.pem is not a PEM private key/,
    );
  });
  it('DB-less needs no Postgres settings', () => {
    expect(loadKongConfig({ KONG_DATABASE: 'off', KONG_PG_HOST: '' }, undefined, files({})).database).toBe('off');
  });
});

describe('our settings', () => {
  it('defaults', () => {
    const s = parseSettings(['migrate'], {});
    expect(s).toMatchObject({
      command: 'migrate',
      deadlineMs: 600_000,
      lockTimeoutMs: 600_000,
      finish: 'auto',
      logFormat: 'text',
      dryRun: false,
      kongBin: 'kong',
    });
  });
  it('flags win over KONG_DB_INIT_* variables', () => {
    const s = parseSettings(['migrate', '--finish=never', '--deadline', '30s'], {
      KONG_DB_INIT_FINISH: 'always',
      KONG_DB_INIT_DEADLINE: '5m',
      KONG_DB_INIT_KONG_BIN: '/opt/kong',
    });
    expect(s).toMatchObject({ finish: 'never', deadlineMs: 30_000, kongBin: '/opt/kong' });
  });
  it.each([
    [['migrate', '--nope'], /unknown option --nope/],
    [['migrate', '--finish', 'sometimes'], /--finish="sometimes" is invalid; use one of auto, always, never/],
    [['migrate', '--deadline', '-5'], /--deadline="-5" is not a duration/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['status', '--dry-run'], /does not apply to "status"/],
  ])('%j → usage error', (argv, re) => {
    expect(() => parseSettings(argv, {})).toThrow(re);
  });
  it('durations', () => {
    expect([parseDuration('90', 'x'), parseDuration('500ms', 'x'), parseDuration('5m', 'x'), parseDuration('1.5s', 'x')]).toEqual([90_000, 500, 300_000, 1500]);
  });
});
