#!/usr/bin/env node
// Runs the compiled program (dist/, built by `npm ci` through the prepare script).
import { existsSync } from 'node:fs';
const entry = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('kong-db-init: dist/cli.js is missing; run "npm run build" (npm ci does it)\n');
  process.exit(1);
}
await import(entry.href);
