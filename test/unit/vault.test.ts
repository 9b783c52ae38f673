import { describe, expect, it } from 'vitest';
import { envVaultVariable, isReference, parseReference, resolveReference } from '../../src/kong/vault.js';

describe("Kong's vault references (kong/pdk/vault.lua parse_reference)", () => {
  it('recognises only {vault://…}', () => {
    expect([isReference('{vault://env/x}'), isReference('vault://env/x'), isReference('{vault:/env/x}'), isReference('kong')]).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });
  it.each([
    ['{vault://env/pg-password}', { name: 'env', resource: 'pg-password', key: undefined, config: {}, version: undefined }],
    ['{vault://env/creds/password}', { name: 'env', resource: 'creds', key: 'password' }],
    ['{vault://env/a/b/c}', { resource: 'a/b', key: 'c' }],
    ['{vault://env/creds/}', { resource: 'creds', key: undefined }],
    ['{vault://env/pw?prefix=kong_#2}', { resource: 'pw', config: { prefix: 'kong_' }, version: 2 }],
    ['{vault://aws/my%20secret/key}', { name: 'aws', resource: 'my secret', key: 'key' }],
  ])('%s', (ref, want) => {
    expect(parseReference(ref, 'KONG_PG_PASSWORD')).toMatchObject(want);
  });
  it.each(['{vault://env}', '{vault:///x}', '{vault://env/pw#latest}'])('%s is refused with the setting named', (ref) => {
    expect(() => parseReference(ref, 'KONG_PG_PASSWORD')).toThrow(/^KONG_PG_PASSWORD \(/);
  });
});

describe("Kong's env vault (kong/vaults/env/init.lua get)", () => {
  it('prefix .. resource, "-" → "_", upper case; version 2 reads *_PREVIOUS', () => {
    expect(envVaultVariable('pg-password', undefined, undefined)).toBe('PG_PASSWORD');
    expect(envVaultVariable('pg-password', 'my-app-', 1)).toBe('MY_APP_PG_PASSWORD');
    expect(envVaultVariable('pw', undefined, 2)).toBe('PW_PREVIOUS');
  });
  it('reads the variable, or a string field of the JSON object it holds; an empty value is a value', () => {
    expect(resolveReference('{vault://env/pw}', 'S', { PW: 'x' }, undefined)).toBe('x');
    expect(resolveReference('{vault://env/pw}', 'S', { PW: '' }, undefined)).toBe('');
    expect(resolveReference('{vault://env/creds/password}', 'S', { CREDS: '{"password":"p"}' }, undefined)).toBe('p');
    expect(resolveReference('{vault://env/pw}', 'S', { KONG_PW: 'k' }, 'kong_')).toBe('k');
  });
  it.each([
    ['{vault://env/creds/password}', { CREDS: '{"password":5}' }, /field "password" of the JSON object in CREDS is a number, not a string/],
    ['{vault://env/creds/password}', { CREDS: '["password"]' }, /CREDS does not hold a JSON object/],
    ['{vault://env/pw?prefix=1bad}', { '1BADPW': 'x' }, /env vault prefix "1bad" is invalid/],
    ['{vault://hcv/kong/pw}', {}, /vault "hcv" cannot be read by kong-db-init/],
  ])('%s → clear error', (ref, env, re) => {
    expect(() => resolveReference(ref, 'KONG_PG_PASSWORD', env, undefined)).toThrow(re);
  });
});
