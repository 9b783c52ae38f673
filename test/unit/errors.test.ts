/** The exit codes are one table (src/errors.ts); --help and docs/errors.md render it, the README must agree. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { EXIT_CODE_MEANINGS, ExitCode, exitCodeSummary } from '../../src/errors.js';
import { execFileSync } from 'node:child_process';
import { CLI } from '../helpers/harness.js';
import { ROOT } from '../helpers/build.js';

describe('exit codes', () => {
  test('every ExitCode has exactly one meaning', () => {
    expect(EXIT_CODE_MEANINGS.map(([c]) => c).sort((a, b) => a - b)).toEqual(Object.values(ExitCode).sort((a, b) => a - b));
  });
  test('--help lists every exit code', () => {
    expect(execFileSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' }).replace(/\s+/g, ' ')).toContain(
      `Exit codes: ${exitCodeSummary()}.`.replace(/\s+/g, ' '),
    );
    for (const code of Object.values(ExitCode)) expect(exitCodeSummary()).toMatch(new RegExp(`(^|; )${code} `));
  });
  test("the README's exit-code table has a row for each code and no other", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Exit codes'), readme.indexOf('\n### ', readme.indexOf('### Exit codes') + 5));
    const rows = [...section.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1]));
    expect(rows.sort((a, b) => a - b)).toEqual(Object.values(ExitCode).sort((a, b) => a - b));
  });
});
