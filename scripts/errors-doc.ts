// Writes docs/errors.md from the error table (npm run docs:errors); src/contract/errors.test.ts fails while it is stale.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERRORS_DOC_PATH, renderErrorsDoc } from '../src/contract/index.js';

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', ERRORS_DOC_PATH);
writeFileSync(file, renderErrorsDoc());
console.log(`wrote ${ERRORS_DOC_PATH}`);
