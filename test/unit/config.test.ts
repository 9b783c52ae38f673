import { describe, expect, it } from 'vitest';
import { loadKongConfig, parseDuration, parseKongConf, parseSettings } from '../../src/config.js';

const files = (m: Record<string, string>) => ({ exists: (p: string) => p in m, read: (p: string) => m[p] ?? '' });

describe('Kong configuration', () => {
  it("uses Kong's defaults", () => {
    const k = loadKongConfig({}, undefined, files({}));
    expect(k).toMatchObject({ database: 'postgres', host: '127.0.0.1', port: 5432, user: 'kong', db: 'kong', timeoutMs: 5000, ssl: false, sslVerify: false, schema: undefined });
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
  it('KONG_PG_PASSWORD_FILE wins and loses its trailing newline', () => {
    const k = loadKongConfig({ KONG_PG_PASSWORD: 'x', KONG_PG_PASSWORD_FILE: '/pw' }, undefined, files({ '/pw': 'from-file\n' }));
    expect(k.password).toBe('from-file');
  });
  it.each([
    [{ KONG_PG_PORT: 'abc' }, /KONG_PG_PORT="abc" is not a number/],
    [{ KONG_PG_PORT: '70000' }, /KONG_PG_PORT=70000 is out of range/],
    [{ KONG_DATABASE: 'mysql' }, /KONG_DATABASE="mysql" is not supported/],
    [{ KONG_PG_SSL: 'maybe' }, /KONG_PG_SSL="maybe" is not a boolean/],
    [{ KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: '/nope.pem' }, /KONG_LUA_SSL_TRUSTED_CERTIFICATE: CA file \/nope.pem not found/],
    [{ KONG_PG_PASSWORD_FILE: '/missing' }, /KONG_PG_PASSWORD_FILE=\/missing: file not found/],
    [{ KONG_CONF: '/missing.conf' }, /kong.conf not found at \/missing.conf \(from KONG_CONF\)/],
  ])('%j → config error naming the variable', (env, re) => {
    expect(() => loadKongConfig(env, undefined, files({}))).toThrow(re);
  });
  it('a broken kong.conf line names file and line', () => {
    expect(() => parseKongConf('pg_host = a\nthis is not valid\n', '/k.conf')).toThrow(/\/k.conf:2: expected "key = value"/);
  });
  it('DB-less needs no Postgres settings', () => {
    expect(loadKongConfig({ KONG_DATABASE: 'off', KONG_PG_HOST: '' }, undefined, files({})).database).toBe('off');
  });
});

describe('our settings', () => {
  it('defaults', () => {
    const s = parseSettings(['migrate'], {});
    expect(s).toMatchObject({ command: 'migrate', deadlineMs: 600_000, lockTimeoutMs: 600_000, finish: 'auto', logFormat: 'text', dryRun: false, kongBin: 'kong' });
  });
  it('flags win over KONG_DB_INIT_* variables', () => {
    const s = parseSettings(['migrate', '--finish=never', '--deadline', '30s'], { KONG_DB_INIT_FINISH: 'always', KONG_DB_INIT_DEADLINE: '5m', KONG_DB_INIT_KONG_BIN: '/opt/kong' });
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
