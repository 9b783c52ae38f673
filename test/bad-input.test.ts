/** Every bad input gets a documented exit code and a message naming what to fix, and no password. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CASES, renderErrorsDoc } from './bad-input-cases.js';
import { renderFlagsDoc } from './flags-doc.js';
import { createDb, KONG_PASSWORD, ROOT, runCli } from './helpers/harness.js';
import { holdLock } from './helpers/locks.js';

describe('bad input catalogue (real Postgres; Kong: the 3.7.1 stand-in)', () => {
  it('has at least 25 cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(25);
    expect(new Set(CASES.map((c) => c.id)).size).toBe(CASES.length);
  });

  for (const c of CASES) {
    it(`${c.id}: exit ${c.code}, message names the fix`, async () => {
      const db = await createDb();
      const extra = (await c.setup?.(db)) ?? {};
      const r = await runCli(c.args, db.env({ ...(c.env?.(db) ?? {}), ...extra }));
      expect(r.exitCode, r.stderr).toBe(c.code);
      expect(r.stderr).toMatch(c.message);
      expect(r.stdout + r.stderr).not.toContain(KONG_PASSWORD);
      // a vault reference names where the password is; it is not the password
      for (const [k, v] of Object.entries(c.env?.(db) ?? {}))
        if (k === 'KONG_PG_PASSWORD' && v !== '' && !v.startsWith('{vault://')) expect(r.stdout + r.stderr).not.toContain(v);
      if (fs.existsSync(path.join(db.dir, 'status.json'))) expect(fs.readFileSync(path.join(db.dir, 'status.json'), 'utf8')).not.toContain(KONG_PASSWORD);
    });
  }

  it('lock timeout: another holder keeps the migration lock → exit 12 naming the holder', async () => {
    const db = await createDb();
    const holder = await holdLock(db);
    try {
      const r = await runCli(['migrate', '--lock-timeout', '1s'], db.env());
      expect(r.exitCode).toBe(12);
      expect(r.stderr).toMatch(/lock timeout after 1 s: another kong-db-init holds the migration lock \(pid \d+, kong-db-init\/other-pod/);
      expect(r.stderr).toMatch(/raise --lock-timeout/);
    } finally {
      await holder.end();
    }
  });

  it('docs/flags.md is generated from the flag tables and up to date (npm run docs)', () => {
    expect(fs.readFileSync(path.join(ROOT, 'docs/flags.md'), 'utf8')).toBe(renderFlagsDoc());
  });

  it('docs/errors.md is generated from this table and up to date (npm run docs)', () => {
    expect(fs.readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8')).toBe(renderErrorsDoc());
  });
});
