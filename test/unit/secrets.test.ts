import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/report/log.js';
import { addSecret, clearSecrets, encodings, MASK, scrub } from '../../src/report/secrets.js';
import { serializeSummary, type Summary } from '../../src/report/summary.js';

afterEach(() => clearSecrets());

const summary = (over: Partial<Summary> = {}): Summary => ({
  tool: 'kong-db-init',
  version: '0.1.0',
  command: 'migrate',
  outcome: 'ok',
  exit_code: 0,
  pod: 'kong-abc',
  kong_version: '3.7.1',
  actions: [{ action: 'bootstrap', ms: 12, exit: 0 }],
  wait_postgres_ms: 1,
  wait_lock_ms: 0,
  duration_ms: 20,
  started_at: '2026-01-01T00:00:00.000Z',
  ...over,
});

describe('scrub: rule 1, a password in a URL, whatever it is', () => {
  it.each([
    ['postgres://kong:kong@db:5432/kong', 'postgres://kong:***@db:5432/kong'],
    ['see postgresql://u:p%40ss@h/db now', 'see postgresql://u:***@h/db now'],
    ['http://example.com:8080/x', 'http://example.com:8080/x'],
  ])('%s', (text, want) => {
    expect(scrub(text)).toBe(want);
  });
});

describe('scrub: rule 2, the value of a password-like key, whatever it is', () => {
  it.each([
    ['host=db password=kong dbname=kong', 'host=db password=*** dbname=kong'],
    ['pg_password = 1', 'pg_password = ***'],
    ['KONG_PG_PASSWORD=x1', 'KONG_PG_PASSWORD=***'],
    ['{"password":"pa\\"ss\\\\word","user":"kong"}', '{"password":"***","user":"kong"}'],
    ["password: 'se cret'", "password: '***'"],
    ['password authentication failed for user "kong"', 'password authentication failed for user "kong"'],
  ])('%s', (text, want) => {
    expect(scrub(text)).toBe(want);
  });
});

describe('scrub: rule 3, a registered secret of 8+ characters, in every encoding', () => {
  const pw = 'pa"ss\\word';
  it.each(encodings(pw))('%s', (form) => {
    addSecret(pw);
    expect(scrub(`Kong said: ${form} (end)`)).toBe(`Kong said: ${MASK} (end)`);
  });
  it('each line of a multi-line secret, when long enough', () => {
    addSecret('first-line-secret\nsecond-line-secret');
    expect(scrub('a first-line-secret b\nsecond-line-secret')).toBe(`a ${MASK} b\n${MASK}`);
  });
});

describe('scrub: a short or common password does not blank out unrelated text', () => {
  it.each(['kong', '1', 'user', 'boot'])('%s', (pw) => {
    addSecret(pw);
    const text = '[kong migrations bootstrap] 1 migration processed for user "kong" (kong-db-init, kong_version 3.7.1, migrat)';
    expect(scrub(text)).toBe(text);
    // …but it is masked where it really appears: in a URL, after a password key, or as a whole line
    expect(scrub(`postgres://kong:${pw}@db/kong password=${pw}`)).toBe('postgres://kong:***@db/kong password=***');
    expect(scrub(`Kong echoed:\n${pw}\nend`)).toBe(`Kong echoed:\n${MASK}\nend`);
  });
  it('a vault reference is not a secret', () => {
    addSecret('{vault://env/pg-password}');
    expect(scrub('KONG_PG_PASSWORD (reference {vault://env/pg-password})')).toContain('{vault://env/pg-password}');
  });
});

describe('logger: fields are scrubbed before the line is formatted', () => {
  it.each(['json', 'text'] as const)('%s lines stay parseable, the tool name intact, no secret', (format) => {
    const pw = 'pa"ss\\word';
    addSecret(pw);
    addSecret('kong');
    const lines: string[] = [];
    const log = createLogger({ format, write: (l) => lines.push(l), now: () => new Date(0) });
    log.info(`[kong migrations bootstrap] password=${pw}`, { tool: 'kong-db-init', error: `it was ${pw}`, nested: { url: `postgres://kong:${pw}@db/kong` } });
    const out = lines.join('\n');
    for (const form of encodings(pw)) expect(out).not.toContain(form);
    expect(out).toContain('[kong migrations bootstrap] password=***');
    expect(out).toContain('kong-db-init');
    if (format === 'json')
      expect(JSON.parse(lines[0]!)).toMatchObject({ tool: 'kong-db-init', error: 'it was ***', nested: { url: 'postgres://kong:***@db/kong' } });
  });
});

describe('summary: scrubbed, then serialised, then shortened', () => {
  it.each(['kong', '1', 'pa"ss\\word', 'line-one-pw\nline-two-pw'])('password %j: valid JSON, keys intact, no leak', (pw) => {
    addSecret(pw);
    const s = summary({ outcome: 'failed', exit_code: 14, error: `Kong: password=${pw} ${pw.length >= 8 ? pw : ''} ` + 'x'.repeat(6000) });
    const out = serializeSummary(s);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(4096);
    const parsed = JSON.parse(out) as Summary;
    expect(parsed).toMatchObject({ tool: 'kong-db-init', kong_version: '3.7.1', outcome: 'failed', exit_code: 14 });
    expect(Object.keys(parsed)).toEqual(Object.keys(s));
    if (pw.length >= 8) for (const part of [pw, ...pw.split('\n')]) for (const form of encodings(part)) expect(out).not.toContain(form);
    expect(parsed.error).toMatch(/^Kong: password=\*\*\*\s/);
  });
  it('fields we wrote are never masked by a password that equals them', () => {
    for (const pw of ['ok', 'migrate', 'bootstrap', 'kong-db-init']) addSecret(pw);
    const parsed = JSON.parse(serializeSummary(summary({ actions: [{ action: 'bootstrap', ms: 1, exit: 0, note: 'Kong said bootstrap' }] })));
    expect(parsed).toMatchObject({ tool: 'kong-db-init', outcome: 'ok', command: 'migrate', actions: [{ action: 'bootstrap', note: 'Kong said ***' }] });
  });
  it('a cut never splits a surrogate pair', () => {
    const out = serializeSummary(summary({ error: '😀'.repeat(3000) }), 1000);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(1000);
    expect(JSON.parse(out).error).toMatch(/^(😀)+…$/u);
  });
});
