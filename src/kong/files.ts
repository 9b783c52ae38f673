/** The real file system behind `FileReader` (kong-config.ts and k8s.ts take it injected, for tests). */
import fs from 'node:fs';
import type { FileReader } from './config.js';

export const realFiles: FileReader = {
  exists: (p: string) => fs.existsSync(p),
  read: (p: string) => fs.readFileSync(p, 'utf8'),
};
