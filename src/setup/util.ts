/** File and host-tool helpers shared by the setup steps (guest binaries, kernel, initrd, bases). */

import { createHash } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, chmod, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setupMissing } from '../contract/index.js';

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function fileSha256(path: string): Promise<string | undefined> {
  try {
    return sha256(await readFile(path));
  } catch {
    return undefined;
  }
}

/** Write-then-rename, so a reader never sees a half-written file. */
export async function writeAtomic(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode); // writeFile's mode is filtered by the umask
  await rename(tmp, path);
}

/** Puts a freshly built directory in place of `path`, keeping the old one until the swap is done. */
export async function replaceDir(path: string, fresh: string): Promise<void> {
  const old = `${path}.old-${process.pid}`;
  if (existsSync(path)) await rename(path, old);
  await rename(fresh, path);
  await rm(old, { recursive: true, force: true });
}

async function onPath(cmd: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

export async function requireTools(tools: readonly (readonly [cmd: string, debianPackage: string])[]): Promise<void> {
  for (const [cmd, pkg] of tools) {
    if (!(await onPath(cmd))) throw setupMissing(`${cmd} (Debian package ${pkg})`, `PATH=${process.env.PATH ?? ''}`);
  }
}
