/**
 * One shard of `npm run test:unit`: imports the test files named on the
 * command line into this one process, so tsx and the shared module graph
 * load once per shard instead of once per file.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

for (const f of process.argv.slice(2)) await import(pathToFileURL(path.resolve(f)).href);
