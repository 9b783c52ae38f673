/** `npm run docs`: regenerate docs/errors.md from the bad-input table. */
import fs from 'node:fs';
import path from 'node:path';
import { renderErrorsDoc } from './bad-input-cases.js';
import { ROOT } from './helpers/harness.js';

fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'docs/errors.md'), renderErrorsDoc());
console.log('wrote docs/errors.md');
