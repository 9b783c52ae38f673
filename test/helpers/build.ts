/** Build the shipped bundle the way `npm ci` does (the tests and benchmarks run the shipped bundle). */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Build into `outDir` (default dist/); returns the path of its cli.js. */
export function buildDist(outDir = 'dist'): string {
  const out = path.resolve(ROOT, outDir);
  execFileSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'inherit', env: { ...process.env, KDI_OUT: out } });
  return path.join(out, 'cli.js');
}
