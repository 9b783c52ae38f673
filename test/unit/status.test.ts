import { describe, expect, it } from 'vitest';
import { formatStatus, type HistoryRow, type StatusView } from '../../src/report/summary.js';

const row: HistoryRow = {
  id: '7',
  started_at: '2026-01-01 10:00:00+00',
  finished_at: '2026-01-01 10:00:02+00',
  pod: 'kong-7f9c-abcde',
  kong_version: '3.7.1',
  state_before: 'new',
  state_after: 'pending',
  actions: [{ action: 'up', ms: 812, exit: 0 }],
  outcome: 'ok',
  exit_code: 0,
  error: null,
};
const view = (over: Partial<StatusView> = {}): StatusView => ({
  target: 'host=db port=5432 database=kong user=kong',
  state: 'pending',
  listExit: 4,
  kongStartAccepts: true,
  plan: [],
  reason: 'pending migrations wait for finish',
  pending: { 'ai-proxy': ['001_360_to_370'] },
  new: {},
  history: [row],
  ...over,
});

describe('formatStatus', () => {
  it('text: target, state, plan and one line per history row', () => {
    expect(formatStatus(view(), false).split('\n')).toEqual([
      'target:  host=db port=5432 database=kong user=kong',
      'state:   pending (kong migrations list exit 4; kong start accepts it)',
      'plan:    nothing (pending migrations wait for finish)',
      'history: ',
      '  2026-01-01 10:00:02+00  kong-7f9c-abcde  ok  new -> pending  [up]',
    ]);
  });
  it('text: a refusal wins over the reason; a failed row shows its error; no history says none', () => {
    const failed = { ...row, outcome: 'failed', error: 'kong migrations up exited 1' };
    const out = formatStatus(view({ plan: ['finish', 'up'], refused: '--finish=never forbids it', history: [failed] }), false);
    expect(out).toContain('plan:    finish then up (--finish=never forbids it)');
    expect(out).toMatch(/failed {2}new -> pending {2}\[up\] {2}error: kong migrations up exited 1$/);
    expect(formatStatus(view({ history: [] }), false)).toContain('history: none');
  });
  it('JSON: the documented keys, history rows as read', () => {
    const j = JSON.parse(formatStatus(view(), true));
    expect(Object.keys(j)).toEqual(['target', 'state', 'list_exit', 'kong_start_accepts', 'plan', 'reason', 'pending', 'new', 'history']);
    expect(j).toMatchObject({ state: 'pending', list_exit: 4, kong_start_accepts: true, history: [{ id: '7', actions: [{ action: 'up' }] }] });
  });
});
