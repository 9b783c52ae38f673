import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseList } from '../../src/kong/cli.js';
import { decide, progressKey, kongStartAccepts, stateName, type SchemaState } from '../../src/engine/plan.js';
import { FIXTURES } from '../helpers/harness.js';

const fixture = (name: string) => {
  const d = path.join(FIXTURES, name);
  return parseList(Number(fs.readFileSync(path.join(d, 'exit'), 'utf8')), fs.readFileSync(path.join(d, 'stdout'), 'utf8'));
};

describe('parseList on the recorded Kong 3.7.1 output', () => {
  it('empty database: needs bootstrap', () => {
    expect(stateName(fixture('01-empty.list'))).toBe('needs-bootstrap');
  });
  it('current: 18 subsystems, 66 migrations executed, nothing else', () => {
    const s = fixture('05-current.list');
    expect(Object.keys(s.executed)).toHaveLength(18);
    expect(Object.values(s.executed).flat()).toHaveLength(66);
    expect(s.executed.core).toContain('023_360_to_370');
    expect(s.pending).toEqual({});
    expect(s.new).toEqual({});
  });
  it('new: the two 3.7 migrations are new', () => {
    const s = fixture('09-new.list');
    expect(s.new).toEqual({ core: ['023_360_to_370'], 'ai-proxy': ['001_360_to_370'] });
    expect(stateName(s)).toBe('new');
  });
  it('pending: ai-proxy waits for finish', () => {
    const s = fixture('11-pending.list');
    expect(s.pending).toEqual({ 'ai-proxy': ['001_360_to_370'] });
    expect(stateName(s)).toBe('pending');
  });
  it('rejects an error exit', () => {
    expect(() => parseList(1, '', 'Error: [PostgreSQL error] connection refused')).toThrow(/exited 1.*connection refused/);
  });
  it('parses pending + new together', () => {
    const out = 'Executed migrations:\n core: 000_base\n\nPending migrations:\nacl: 001_x\n\nNew migrations available:\ncore: 002_y, 003_z\n';
    const s = parseList(4, out);
    expect(stateName(s)).toBe('pending+new');
    expect(s.new.core).toEqual(['002_y', '003_z']);
  });
});

const st = (code: SchemaState['code'], pending = 0, nw = 0): SchemaState => ({
  code,
  executed: { core: ['000_base'] },
  pending: pending ? { acl: Array.from({ length: pending }, (_, i) => `p${i}`) } : {},
  new: nw ? { core: Array.from({ length: nw }, (_, i) => `n${i}`) } : {},
});

describe('decide', () => {
  it.each([
    ['needs bootstrap', st(3), 'auto', ['bootstrap']],
    ['new', st(5, 0, 2), 'auto', ['up']],
    ['new under never', st(5, 0, 2), 'never', ['up']],
    ['pending + new under auto', st(4, 1, 1), 'auto', ['finish', 'up']],
    ['pending + new under always', st(4, 1, 1), 'always', ['finish', 'up']],
    ['pending only under auto', st(4, 1), 'auto', []],
    ['pending only under never', st(4, 1), 'never', []],
    ['pending only under always', st(4, 1), 'always', ['finish']],
    ['up to date', st(0), 'always', []],
  ] as const)('%s → %j', (_n, s, policy, actions) => {
    const p = decide(s, policy);
    expect(p.actions).toEqual(actions);
    expect(p.refused).toBeUndefined();
  });
  it('never refuses pending + new with a message that names the fix', () => {
    const p = decide(st(4, 1, 1), 'never');
    expect(p.actions).toEqual([]);
    expect(p.refused).toMatch(/--finish=never/);
    expect(p.refused).toMatch(/--finish=auto|kong migrations finish/);
  });
  it('kong start accepts 0 and 4 only', () => {
    expect([st(0), st(3), st(4, 1), st(5, 0, 1)].map(kongStartAccepts)).toEqual([true, false, true, false]);
  });
  it('progressKey changes with progress and not otherwise', () => {
    expect(progressKey(st(5, 0, 2))).toBe(progressKey(st(5, 0, 2)));
    expect(progressKey(st(5, 0, 2))).not.toBe(progressKey(st(5, 0, 1)));
    expect(progressKey(st(4, 1))).not.toBe(progressKey(st(0)));
  });
});
