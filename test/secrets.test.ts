/**
 * Every password of issue 8 end to end: real kong-db-init processes, the Kong stand-in behind a
 * wrapper that quotes the password the ways a Kong error can (key=value, DSN, a line of its own),
 * the real test Postgres. The output must stay intact and the password must not appear in any
 * encoding (strong passwords) or in any place where a password really appears (short ones).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminQuery, createDb, KONG_PASSWORD, listCode, runCli, STANDIN_BIN, type Run, type TestDb } from './helpers/harness.js';

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** A `kong` that prints what a careless Kong error could print, then runs the stand-in. */
function quotingKong(db: TestDb, failBootstrap: boolean): string {
  const f = path.join(db.dir, 'quoting-kong');
  fs.writeFileSync(
    f,
    `#!/bin/sh
if [ "$1" = migrations ] && [ "$2" != list ]; then
  printf 'connecting with host=%s password=%s\\n' "$KONG_PG_HOST" "$KONG_PG_PASSWORD" >&2
  printf 'dsn postgres://%s:%s@%s/%s\\n' "$KONG_PG_USER" "$KONG_PG_PASSWORD" "$KONG_PG_HOST" "$KONG_PG_DATABASE" >&2
  printf '%s\\n' "$KONG_PG_PASSWORD" >&2
  ${failBootstrap ? `if [ "$2" = bootstrap ]; then printf 'Error: [PostgreSQL error] failed: password=%s\\n' "$KONG_PG_PASSWORD" >&2; exit 1; fi` : ''}
fi
exec "${STANDIN_BIN}/kong" "$@"
`,
  );
  fs.chmodSync(f, 0o755);
  return f;
}

/** The forms in which a password must not appear anywhere (strong passwords). */
function forms(pw: string): string[] {
  const parts = [pw, ...pw.split('\n').filter((p) => p !== pw)];
  const out = new Set<string>();
  for (const p of parts) {
    out.add(p).add(JSON.stringify(p).slice(1, -1)).add(encodeURIComponent(p));
    if (p.length >= 8) out.add(p.slice(0, Math.ceil(p.length / 2))).add(p.slice(Math.floor(p.length / 2)));
  }
  return [...out].filter((s) => s.length >= 4);
}

const SUMMARY_KEYS = ['tool', 'version', 'command', 'outcome', 'exit_code', 'pod', 'actions', 'wait_postgres_ms', 'wait_lock_ms', 'duration_ms', 'started_at'];

function lastJsonLine(r: Run): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Record<string, unknown>;
}

