/** `migrate`, `wait` and `status` end to end: real processes, real Postgres, the Kong stand-in. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { embeddedServer } from './helpers/embedded.js';
import {
  createDb,
  KONG_PASSWORD,
  listCode,
  readStatus,
  runCli,
  runKong,
  seed,
  spawnCli,
  STANDIN_BIN,
  standinEvents,
  until,
  type Run,
  type TestDb,
} from './helpers/harness.js';

const seenOutputs: string[] = [];
function keep(r: Run): Run {
  seenOutputs.push(r.stdout, r.stderr);
  return r;
}
async function history(db: TestDb) {
  const r = await db.query(`SELECT * FROM kong_db_init_history ORDER BY id`).catch(() => ({ rows: [] as Record<string, unknown>[] }));
  seenOutputs.push(JSON.stringify(r.rows));
  return r.rows as Array<Record<string, unknown>>;
}
const kongActions = (db: TestDb) =>
  standinEvents(db)
    .filter((e) => ['bootstrap', 'up', 'finish'].includes(e.ev))
    .map((e) => e.ev);
const summaryLine = (r: Run) => JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;

describe('migrate (real Postgres; Kong: the 3.7.1 stand-in)', () => {
  it('empty → bootstrap → up to date, with summary, termination message and a history row', async () => {
    const db = await createDb();
    const r = keep(await runCli(['migrate'], db.env()));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
    expect(kongActions(db)).toEqual(['bootstrap']);
    const s = summaryLine(r);
    expect(s).toMatchObject({ outcome: 'ok', state_before: 'needs-bootstrap', state_after: 'up-to-date', kong_version: '3.7.1' });
    expect((s.actions as Array<{ action: string }>).map((a) => a.action)).toEqual(['bootstrap']);
    expect(readStatus(db)).toEqual(s);
    const h = await history(db);
    expect(h).toHaveLength(1);
    expect(h[0]).toMatchObject({ outcome: 'ok', state_before: 'needs-bootstrap', state_after: 'up-to-date', kong_version: '3.7.1' });
    expect(r.stderr).toMatch(/^\S+ INFO {2}migration lock acquired waited_ms=\d+$/m);
  });

  it('3.6-shaped → up → pending left for finish (policy auto); Kong would start', async () => {
    const db = await createDb();
    await seed(db, '3.6');
    const r = keep(await runCli(['migrate'], db.env()));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(4);
    expect(kongActions(db)).toEqual(['up']);
    expect(summaryLine(r)).toMatchObject({ state_before: 'new', state_after: 'pending' });
    // a second run leaves the pending migration alone (finishing early breaks old pods)
    const r2 = keep(await runCli(['migrate'], db.env()));
    expect(r2.exitCode).toBe(0);
    expect(kongActions(db)).toEqual(['up']);
    expect(await history(db)).toHaveLength(1);
  });

  it('pending + new (a previous upgrade never ran finish) → finish then up', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    expect(await listCode(db)).toBe(4);
    const r = keep(await runCli(['migrate'], db.env()));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(kongActions(db)).toEqual(['finish', 'up']);
    expect(await listCode(db)).toBe(0);
    expect(summaryLine(r)).toMatchObject({ state_before: 'pending+new', state_after: 'up-to-date' });
  });

  it('policy never refuses pending + new with a message naming the fix; policy always finishes pending', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    const r = keep(await runCli(['migrate', '--finish', 'never'], db.env()));
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--finish=never/);
    expect(r.stderr).toMatch(/kong migrations finish/);
    expect(kongActions(db)).toEqual([]);
    const db2 = await createDb();
    await seed(db2, 'pending');
    const r2 = keep(await runCli(['migrate'], db2.env({ KONG_DB_INIT_FINISH: 'always' })));
    expect(r2.exitCode, r2.stderr).toBe(0);
    expect(kongActions(db2)).toEqual(['finish']);
    expect(await listCode(db2)).toBe(0);
  });

  it('up to date → no Kong change, no lock, no history row', async () => {
    const db = await createDb();
    await seed(db, 'current');
    const r = keep(await runCli(['migrate'], db.env()));
    expect(r.exitCode).toBe(0);
    expect(kongActions(db)).toEqual([]);
    expect(
      standinEvents(db)
        .map((e) => e.cmd)
        .filter((c) => c !== 'migrations list'),
    ).toEqual([]);
    expect(await history(db)).toHaveLength(0);
    expect(summaryLine(r)).toMatchObject({ outcome: 'ok', state_after: 'up-to-date', actions: [] });
  });

  it("KONG_PG_SCHEMA: Kong's tables, its lock row and our history live in that schema", async () => {
    const db = await createDb();
    const env = db.env({ KONG_PG_SCHEMA: 'gateway' });
    const r = keep(await runCli(['migrate'], env));
    expect(r.exitCode, r.stderr).toBe(0);
    const tables = await db.query<{ t: string }>(
      `SELECT table_schema || '.' || table_name AS t FROM information_schema.tables WHERE table_name IN ('schema_meta', 'locks', 'kong_db_init_history') ORDER BY 1`,
    );
    expect(tables.rows.map((x) => x.t)).toEqual(['gateway.kong_db_init_history', 'gateway.locks', 'gateway.schema_meta']);
    expect((await runCli(['status'], env)).exitCode).toBe(0);
    expect((await runCli(['status'], db.env())).exitCode).toBe(3); // public is still empty
    const again = keep(await runCli(['migrate'], env));
    expect(summaryLine(again)).toMatchObject({ state_before: 'up-to-date', actions: [] });
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const db = await createDb();
    const r = keep(await runCli(['migrate', '--dry-run'], db.env()));
    expect(r.exitCode).toBe(0);
    expect(summaryLine(r)).toMatchObject({ dry_run: true, plan: ['bootstrap'] });
    expect(await listCode(db)).toBe(3);
  });

  it('wrong password → fails in under 2 s, without retrying, naming host, port, database, user and the fix', async () => {
    const db = await createDb();
    const r = keep(await runCli(['migrate'], db.env({ KONG_PG_PASSWORD: 'not-the-password' })));
    expect(r.exitCode).toBe(10);
    expect(r.durationMs).toBeLessThan(2000);
    expect(r.stderr).not.toMatch(/waiting for postgres/);
    expect(r.stderr).toMatch(new RegExp(`host=${db.host} port=${db.port} database=${db.name} user=${db.user}`));
    expect(r.stderr).toMatch(/28P01.*KONG_PG_PASSWORD/);
    expect(r.stderr + r.stdout).not.toContain('not-the-password');
    expect(readStatus(db)).toMatchObject({ outcome: 'failed', exit_code: 10 });
  });

  it('database missing → a clear message with the fix', async () => {
    const db = await createDb();
    const r = keep(await runCli(['migrate'], db.env({ KONG_PG_DATABASE: 'nosuchdb' })));
    expect(r.exitCode).toBe(10);
    expect(r.stderr).toMatch(/database "nosuchdb" does not exist/);
    expect(r.stderr).toMatch(/CREATE DATABASE nosuchdb|KONG_PG_DATABASE/);
  });

  it('Postgres started 3 s after migrate → migrates', async () => {
    const server = await embeddedServer({ started: false, password: KONG_PASSWORD });
    try {
      const db = await createDb();
      const env = db.env({ KONG_PG_PORT: String(server.port), KONG_PG_USER: 'postgres', KONG_PG_DATABASE: 'postgres' });
      const child = spawnCli(['migrate'], env);
      await new Promise((r) => setTimeout(r, 3000));
      const t = Date.now();
      await server.start();
      const res = await child;
      const r = keep({ exitCode: res.exitCode ?? -1, stdout: String(res.stdout), stderr: String(res.stderr), durationMs: 0 });
      expect(r.exitCode, r.stderr).toBe(0);
      const attempts = r.stderr.split('\n').filter((l) => /waiting for postgres/.test(l));
      expect(attempts.length).toBeGreaterThan(2);
      expect(attempts[0]).toMatch(/attempt=1 reason="connection refused" next_try_ms=\d+/);
      expect(summaryLine(r)).toMatchObject({ state_before: 'needs-bootstrap', state_after: 'up-to-date' });
      expect(Date.now() - t).toBeLessThan(20_000);
    } finally {
      await server.destroy();
    }
  });

  it('16 concurrent migrate processes on an empty database: all exit 0, exactly one bootstrap', async () => {
    const db = await createDb();
    const runs = await Promise.all(Array.from({ length: 16 }, () => spawnCli(['migrate'], db.env())));
    for (const r of runs) {
      seenOutputs.push(String(r.stdout), String(r.stderr));
      expect(r.exitCode, String(r.stderr).slice(-2000)).toBe(0);
    }
    const ev = standinEvents(db);
    expect(ev.filter((e) => e.ev === 'bootstrap')).toHaveLength(1);
    expect(ev.filter((e) => e.cmd === 'migrations bootstrap' && e.ev === 'start')).toHaveLength(1);
    const dup = await db.query(`SELECT subsystem, name FROM standin_runs GROUP BY 1, 2 HAVING count(*) > 1`);
    expect(dup.rows).toEqual([]);
    expect(await listCode(db)).toBe(0);
    expect(await history(db)).toHaveLength(1);
  });

  it('SIGTERM while waiting for Postgres → exits in under 1 s, status says interrupted', async () => {
    const db = await createDb();
    const child = spawnCli(['migrate'], db.env({ KONG_PG_PORT: '1' }));
    await new Promise((r) => setTimeout(r, 1200));
    const t = Date.now();
    child.kill('SIGTERM');
    const res = await child;
    expect(Date.now() - t).toBeLessThan(1000);
    expect(res.exitCode).toBe(130);
    expect(readStatus(db)).toMatchObject({ outcome: 'interrupted', exit_code: 130 });
  });

  it('SIGTERM right after the bootstrap, during the re-check `list`: the step is recorded, the state re-read, the history row kept', async () => {
    const db = await createDb();
    // a Kong whose `list` is slow: the re-check after the bootstrap is where the signal lands
    const mark = path.join(db.dir, 'list-started');
    const slowList = path.join(db.dir, 'kong-slow-list');
    fs.writeFileSync(
      slowList,
      `#!/bin/sh\nif [ "$1 $2" = "migrations list" ] && [ ! -e ${mark} ]; then : > ${mark}; sleep 2; fi\nexec ${path.join(STANDIN_BIN, 'kong')} "$@"\n`,
      { mode: 0o755 },
    );
    const child = spawnCli(['migrate', '--kong-bin', slowList], db.env());
    await until(() => fs.existsSync(mark), 30_000, 'the re-check after bootstrap');
    child.kill('SIGTERM');
    const res = await child;
    expect(res.exitCode, String(res.stderr)).toBe(130);
    const status = readStatus(db) as { outcome: string; actions: Array<{ action: string; exit: number; note?: string }>; state_after?: string; error?: string };
    expect(status.outcome).toBe('interrupted');
    expect(status.actions).toEqual([expect.objectContaining({ action: 'bootstrap', exit: 0, note: 'finished after the signal' })]);
    expect(status.state_after).toBe('up-to-date');
    expect(status.error).toMatch(/kong migrations bootstrap finished \(exit 0\) after the signal; the schema is now "up-to-date"/);
    const rows = await history(db);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ outcome: 'interrupted', state_after: 'up-to-date' });
    expect(await listCode(db)).toBe(0);
  });

  it('pending+new: `wait` does not call it ready and `status` says kong start refuses it (Kong 3.7.1 check_state raises on any new migration)', async () => {
    const db = await createDb();
    await seed(db, 'pending+new');
    const w = keep(await runCli(['wait', '--deadline', '2s'], db.env()));
    expect(w.exitCode, w.stderr).toBe(11);
    expect(w.stderr).toMatch(/deadline reached: schema is "pending\+new"/);
    expect(w.stderr).not.toMatch(/kong start will proceed/);
    const st = keep(await runCli(['status', '--json'], db.env()));
    expect(st.exitCode).toBe(4);
    expect(JSON.parse(st.stdout.trim().split('\n').pop()!)).toMatchObject({ state: 'pending+new', list_exit: 4, kong_start_accepts: false });
    // pending alone is what kong start accepts
    const alone = await createDb();
    await seed(alone, 'pending');
    const ok = keep(await runCli(['wait', '--deadline', '5s'], alone.env()));
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/schema ready: kong start will proceed state=pending/);
  });

  it('KONG_DATABASE=off → exits 0 at once and says why (migrate and wait)', async () => {
    const db = await createDb();
    for (const cmd of ['migrate', 'wait']) {
      const r = keep(await runCli([cmd], db.env({ KONG_DATABASE: 'off', KONG_PG_PORT: '1' })));
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toMatch(/KONG_DATABASE=off/);
      expect(r.durationMs).toBeLessThan(3000);
    }
  });

  it('--log-format json: every log line on stderr is one JSON object (Kong output included), no secret', async () => {
    const db = await createDb();
    const r = keep(await runCli(['migrate', '--log-format', 'json'], db.env()));
    expect(r.exitCode).toBe(0);
    const lines = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { time: string; level: string; msg: string });
    expect(lines.length).toBeGreaterThan(60);
    for (const l of lines) expect(Object.keys(l).slice(0, 3)).toEqual(['time', 'level', 'msg']);
    expect(lines.some((l) => l.msg === '[kong migrations bootstrap] Database is up-to-date')).toBe(true);
  });

  it('KONG_PG_PASSWORD_FILE is honoured and passed to Kong', async () => {
    const db = await createDb();
    const f = path.join(db.dir, 'pw');
    fs.writeFileSync(f, KONG_PASSWORD + '\n');
    const env = db.env();
    delete (env as Record<string, string | undefined>).KONG_PG_PASSWORD;
    const r = keep(await runCli(['migrate'], { ...env, KONG_PG_PASSWORD_FILE: f }));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await listCode(db)).toBe(0);
  });
});

describe('wait and status (Kong: the 3.7.1 stand-in)', () => {
  it('wait returns 0 once the schema is what kong start accepts; times out (11) otherwise', async () => {
    const db = await createDb();
    const r = keep(await runCli(['wait', '--deadline', '2s'], db.env()));
    expect(r.exitCode).toBe(11);
    expect(r.stderr).toMatch(/needs-bootstrap/);
    await seed(db, 'pending');
    const r2 = keep(await runCli(['wait'], db.env()));
    expect(r2.exitCode).toBe(0);
  });

  it('wait proceeds as soon as another process migrates', async () => {
    const db = await createDb();
    const w = spawnCli(['wait', '--deadline', '60s'], db.env());
    await new Promise((r) => setTimeout(r, 1000));
    const m = await runCli(['migrate'], db.env());
    expect(m.exitCode).toBe(0);
    const res = await w;
    expect(res.exitCode).toBe(0);
  });

  it('status mirrors list exit codes and shows history (text and JSON)', async () => {
    const db = await createDb();
    expect((await runCli(['status'], db.env())).exitCode).toBe(3);
    await seed(db, '3.6');
    const s5 = keep(await runCli(['status', '--json'], db.env()));
    expect(s5.exitCode).toBe(5);
    expect(JSON.parse(s5.stdout)).toMatchObject({ state: 'new', plan: ['up'], kong_start_accepts: false });
    await runCli(['migrate'], db.env());
    const s4 = keep(await runCli(['status'], db.env()));
    expect(s4.exitCode).toBe(4);
    expect(s4.stdout).toMatch(/state: +pending/);
    expect(s4.stdout).toMatch(/new -> pending +\[up\]/);
  });
});

describe('secrets', () => {
  it('the password never appears in any output, status file or history row (success, Kong failure, status, wait)', async () => {
    const db = await createDb();
    const runs = [
      await runCli(['migrate', '--log-format', 'json', '--verbose'], db.env({ KONG_STANDIN_FAIL: 'acl/000_base_acl' })),
      await runCli(['migrate', '--verbose'], db.env()),
      await runCli(['status', '--json'], db.env()),
      await runCli(['status'], db.env()),
      await runCli(['wait'], db.env()),
    ];
    expect(runs.map((r) => r.exitCode)).toEqual([14, 0, 4, 4, 0]);
    const rows = await history(db);
    expect(rows.map((r) => r.outcome)).toEqual(['failed', 'ok']);
    expect(String(rows[0]!.error)).toMatch(/failed to run migration '000_base_acl'/);
    const everything = [
      ...runs.flatMap((r) => [r.stdout, r.stderr]),
      readStatus(db) ? JSON.stringify(readStatus(db)) : '',
      JSON.stringify(rows),
      ...seenOutputs,
    ];
    for (const o of everything) expect(o).not.toContain(KONG_PASSWORD);
  });
});

describe('waiters start no Kong process when an identical Kong verified the state (Kong: the 3.7.1 stand-in)', () => {
  const kongStartsOf = (db: TestDb, pod: string) => standinEvents(db).filter((e) => e.ev === 'start' && e.pod === pod).length;
  const plugin = (db: TestDb, files: string[]) => {
    const root = path.join(db.dir, `lua-${files.length}`);
    const dir = path.join(root, 'kong', 'plugins', 'myplug', 'migrations');
    fs.mkdirSync(dir, { recursive: true });
    for (const f of files) fs.writeFileSync(path.join(dir, f), 'return { postgres = { up = "" } }\n');
    return { KONG_PLUGINS: 'bundled,myplug', KONG_LUA_PACKAGE_PATH: `${root}/?.lua;;` };
  };

  it('6 racing pods: only the one that migrates runs Kong; a restart runs none; a changed plugin migration makes the next pod run Kong', async () => {
    const db = await createDb();
    const pods = Array.from({ length: 6 }, (_, i) => `pod-${i}`);
    const runs = await Promise.all(pods.map((p) => spawnCli(['migrate'], db.env({ POD_NAME: p }))));
    expect(runs.map((r) => r.exitCode)).toEqual(pods.map(() => 0));
    const counts = pods.map((p) => kongStartsOf(db, p));
    expect(counts.filter((n) => n > 0)).toHaveLength(1);
    expect(kongActions(db)).toEqual(['bootstrap']);

    // a restart with nothing to do: no Kong process at all
    const restart = keep(await runCli(['migrate'], db.env({ POD_NAME: 'restart' })));
    expect(restart.exitCode, restart.stderr).toBe(0);
    expect(kongStartsOf(db, 'restart')).toBe(0);
    expect(restart.stderr).toMatch(/state verified earlier by an identical Kong; not starting Kong/);

    // a pod whose plugin ConfigMap brings a migration: its Kong differs, so it runs Kong and migrates
    const v1 = plugin(db, ['000_base_myplug.lua']);
    const p1 = keep(await runCli(['migrate'], db.env({ POD_NAME: 'plugin-v1', ...v1 })));
    expect(p1.exitCode, p1.stderr).toBe(0);
    expect(kongStartsOf(db, 'plugin-v1')).toBeGreaterThan(0);
    expect(kongActions(db)).toEqual(['bootstrap', 'up']);
    // the same plugin files again: nothing to start
    const p1b = keep(await runCli(['migrate'], db.env({ POD_NAME: 'plugin-v1-again', ...v1 })));
    expect(p1b.exitCode).toBe(0);
    expect(kongStartsOf(db, 'plugin-v1-again')).toBe(0);
    // the ConfigMap changes (a new migration file) without any other change: the pod runs Kong
    const v2 = plugin(db, ['000_base_myplug.lua', '001_myplug_add_column.lua']);
    const p2 = keep(await runCli(['migrate'], db.env({ POD_NAME: 'plugin-v2', ...v2 })));
    expect(p2.exitCode, p2.stderr).toBe(0);
    expect(kongStartsOf(db, 'plugin-v2')).toBeGreaterThan(0);
    expect(kongActions(db)).toEqual(['bootstrap', 'up', 'up']);
    const list = await runKong(['migrations', 'list'], db.env(v2));
    expect(list.exitCode).toBe(0);
    expect(list.stdout).toMatch(/myplug: 000_base_myplug, 001_myplug_add_column/);
  });
});
