import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import yazl from 'yazl';
import { CellaError } from '../contract/index.js';
import { escapingSymlink, unsafeEntryName } from './paths.js';

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/**
 * One fixed time for every entry, so the same folder always gives the same
 * bytes (the build cache keys on them). Built from local fields and written as
 * a DOS timestamp only, which stores local fields: no time zone leaks in.
 */
const FIXED_MTIME = new Date(1980, 0, 1, 0, 0, 0);
const ENTRY_TIME = { mtime: FIXED_MTIME, forceDosTimestamp: true };

/**
 * Zips a folder as a build context: entries in sorted order with fixed times,
 * permission bits kept (setuid, setgid and sticky dropped), symlinks stored as
 * symlinks when they stay inside the folder and refused otherwise.
 */
export async function zipDirectory(dir: string): Promise<Buffer> {
  // The folder itself may be reached through a symlink: the caller named it.
  const info = await stat(dir).catch(() => null);
  if (!info?.isDirectory()) throw new CellaError('INVALID_ARGUMENT', `${dir} is not a folder`);
  const zip = new yazl.ZipFile();
  const output = collect(zip);
  try {
    await addFolder(zip, dir, '');
  } catch (err) {
    // Ended so yazl finishes what it started; the result is dropped, errors included.
    output.catch(() => undefined);
    zip.end();
    throw err;
  }
  zip.end();
  return output;
}

async function addFolder(zip: yazl.ZipFile, root: string, rel: string): Promise<void> {
  const names = await readdir(path.join(root, rel));
  // Code-unit order, not the locale's: the same on every machine.
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const relPath = rel === '' ? name : `${rel}/${name}`;
    const unsafe = unsafeEntryName(relPath);
    if (unsafe) throw new CellaError('INVALID_ARGUMENT', `${relPath} cannot be zipped: ${unsafe}`);
    const abs = path.join(root, relPath);
    const info = await lstat(abs);
    const mode = info.mode & 0o777;
    if (info.isDirectory()) {
      zip.addEmptyDirectory(relPath, { ...ENTRY_TIME, mode: S_IFDIR | mode });
      await addFolder(zip, root, relPath);
    } else if (info.isFile()) {
      zip.addFile(abs, relPath, { ...ENTRY_TIME, mode: S_IFREG | mode });
    } else if (info.isSymbolicLink()) {
      const target = await readlink(abs);
      const escape = escapingSymlink(relPath, target);
      if (escape) throw new CellaError('INVALID_ARGUMENT', `symlink ${relPath} cannot be zipped: ${escape}`);
      zip.addBuffer(Buffer.from(target), relPath, { ...ENTRY_TIME, mode: S_IFLNK | 0o777, compress: false });
    } else {
      throw new CellaError('INVALID_ARGUMENT', `${relPath} cannot be zipped: not a file, folder or symlink`);
    }
  }
}

function collect(zip: yazl.ZipFile): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.on('error', reject);
    zip.outputStream.on('data', (chunk: Buffer) => chunks.push(chunk));
    zip.outputStream.on('error', reject);
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}
