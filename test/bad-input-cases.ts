/**
 * The catalogue of bad input: each case is run for real by test/bad-input.test.ts, and
 * docs/errors.md is generated from this table (`npm run docs`; a test fails when it is stale).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TestDb } from './helpers/harness.js';
import { exitCodeSummary } from '../src/errors.js';

export interface BadInput {
  id: string;
  /** What the operator did wrong. */
  input: string;
  args: string[];
  env?: (db: TestDb) => Record<string, string>;
  /** Prepare files or state; may return extra env. */
  setup?: (db: TestDb) => Promise<Record<string, string> | undefined> | Record<string, string> | undefined;
  code: number;
  /** The message must match this; it names what to fix. */
  message: RegExp;
  fix: string;
}

const file = (db: TestDb, name: string, text: string, mode = 0o644) => {
  const p = path.join(db.dir, name);
  fs.writeFileSync(p, text);
  fs.chmodSync(p, mode);
  return p;
};

export const CASES: BadInput[] = [
  {
    id: 'wrong-password',
    input: 'KONG_PG_PASSWORD is wrong',
    args: ['migrate'],
    env: () => ({ KONG_PG_PASSWORD: 'wrong-pw-123' }),
    code: 10,
    message: /28P01 password authentication failed; fix: check KONG_PG_USER and KONG_PG_PASSWORD/,
    fix: 'set the password of the Kong role (KONG_PG_PASSWORD or KONG_PG_PASSWORD_FILE)',
  },
  {
    id: 'unknown-user',
    input: 'KONG_PG_USER names no role',
    args: ['migrate'],
    env: () => ({ KONG_PG_USER: 'nobody_here' }),
    code: 10,
    message: /user=nobody_here: 28P01 .*KONG_PG_USER/,
    fix: 'create the role or fix KONG_PG_USER',
  },
  {
    id: 'missing-database',
    input: 'KONG_PG_DATABASE does not exist (retried for at most 20 s, here cut by --deadline)',
    args: ['migrate', '--deadline', '3s'],
    env: () => ({ KONG_PG_DATABASE: 'nosuchdb' }),
    code: 10,
    message: /database "nosuchdb" does not exist; fix: create the database \(CREATE DATABASE nosuchdb/,
    fix: 'create the database or fix KONG_PG_DATABASE',
  },
  {
    id: 'unreachable-port',
    input: 'nothing listens on KONG_PG_PORT (until the deadline)',
    args: ['migrate', '--deadline', '1500ms'],
    env: () => ({ KONG_PG_PORT: '1' }),
    code: 11,
    message: /deadline reached after \d+ attempts .* port=1 .*connection refused.*raise --deadline/,
    fix: 'start Postgres, fix KONG_PG_HOST/KONG_PG_PORT, or raise --deadline',
  },
  {
    id: 'unresolvable-host',
    input: 'KONG_PG_HOST does not resolve (until the deadline)',
    args: ['migrate', '--deadline', '1500ms'],
    env: () => ({ KONG_PG_HOST: 'no-such-host.invalid' }),
    code: 11,
    message: /host=no-such-host\.invalid .*not resolvable/,
    fix: 'fix KONG_PG_HOST (the Service name) or raise --deadline',
  },
  {
    id: 'port-not-a-number',
    input: 'KONG_PG_PORT=abc',
    args: ['migrate'],
    env: () => ({ KONG_PG_PORT: 'abc' }),
    code: 2,
    message: /KONG_PG_PORT="abc" is not a number/,
    fix: 'set KONG_PG_PORT to a port number',
  },
  {
    id: 'port-out-of-range',
    input: 'KONG_PG_PORT=70000',
    args: ['migrate'],
    env: () => ({ KONG_PG_PORT: '70000' }),
    code: 2,
    message: /KONG_PG_PORT=70000 is out of range/,
    fix: 'set KONG_PG_PORT between 1 and 65535',
  },
  {
    id: 'database-mysql',
    input: 'KONG_DATABASE=mysql',
    args: ['migrate'],
    env: () => ({ KONG_DATABASE: 'mysql' }),
    code: 2,
    message: /KONG_DATABASE="mysql" is not supported/,
    fix: 'use postgres (or off for DB-less)',
  },
  {
    id: 'tls-required-not-on-server',
    input: 'KONG_PG_SSL=on and KONG_PG_SSL_REQUIRED=on but the server has no TLS (without _REQUIRED, plain text is used, as Kong does)',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL: 'on', KONG_PG_SSL_REQUIRED: 'on' }),
    code: 10,
    message: /the server does not support SSL connections; fix: enable ssl on the Postgres server, or set KONG_PG_SSL_REQUIRED=off/,
    fix: 'enable TLS on Postgres, or set KONG_PG_SSL_REQUIRED=off or KONG_PG_SSL=off',
  },
  {
    id: 'ssl-required-not-boolean',
    input: 'KONG_PG_SSL_REQUIRED=yes',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL_REQUIRED: 'yes' }),
    code: 2,
    message: /KONG_PG_SSL_REQUIRED="yes" is not a boolean; use "on" or "off"/,
    fix: 'use on or off',
  },
  {
    id: 'client-cert-missing',
    input: 'KONG_PG_SSL_CERT names a missing file',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL: 'on', KONG_PG_SSL_CERT: '/nonexistent/client.pem', KONG_PG_SSL_CERT_KEY: '/nonexistent/client.key' }),
    code: 2,
    message: /KONG_PG_SSL_CERT: client certificate file \/nonexistent\/client.pem not found; mount it there or fix the path/,
    fix: 'mount the client certificate or fix the path',
  },
  {
    id: 'client-key-without-cert',
    input: 'KONG_PG_SSL_CERT_KEY without KONG_PG_SSL_CERT',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL: 'on', KONG_PG_SSL_CERT_KEY: '/nonexistent/client.key' }),
    code: 2,
    message: /KONG_PG_SSL_CERT_KEY is set but pg_ssl_cert is not; set KONG_PG_SSL_CERT/,
    fix: 'set both, or neither',
  },
  {
    id: 'client-key-not-pem',
    input: 'KONG_PG_SSL_CERT_KEY is not a PEM private key',
    args: ['migrate'],
    setup: (db) => ({
      KONG_PG_SSL: 'on',
      KONG_PG_SSL_CERT: file(db, 'client.pem', '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n'),
      KONG_PG_SSL_CERT_KEY: file(db, 'client.key', 'not a key\n'),
    }),
    code: 2,
    message: /KONG_PG_SSL_CERT_KEY: .*client.key is not a PEM private key/,
    fix: 'point it at the unencrypted PEM key',
  },
  {
    id: 'vault-other-type',
    input: 'a pg setting references a vault other than env',
    args: ['migrate'],
    env: () => ({ KONG_PG_PASSWORD: '{vault://aws/kong-db/password}' }),
    code: 2,
    message:
      /KONG_PG_PASSWORD \(\{vault:\/\/aws\/kong-db\/password\}\): vault "aws" cannot be read by kong-db-init \(only Kong's built-in env vault, \{vault:\/\/env\/NAME\}\)/,
    fix: 'put the value in an environment variable and use {vault://env/NAME}',
  },
  {
    id: 'vault-env-missing',
    input: 'a {vault://env/NAME} reference to a variable that is not set',
    args: ['migrate'],
    env: () => ({ KONG_PG_PASSWORD: '{vault://env/pg-secret}' }),
    code: 2,
    message: /KONG_PG_PASSWORD \(\{vault:\/\/env\/pg-secret\}\): environment variable PG_SECRET is not set/,
    fix: 'set the variable (from a Secret) or fix the reference',
  },
  {
    id: 'vault-json-key-missing',
    input: 'a {vault://env/NAME/KEY} reference whose JSON has no such key',
    args: ['migrate'],
    env: () => ({ KONG_PG_PASSWORD: '{vault://env/pg-creds/password}', PG_CREDS: '{"user":"kong"}' }),
    code: 2,
    message: /the JSON object in PG_CREDS has no field "password"; add it or fix the key/,
    fix: 'add the field or fix the key',
  },
  {
    id: 'vault-bad-reference',
    input: 'a vault reference without a variable name',
    args: ['migrate'],
    env: () => ({ KONG_PG_USER: '{vault://env/}' }),
    code: 2,
    message: /KONG_PG_USER \(\{vault:\/\/env\/\}\): the reference has no resource/,
    fix: 'write {vault://env/NAME}',
  },
  {
    id: 'password-and-file',
    input: 'both KONG_PG_PASSWORD and KONG_PG_PASSWORD_FILE',
    args: ['migrate'],
    setup: (db) => ({ KONG_PG_PASSWORD_FILE: file(db, 'pw', 'x\n') }),
    code: 2,
    message: /both KONG_PG_PASSWORD and KONG_PG_PASSWORD_FILE are set, but they are exclusive/,
    fix: 'unset one of them (the Kong image refuses both too)',
  },
  {
    id: 'user-file-missing',
    input: 'KONG_PG_USER_FILE points nowhere',
    args: ['migrate'],
    env: () => ({ KONG_PG_USER: '', KONG_PG_USER_FILE: '/nonexistent/user' }),
    code: 2,
    message: /KONG_PG_USER_FILE=\/nonexistent\/user: file not found/,
    fix: 'mount the secret at that path',
  },
  {
    id: 'ca-file-missing',
    input: 'KONG_LUA_SSL_TRUSTED_CERTIFICATE names a missing file',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL: 'on', KONG_PG_SSL_VERIFY: 'on', KONG_LUA_SSL_TRUSTED_CERTIFICATE: '/nonexistent/ca.pem' }),
    code: 2,
    message: /KONG_LUA_SSL_TRUSTED_CERTIFICATE: CA file \/nonexistent\/ca.pem not found/,
    fix: 'mount the CA bundle or fix the path',
  },
  {
    id: 'ssl-not-boolean',
    input: 'KONG_PG_SSL=maybe',
    args: ['migrate'],
    env: () => ({ KONG_PG_SSL: 'maybe' }),
    code: 2,
    message: /KONG_PG_SSL="maybe" is not a boolean; use "on" or "off"/,
    fix: 'use on or off',
  },
  {
    id: 'password-file-missing',
    input: 'KONG_PG_PASSWORD_FILE points nowhere',
    args: ['migrate'],
    env: () => ({ KONG_PG_PASSWORD: '', KONG_PG_PASSWORD_FILE: '/nonexistent/pw' }),
    code: 2,
    message: /KONG_PG_PASSWORD_FILE=\/nonexistent\/pw: file not found/,
    fix: 'mount the secret at that path',
  },
  {
    id: 'password-file-unreadable',
    input: 'KONG_PG_PASSWORD_FILE cannot be read (a directory)',
    args: ['migrate'],
    setup: (db) => ({ KONG_PG_PASSWORD: '', KONG_PG_PASSWORD_FILE: db.dir }),
    code: 2,
    message: /KONG_PG_PASSWORD_FILE=.*: cannot read it \(EISDIR\)/,
    fix: 'point it at a readable file',
  },
  {
    id: 'empty-host',
    input: 'KONG_PG_HOST is empty',
    args: ['migrate'],
    env: () => ({ KONG_PG_HOST: ' ' }),
    code: 2,
    message: /KONG_PG_HOST is empty/,
    fix: 'set the Postgres host',
  },
  {
    id: 'pg-timeout-not-number',
    input: 'KONG_PG_TIMEOUT=soon',
    args: ['migrate'],
    env: () => ({ KONG_PG_TIMEOUT: 'soon' }),
    code: 2,
    message: /KONG_PG_TIMEOUT="soon" is not a number/,
    fix: 'milliseconds, an integer',
  },
  {
    id: 'conf-missing',
    input: 'KONG_CONF names a missing kong.conf',
    args: ['migrate'],
    env: () => ({ KONG_CONF: '/nonexistent/kong.conf' }),
    code: 2,
    message: /kong.conf not found at \/nonexistent\/kong.conf \(from KONG_CONF\)/,
    fix: 'mount kong.conf or unset KONG_CONF',
  },
  {
    id: 'conf-broken-line',
    input: 'kong.conf has a line that is not key = value',
    args: ['migrate'],
    setup: (db) => ({ KONG_CONF: file(db, 'kong.conf', 'pg_host = 127.0.0.1\nthis line is broken\n') }),
    code: 2,
    message: /kong.conf:2: expected "key = value", got "this line is broken"/,
    fix: 'fix or remove that line',
  },
  {
    id: 'unknown-flag',
    input: 'an unknown flag',
    args: ['migrate', '--frobnicate'],
    code: 2,
    message: /unknown option --frobnicate; run "kong-db-init migrate --help" for the list/,
    fix: 'see --help',
  },
  {
    id: 'unknown-command',
    input: 'an unknown command',
    args: ['migrat'],
    code: 2,
    message: /unknown command "migrat"; use one of migrate, wait, status/,
    fix: 'use a listed command',
  },
  {
    id: 'flag-without-value',
    input: 'a flag without its value',
    args: ['migrate', '--deadline'],
    code: 2,
    message: /option --deadline needs a value/,
    fix: 'give the value',
  },
  {
    id: 'invalid-finish',
    input: 'an invalid finish policy',
    args: ['migrate', '--finish', 'sometimes'],
    code: 2,
    message: /--finish="sometimes" is invalid; use one of auto, always, never/,
    fix: 'auto, always or never',
  },
  {
    id: 'invalid-finish-env',
    input: 'KONG_DB_INIT_FINISH is invalid',
    args: ['migrate'],
    env: () => ({ KONG_DB_INIT_FINISH: 'yes' }),
    code: 2,
    message: /KONG_DB_INIT_FINISH="yes" is invalid/,
    fix: 'auto, always or never',
  },
  {
    id: 'negative-deadline',
    input: 'a negative deadline',
    args: ['migrate', '--deadline=-5s'],
    code: 2,
    message: /--deadline="-5s" is not a duration.*no negative values/,
    fix: 'a positive duration',
  },
  {
    id: 'bad-lock-timeout-env',
    input: 'KONG_DB_INIT_LOCK_TIMEOUT is not a duration',
    args: ['migrate'],
    env: () => ({ KONG_DB_INIT_LOCK_TIMEOUT: 'forever' }),
    code: 2,
    message: /KONG_DB_INIT_LOCK_TIMEOUT="forever" is not a duration/,
    fix: 'e.g. 10m',
  },
  {
    id: 'invalid-log-format',
    input: 'an invalid log format',
    args: ['migrate', '--log-format', 'xml'],
    code: 2,
    message: /--log-format="xml" is invalid; use one of text, json/,
    fix: 'text or json',
  },
  {
    id: 'bad-lock-port',
    input: '--lock-port is not a port',
    args: ['migrate', '--lock-port', 'x1'],
    code: 2,
    message: /--lock-port="x1" is not a number/,
    fix: 'a port number',
  },
  {
    id: 'flag-wrong-command',
    input: 'a flag that does not apply to the command',
    args: ['status', '--dry-run'],
    code: 2,
    message: /option --dry-run does not apply to "status"/,
    fix: 'see `kong-db-init status --help`',
  },
  {
    id: 'kong-missing',
    input: 'the Kong executable is not there',
    args: ['migrate', '--kong-bin', '/nonexistent/kong'],
    code: 2,
    message: /Kong executable "\/nonexistent\/kong" not found; set --kong-bin or KONG_DB_INIT_KONG_BIN/,
    fix: 'run inside the Kong image or set --kong-bin',
  },
  {
    id: 'kong-not-on-path',
    input: '`kong` is not on PATH',
    args: ['migrate'],
    env: () => ({ PATH: '/usr/bin:/bin' }),
    code: 2,
    message: /Kong executable "kong" not found on PATH/,
    fix: 'run inside the Kong image or set --kong-bin',
  },
  {
    id: 'kong-not-executable',
    input: 'the Kong executable is not executable',
    args: ['migrate'],
    setup: (db) => ({ KONG_DB_INIT_KONG_BIN: file(db, 'kong', '#!/bin/sh\n', 0o644) }),
    code: 2,
    message: /Kong executable ".*" is not executable \(EACCES\)/,
    fix: 'fix permissions or --kong-bin',
  },
  {
    id: 'kong-not-kong',
    input: '--kong-bin points at something that is not Kong',
    args: ['migrate', '--kong-bin', '/bin/false'],
    code: 14,
    message: /`kong migrations list` exited 1/,
    fix: 'point --kong-bin at the kong CLI',
  },
  {
    id: 'kong-migration-error',
    input: 'Kong fails with a migration error',
    args: ['migrate'],
    env: () => ({ KONG_STANDIN_FAIL: 'core/000_base' }),
    code: 14,
    message: /kong migrations bootstrap exited 1 and the schema is now "new": Error: \[PostgreSQL error\] .*failed to run migration '000_base' up/,
    fix: "read Kong's error",
  },
  {
    id: 'finish-never-refused',
    input: '--finish=never when pending migrations block new ones',
    args: ['migrate', '--finish', 'never'],
    setup: async (db) => {
      const { seed } = await import('./helpers/harness.js');
      await seed(db, 'pending+new');
      return undefined;
    },
    code: 2,
    message: /--finish=never forbids it: run `kong migrations finish`/,
    fix: 'run finish after the rollout, or --finish=auto',
  },
];

export function renderErrorsDoc(): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const rows = CASES.map(
    (c) => `| \`${c.id}\` | ${esc(c.input)} | \`kong-db-init ${esc(c.args.join(' '))}\` | ${c.code} | \`${esc(c.message.source)}\` | ${esc(c.fix)} |`,
  );
  return `# Bad input: exit codes and messages

Generated from \`test/bad-input-cases.ts\` by \`npm run docs\`; every row is run for real by
\`test/bad-input.test.ts\` (a test fails when this file is stale). Exit codes: ${exitCodeSummary()} (see the README). No message contains the password.

| case | input | command | exit | message (pattern) | fix |
|---|---|---|---|---|---|
${rows.join('\n')}
`;
}
