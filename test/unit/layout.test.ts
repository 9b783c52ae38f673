/**
 * The layout shows the architecture: src/ in folders by part, each file with a header saying
 * its concern, no file over ~300 lines, and no import cycle between files (type-only imports
 * are erased at build time and do not count).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/build.js';

const SRC = path.join(ROOT, 'src');
const PARTS = ['commands', 'engine', 'kong', 'postgres', 'kube', 'render', 'report'];
// "about 300": a file a little over it is fine, one that needs splitting is not
const MAX_LINES = 310;

function sources(dir = SRC): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

/** Runtime imports of a file (not `import type`), resolved to files under src/. */
function runtimeImports(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^import\s+(?!type\b)[^;]*?from\s+'(\.[^']+)';/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*'(\.[^']+)'\s*\)/g)) out.push(m[1]!);
  return out.map((spec) => path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
}

/** One cycle in a directed graph, or undefined. */
function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === 'done') return undefined;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return undefined;
  };
  for (const n of graph.keys()) {
    const c = visit(n);
    if (c) return c;
  }
  return undefined;
}

describe('src/ layout', () => {
  const files = sources();
  const rel = (f: string) => path.relative(SRC, f);

  it('has the parts as folders, and only the entry point and the exit codes at the top', () => {
    expect(
      fs
        .readdirSync(SRC, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
        .sort(),
    ).toEqual([...PARTS].sort());
    expect(
      files
        .filter((f) => path.dirname(f) === SRC)
        .map(rel)
        .sort(),
    ).toEqual(['cli.ts', 'errors.ts']);
  });

  it(`no file over ${MAX_LINES} lines`, () => {
    const long = files.map((f) => [rel(f), fs.readFileSync(f, 'utf8').split('\n').length] as const).filter(([, n]) => n > MAX_LINES);
    expect(long).toEqual([]);
  });

  it('every file opens with a comment saying what it is for', () => {
    const bare = files.filter((f) => !/^(#!.*\n)?\/\*\*/.test(fs.readFileSync(f, 'utf8'))).map(rel);
    expect(bare).toEqual([]);
  });

  it('no import cycle between files (runtime imports)', () => {
    const graph = new Map(files.map((f) => [f, runtimeImports(f, fs.readFileSync(f, 'utf8')).filter((t) => fs.existsSync(t))]));
    expect(findCycle(graph)?.map(rel)).toBeUndefined();
  });

  it('the cycle finder finds a cycle and the import reader skips type-only imports', () => {
    expect(
      findCycle(
        new Map([
          ['a', ['b']],
          ['b', ['c']],
          ['c', ['a']],
        ]),
      ),
    ).toEqual(['a', 'b', 'c', 'a']);
    expect(
      findCycle(
        new Map([
          ['a', ['b']],
          ['b', []],
        ]),
      ),
    ).toBeUndefined();
    const f = path.join(SRC, 'x/y.ts');
    expect(
      runtimeImports(f, "import type { A } from './a.js';\nimport { B } from '../b.js';\nconst c = await import('./c.js');").map((p) => path.relative(SRC, p)),
    ).toEqual(['b.ts', 'x/c.ts']);
  });
});
