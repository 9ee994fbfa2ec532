import { createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, realpath, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl, { type Entry, type ZipFile } from 'yauzl';
import { BuildFailure, CellaError } from '../contract/index.js';
import { escapingSymlink, unsafeEntryName } from './paths.js';

export interface ZipLimits {
  /** Total uncompressed bytes over all entries. */
  maxTotalBytes: number;
  maxEntries: number;
  /** Uncompressed / compressed size, checked for entries over 1 MiB. */
  maxRatio: number;
}

export const DEFAULT_ZIP_LIMITS: Readonly<ZipLimits> = {
  maxTotalBytes: 2 * 1024 ** 3,
  maxEntries: 50_000,
  maxRatio: 200,
};

/** Small files compress far better than 200:1 legitimately (a blank config), so the ratio applies above this. */
const RATIO_FLOOR = 1024 * 1024;
/** PATH_MAX: a longer symlink target cannot be created anyway. */
const MAX_LINK_TARGET = 4096;

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
/** "Version made by" hosts whose external attributes carry a unix mode: UNIX and OS X. */
const UNIX_HOSTS = new Set([3, 19]);

type Kind = 'dir' | 'file' | 'link';
const KIND_NAMES: Record<Kind, string> = { dir: 'folder', file: 'file', link: 'symlink' };

function invalid(message: string): BuildFailure {
  return new BuildFailure('ARCHIVE_INVALID', message);
}

/**
 * Extracts an untrusted zip into `destDir` (created if missing, must be empty).
 * Every entry lands inside `destDir`: unsafe names, escaping symlinks, paths
 * through symlinks, duplicates and zip bombs are refused with ARCHIVE_INVALID.
 * On failure `destDir` may hold part of the tree; the caller removes it.
 */
export async function extractZip(zipFile: string, destDir: string, limits: Partial<ZipLimits> = {}): Promise<{ entries: number; bytes: number }> {
  const lim: ZipLimits = { ...DEFAULT_ZIP_LIMITS, ...limits };
  const root = await emptyDestination(destDir);
  let zip: ZipFile;
  try {
    zip = await yauzl.openPromise(zipFile, { validateEntrySizes: true, strictFileNames: true });
  } catch (err) {
    throw invalid(`the archive is not a valid zip file: ${(err as Error).message}`);
  }
  if (zip.entryCount > lim.maxEntries) {
    zip.close();
    throw invalid(`the archive has ${zip.entryCount} entries, more than the limit of ${lim.maxEntries}`);
  }
  const extraction = new Extraction(zip, root, lim);
  try {
    // yauzl validates each name as it reads it (absolute, '..', backslash) and fails the iteration.
    for await (const entry of zip.eachEntry()) {
      extraction.current = entry.fileName;
      await extraction.add(entry);
      extraction.current = null;
    }
  } catch (err) {
    if (err instanceof BuildFailure || err instanceof CellaError) throw err;
    const { code, message } = err as NodeJS.ErrnoException;
    if (code === 'ENOSPC') throw new BuildFailure('DISK_STORAGE_FULL', `extracting the archive: ${message}`);
    // Inflate errors, size mismatches, unwritable names: the entry at fault is the one being written.
    if (extraction.current !== null) throw invalid(`archive entry ${JSON.stringify(extraction.current)} is invalid: ${message}`);
    throw invalid(`the zip archive is invalid or unsafe: ${message}`);
  }
  return { entries: extraction.entries, bytes: extraction.bytes };
}

/**
 * How many entries the zip at `zipFile` lists (read from its central directory only),
 * or undefined when it is not a readable zip: the build reports that, as it does for any artifact.
 */
export async function zipEntryCount(zipFile: string): Promise<number | undefined> {
  let zip: ZipFile;
  try {
    zip = await yauzl.openPromise(zipFile);
  } catch {
    return undefined;
  }
  zip.close();
  return zip.entryCount;
}

async function emptyDestination(destDir: string): Promise<string> {
  await mkdir(destDir, { recursive: true });
  const existing = await readdir(destDir);
  if (existing.length > 0) throw new CellaError('INVALID_ARGUMENT', `extraction directory ${destDir} is not empty`);
  // Resolved once so joined paths never pass through a symlink above the root either.
  return realpath(destDir);
}

class Extraction {
  entries = 0;
  bytes = 0;
  /** The entry being written, named when a read or write fails under it. */
  current: string | null = null;
  /** What each path under the root is, both explicit entries and parents created for them. */
  private readonly kinds = new Map<string, Kind>();
  private readonly explicit = new Set<string>();

  constructor(
    private readonly zip: ZipFile,
    private readonly root: string,
    private readonly limits: ZipLimits,
  ) {}

  async add(entry: Entry): Promise<void> {
    this.entries += 1;
    const isDir = entry.fileName.endsWith('/');
    const name = isDir ? entry.fileName.slice(0, -1) : entry.fileName;
    const refuse = (why: string) => invalid(`archive entry ${JSON.stringify(entry.fileName)} is refused: ${why}`);
    const unsafe = unsafeEntryName(name);
    if (unsafe) throw refuse(unsafe);
    if (this.explicit.has(name)) throw refuse('the archive has it twice');
    this.explicit.add(name);

    const unixMode = UNIX_HOSTS.has(entry.versionMadeBy >> 8) ? entry.externalFileAttributes >>> 16 : 0;
    const segments = name.split('/');
    await this.ensureParents(segments, refuse);
    const target = path.join(this.root, ...segments);

    if (isDir) {
      const kind = this.kinds.get(name);
      if (kind !== undefined && kind !== 'dir') throw refuse(`a ${KIND_NAMES[kind]} has the same path`);
      if (kind === undefined) await this.makeDir(name, target);
      await chmod(target, dirMode(unixMode));
      return;
    }
    const existing = this.kinds.get(name);
    if (existing !== undefined) throw refuse(`a ${KIND_NAMES[existing]} has the same path`);
    this.checkDeclaredSize(entry, refuse);

    if ((unixMode & S_IFMT) === S_IFLNK) {
      const link = await this.readLinkTarget(entry, refuse);
      const escape = escapingSymlink(name, link);
      if (escape) throw refuse(escape);
      await symlink(link, target);
      this.kinds.set(name, 'link');
      return;
    }
    this.kinds.set(name, 'file');
    await pipeline(
      await this.zip.openReadStreamPromise(entry),
      this.meter(entry, refuse),
      // 'wx' (O_EXCL) never opens an existing file or symlink: the write lands in a new file or nowhere.
      createWriteStream(target, { flags: 'wx', mode: 0o600 }),
    );
    // By path, on the file just created exclusively; the mode given at creation is masked by the umask.
    await chmod(target, fileMode(unixMode));
  }

  /** Creates the entry's parent folders, refusing a parent that is a file or a symlink (never written through). */
  private async ensureParents(segments: string[], refuse: (why: string) => BuildFailure): Promise<void> {
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      const kind = this.kinds.get(parent);
      if (kind === 'dir') continue;
      if (kind !== undefined) throw refuse(`its parent ${parent} is a ${KIND_NAMES[kind]}`);
      const dir = path.join(this.root, ...segments.slice(0, i));
      await this.makeDir(parent, dir);
      await chmod(dir, dirMode(0));
    }
  }

  private async makeDir(name: string, dir: string): Promise<void> {
    await mkdir(dir);
    this.kinds.set(name, 'dir');
  }

  /** Fails before inflating anything when the central directory already admits a bomb. */
  private checkDeclaredSize(entry: Entry, refuse: (why: string) => BuildFailure): void {
    const { maxTotalBytes, maxRatio } = this.limits;
    if (this.bytes + entry.uncompressedSize > maxTotalBytes) {
      throw refuse(`the archive unpacks to more than ${maxTotalBytes} bytes`);
    }
    if (entry.uncompressedSize > RATIO_FLOOR && entry.uncompressedSize > maxRatio * Math.max(1, entry.compressedSize)) {
      throw refuse(`it is compressed more than ${maxRatio}:1`);
    }
  }

  /**
   * Counts the entry's bytes as they are inflated: the sizes in the zip are
   * the sender's word, so the limits hold on what actually comes out.
   */
  private meter(entry: Entry, refuse: (why: string) => BuildFailure): Transform {
    const { maxTotalBytes, maxRatio } = this.limits;
    let entryBytes = 0;
    return new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        entryBytes += chunk.length;
        this.bytes += chunk.length;
        if (this.bytes > maxTotalBytes) return callback(refuse(`the archive unpacks to more than ${maxTotalBytes} bytes`));
        if (entryBytes > RATIO_FLOOR && entryBytes > maxRatio * Math.max(1, entry.compressedSize)) {
          return callback(refuse(`it is compressed more than ${maxRatio}:1`));
        }
        callback(null, chunk);
      },
    });
  }

  private async readLinkTarget(entry: Entry, refuse: (why: string) => BuildFailure): Promise<string> {
    const chunks: Buffer[] = [];
    let length = 0;
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        length += chunk.length;
        if (length > MAX_LINK_TARGET) return callback(refuse(`its symlink target is longer than ${MAX_LINK_TARGET} bytes`));
        chunks.push(chunk);
        callback();
      },
    });
    await pipeline(await this.zip.openReadStreamPromise(entry), this.meter(entry, refuse), sink);
    return Buffer.concat(chunks).toString('utf8');
  }
}