describe.each([
  ['kong', "Kong's documented default"],
  ['1', 'one character'],
  ['pa"ss\\word', 'a quote and a backslash'],
  ['line-one-pw\nline-two-pw', 'a newline'],
])('password %j (%s)', (pw) => {
  it('never mangles the output and never leaks', async () => {
    const db = await createDb();
    await adminQuery(`ALTER ROLE ${db.user} PASSWORD ${lit(pw)}`);
    const statusFile = path.join(db.dir, 'status.json');
    const env = (kongBin: string) => db.env({ KONG_PG_PASSWORD: pw, KONG_DB_INIT_KONG_BIN: kongBin });

    const failed = await runCli(['migrate', '--log-format', 'json'], env(quotingKong(db, true)));
    expect(failed.exitCode, failed.stderr).toBe(14);
    const failedStatus = fs.readFileSync(statusFile, 'utf8');
    const ok = await runCli(['migrate', '--log-format', 'json'], env(quotingKong(db, false)));
    expect(ok.exitCode, ok.stderr).toBe(0);
    const okStatus = fs.readFileSync(statusFile, 'utf8');
    const text = await runCli(['migrate', '--verbose'], env(quotingKong(db, false)));
    expect(text.exitCode, text.stderr).toBe(0);
    const status = await runCli(['status', '--json'], env(path.join(STANDIN_BIN, 'kong')));
    expect(status.exitCode, status.stderr).toBe(0);
    const wrong = await runCli(['migrate'], db.env({ KONG_PG_PASSWORD: `${pw}-wrong` }));
    expect(wrong.exitCode, wrong.stderr).toBe(10);

    // the summary parses, with the right keys and untouched values
    for (const [r, file, outcome] of [
      [failed, failedStatus, 'failed'],
      [ok, okStatus, 'ok'],
    ] as const) {
      const s = lastJsonLine(r);
      expect(Object.keys(s)).toEqual(expect.arrayContaining(SUMMARY_KEYS));
      expect(s).toMatchObject({ tool: 'kong-db-init', command: 'migrate', outcome });
      expect(Buffer.byteLength(file.trim())).toBeLessThanOrEqual(4096);
      expect(JSON.parse(file)).toEqual(s);
    }
    expect(lastJsonLine(ok).kong_version).toMatch(/^\d+\.\d+\.\d+/);
    expect(String(lastJsonLine(failed).error)).toMatch(/bootstrap.*exited 1.*password=\*\*\*/s);

    // every stderr line of a JSON run is one JSON object; Kong's own lines are intact
    const lines = ok.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string });
    expect(lines.map((l) => l.msg)).toContain('[kong migrations bootstrap] Database is up-to-date');
    expect(lines.map((l) => l.msg)).toContain('[kong migrations bootstrap] connecting with host=127.0.0.1 password=***');
    if (pw.includes('\n'))
      expect(lines.map((l) => l.msg)).toEqual(
        expect.arrayContaining([`[kong migrations bootstrap] dsn postgres://${db.user}:***`, `[kong migrations bootstrap] ***@127.0.0.1/${db.name}`]),
      );
    else expect(lines.map((l) => l.msg)).toContain(`[kong migrations bootstrap] dsn postgres://${db.user}:***@127.0.0.1/${db.name}`);
    expect(text.stderr).toMatch(/\[kong migrations (bootstrap|list)\]|database ready for Kong/);

    // a history row for each run that changed something or failed
    const rows = (
      await db.query<{ outcome: string; error: string | null; actions: unknown }>('SELECT outcome, error, actions FROM kong_db_init_history ORDER BY id')
    ).rows;
    expect(rows.map((r) => r.outcome)).toEqual(['failed', 'ok']);
    expect(rows[0]!.error).toMatch(/password=\*\*\*/);
    const st = JSON.parse(status.stdout) as { history: unknown[] };
    expect(st.history).toHaveLength(2);

    const everything = [failed, ok, text, status, wrong].flatMap((r) => [r.stdout, r.stderr]).concat(failedStatus, okStatus, JSON.stringify(rows));
    if (pw.length >= 8) {
      for (const o of everything) for (const f of forms(pw)) expect(o, `"${f}" leaked`).not.toContain(f);
    } else {
      // a short password is masked where a password really appears: after a key, in a URL, as a whole line
      for (const o of everything) {
        expect(o).not.toMatch(new RegExp(`password[=:] ?${pw}\\b`));
        expect(o).not.toContain(`:${pw}@`);
        expect(o.split('\n').map((l) => l.trim())).not.toContain(pw);
      }
      for (const l of lines) expect(l.msg).not.toMatch(new RegExp(`^\\[kong migrations bootstrap\\] ${pw}$`));
    }
  });
});

describe("a password from Kong's env vault", () => {
  it('{vault://env/NAME/KEY}: resolved like Kong, used for our sessions and by Kong, never printed', async () => {
    const db = await createDb();
    const env = db.env({ KONG_PG_PASSWORD: '{vault://env/db-creds/password}', DB_CREDS: JSON.stringify({ user: db.user, password: KONG_PASSWORD }) });
    const r = await runCli(['migrate', '--log-format', 'json'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
    for (const f of forms(KONG_PASSWORD)) expect(r.stdout + r.stderr + fs.readFileSync(path.join(db.dir, 'status.json'), 'utf8')).not.toContain(f);
  });
});
