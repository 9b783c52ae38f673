/** `npm run docs`: regenerate docs/errors.md (the bad-input table) and docs/flags.md (the one flag table). */
import fs from 'node:fs';
import path from 'node:path';
import { renderErrorsDoc } from './bad-input-cases.js';
import { renderFlagsDoc } from './flags-doc.js';
import { ROOT } from './helpers/harness.js';

fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'docs/errors.md'), renderErrorsDoc());
fs.writeFileSync(path.join(ROOT, 'docs/flags.md'), renderFlagsDoc());
console.log('wrote docs/errors.md and docs/flags.md');
