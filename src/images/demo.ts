/**
 * The demo app (guest/demo) as a code artifact: a folder with a Dockerfile on
 * the busybox base, built like any user image.
 */
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { zipDirectory } from '../archive/index.js';
import { DEMO_PORT } from '../setup/index.js';

/** Writes the demo's build context into `dir` (replacing it); returns `dir`. */
export function demoContext(dir: string, demoApp: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(demoApp, path.join(dir, 'cella-demo'));
  writeFileSync(
    path.join(dir, 'Dockerfile'),
    ['FROM busybox', 'COPY cella-demo /usr/bin/cella-demo', `EXPOSE ${DEMO_PORT}`, `CMD ["/usr/bin/cella-demo", "${DEMO_PORT}"]`, ''].join('\n'),
  );
  return dir;
}

/** The demo's context zipped into `zipFile`; returns its path. */
export async function demoZip(zipFile: string, demoApp: string): Promise<string> {
  const dir = demoContext(`${zipFile}.d`, demoApp);
  writeFileSync(zipFile, await zipDirectory(dir));
  rmSync(dir, { recursive: true, force: true });
  return zipFile;
}