/** Permission bits only (never setuid, setgid or sticky); the owner keeps rwx so the tree can be filled and removed. */
function dirMode(unixMode: number): number {
  return (unixMode & 0o777 || 0o755) | 0o700;
}

/** Permission bits only (never setuid, setgid or sticky); the owner keeps rw so the build can read and the tree be removed. */
function fileMode(unixMode: number): number {
  return (unixMode & 0o777 || 0o644) | 0o600;
}

/**
 * The root-level `Dockerfile` of an extracted build context. When it is
 * missing, the error names a near miss: a Dockerfile one folder down (the
 * parent folder was zipped) or one spelt with another case.
 */
export async function findDockerfile(dir: string): Promise<string> {
  const file = path.join(dir, 'Dockerfile');
  if (await isFileInside(dir, file)) return file;
  const nearMiss = await findNearMiss(dir);
  let hint = '';
  if (nearMiss?.includes('/')) hint = `; found ${nearMiss}: zip the folder's contents, not the folder`;
  else if (nearMiss) hint = `; found ${nearMiss}: the name must be exactly "Dockerfile"`;
  throw new BuildFailure('ARCHIVE_DOCKERFILE_NOT_FOUND', `the archive has no Dockerfile at its root${hint}`);
}

async function isFileInside(dir: string, file: string): Promise<boolean> {
  const link = await lstat(file).catch(() => null);
  if (link === null) return false;
  if (link.isFile()) return true;
  if (!link.isSymbolicLink()) return false;
  const [real, base] = await Promise.all([realpath(file).catch(() => null), realpath(dir)]);
  return real !== null && real.startsWith(base + path.sep) && (await stat(real)).isFile();
}

/** Searched breadth first, two levels down, without following symlinks: the shallowest hit is the likeliest mistake. */
async function findNearMiss(dir: string): Promise<string | null> {
  let level = [''];
  for (let depth = 0; depth < 3 && level.length > 0; depth++) {
    const next: string[] = [];
    for (const rel of level) {
      const items = await readdir(path.join(dir, rel), { withFileTypes: true }).catch(() => []);
      items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const item of items) {
        const relPath = rel === '' ? item.name : `${rel}/${item.name}`;
        if (item.isFile() && item.name.toLowerCase() === 'dockerfile') return relPath;
        if (item.isDirectory()) next.push(relPath);
      }
    }
    level = next;
  }
  return null;
}
