/**
 * Build contexts that cellad writes itself (its managed images, and the demo
 * app for tests): a Dockerfile and files copied in, zipped as a code
 * artifact, with a digest of their contents.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { zipDirectory } from '../archive/index.js';
import { DEMO_PORT } from '../setup/index.js';

/** Files of a build context: name in the context → path here. */
export type ContextFiles = Record<string, string>;

/** The demo's Dockerfile (guest/demo on busybox): its context is that and the app as `cella-demo`. */
export const DEMO_DOCKERFILE: readonly string[] = [
  'FROM busybox',
  'COPY cella-demo /usr/bin/cella-demo',
  `EXPOSE ${DEMO_PORT}`,
  `CMD ["/usr/bin/cella-demo", "${DEMO_PORT}"]`,
];

/** Writes a build context into `dir` (replacing it); returns `dir`. */
export function writeContext(dir: string, files: ContextFiles, dockerfile: readonly string[]): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, from] of Object.entries(files)) copyFileSync(from, path.join(dir, name));
  writeFileSync(path.join(dir, 'Dockerfile'), [...dockerfile, ''].join('\n'));
  return dir;
}

/** A build context zipped into `zipFile`; returns its path. */
export async function zipContext(zipFile: string, files: ContextFiles, dockerfile: readonly string[]): Promise<string> {
  const dir = writeContext(`${zipFile}.d`, files, dockerfile);
  writeFileSync(zipFile, await zipDirectory(dir));
  rmSync(dir, { recursive: true, force: true });
  return zipFile;
}

/** The digest of a build context, from the contents alone (a zip's timestamps would change it at every start). */
export function contextRevision(files: ContextFiles, dockerfile: readonly string[]): string {
  const hash = createHash('sha256').update(JSON.stringify(dockerfile));
  for (const name of Object.keys(files).sort()) {
    hash.update(`\0${name}\0`).update(
      createHash('sha256')
        .update(readFileSync(files[name] as string))
        .digest(),
    );
  }
  return hash.digest('hex').slice(0, 16);
}

/** Writes the demo's build context into `dir` (replacing it); returns `dir`. */
export function demoContext(dir: string, demoApp: string): string {
  return writeContext(dir, { 'cella-demo': demoApp }, DEMO_DOCKERFILE);
}

/** The demo's context zipped into `zipFile`; returns its path. */
export function demoZip(zipFile: string, demoApp: string): Promise<string> {
  return zipContext(zipFile, { 'cella-demo': demoApp }, DEMO_DOCKERFILE);
}
