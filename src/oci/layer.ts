/**
 * Applies one image layer (a tar stream) onto a directory tree the way an
 * overlay filesystem would stack it: `.wh.<name>` removes a lower layer's
 * entry, `.wh..wh..opq` hides everything lower layers put in a directory.
 * Nothing is ever written outside the tree: names with `..` or a leading
 * `/`, hardlinks to outside, and paths that pass through a symlink are refused.
 */
import { createWriteStream, type Stats } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, readdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import tar, { type ExtractEvents } from 'tar-stream';
import { BuildFailure } from '../contract/index.js';

export type Compression = 'gzip' | 'zstd' | 'none';

type Entry = ExtractEvents['entry'][1];

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export interface ApplyOptions {
  /** Names the layer in errors and log lines, e.g. `layer 2/3`. */
  label: string;
  log: (line: string) => void;
  /** Bytes of file content this layer may still write; exceeding it fails the pull. */
  budget: number;
}

/** fzstd's streaming decoder as a Node transform (Node 20's zlib has no zstd). */
function zstdDecompressor(): Transform {
  const out = new Transform({
    transform(chunk: Buffer, _enc, done) {
      try {
        decoder.push(chunk);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(done) {
      try {
        decoder.push(new Uint8Array(0), true);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
  // Copied: fzstd may hand out views of a window it later overwrites.
  const decoder = new Decompress((data) => out.push(Buffer.from(data)));
  return out;
}

function decompressor(c: Compression): Transform | null {
  return c === 'gzip' ? createGunzip() : c === 'zstd' ? zstdDecompressor() : null;
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Applies the layer in `source`; returns the bytes of file content written. */
export async function applyLayer(source: Readable, compression: Compression, root: string, opts: ApplyOptions): Promise<number> {
  const refuse = (name: string, why: string) => new BuildFailure('CONTAINER_BUILD_FAILED', `${opts.label}: refusing entry "${name}": ${why}`);

  /** Path components inside the tree; never absolute, never `..`. */
  const components = (name: string): string[] => {
    if (name.startsWith('/')) throw refuse(name, 'absolute path');
    const parts = name.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.includes('..')) throw refuse(name, 'path escapes the image root');
    return parts;
  };

  /** The directory holding `parts`' last component, creating missing ones; a symlink on the way is refused. */
  const parentDir = async (name: string, parts: string[], create: boolean): Promise<string> => {
    let dir = root;
    for (const c of parts.slice(0, -1)) {
      dir = path.join(dir, c);
      const st = await lstatOrNull(dir);
      if (st?.isSymbolicLink()) throw refuse(name, `${path.relative(root, dir)} is a symlink`);
      if (st && !st.isDirectory()) throw refuse(name, `${path.relative(root, dir)} is not a directory`);
      if (!st) {
        if (!create) throw refuse(name, `${path.relative(root, dir)} does not exist`);
        await mkdir(dir, { mode: 0o755 });
      }
    }
    return dir;
  };

  // Entries this layer made: whiteouts and opaque markers hide only lower layers, whatever the order in the tar.
  const ours = new Set<string>();

  /** Removes everything under `dir` that this layer did not put there. */
  const prune = async (dir: string, rel: string): Promise<void> => {
    for (const child of await readdir(dir, { withFileTypes: true })) {
      const childRel = rel ? `${rel}/${child.name}` : child.name;
      if (!ours.has(childRel)) await rm(path.join(dir, child.name), { recursive: true, force: true });
      else if (child.isDirectory()) await prune(path.join(dir, child.name), childRel);
    }
  };

  let written = 0;
  const apply = async (entry: Entry): Promise<void> => {
    const h = entry.header;
    const parts = components(h.name);
    const base = parts.at(-1);
    if (base === undefined) return; // The root itself: its metadata belongs to whoever made destTree.
    const dir = await parentDir(h.name, parts, true);
    const rel = parts.join('/');
    const relDir = parts.slice(0, -1).join('/');
    if (base === OPAQUE) return prune(dir, relDir);
    if (base.startsWith(WHITEOUT)) {
      const victim = base.slice(WHITEOUT.length);
      if (!ours.has(relDir ? `${relDir}/${victim}` : victim)) await rm(path.join(dir, victim), { recursive: true, force: true });
      return;
    }
    const target = path.join(dir, base);
    const existing = await lstatOrNull(target);
    // Replace rather than write into: an existing symlink is never followed.
    if (existing && !(h.type === 'directory' && existing.isDirectory())) await rm(target, { recursive: true, force: true });
    const mode = (h.mode ?? 0o644) & 0o7777;
    switch (h.type) {
      case 'directory':
        if (!existing?.isDirectory()) await mkdir(target, { mode: 0o700 });
        break;
      case 'file':
      case 'contiguous-file':
        written += h.size ?? 0;
        if (written > opts.budget) {
          throw new BuildFailure('DISK_STORAGE_FULL', `${opts.label}: the image is larger than the allowed size`);
        }
        // 'wx' fails on anything already there, so a racing symlink is not followed either.
        await pipeline(entry, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
        break;
      case 'symlink':
        await symlink(h.linkname ?? '', target);
        break;
      case 'link': {
        const from = components(h.linkname ?? '');
        if (from.length === 0) throw refuse(h.name, 'hardlink to the image root');
        const source = path.join(await parentDir(h.name, from, false), from.at(-1)!);
        const st = await lstatOrNull(source);
        if (!st || st.isDirectory()) throw refuse(h.name, `hardlink target ${h.linkname} is not a file in the image`);
        await link(source, target);
        ours.add(rel);
        return; // Shares the target's inode, owner and mode.
      }
      // Device nodes and FIFOs are not made in an unprivileged build, nor is a type tar-stream does not know (untrusted input).
      case 'block-device':
      case 'character-device':
      case 'fifo':
      default:
        opts.log(`${opts.label}: skipping ${h.type} ${h.name}`);
        return;
    }
    ours.add(rel);
    await lchown(target, h.uid ?? 0, h.gid ?? 0);
    // After chown, which clears setuid/setgid bits.
    if (h.type !== 'symlink') await chmod(target, mode);
    // Not directories: their later entries would change it again.
    if (h.type !== 'directory' && h.mtime) await lutimes(target, h.mtime, h.mtime);
  };

  const extract = tar.extract();
  const inflate = decompressor(compression);
  const feeding = inflate ? pipeline(source, inflate, extract) : pipeline(source, extract);
  try {
    for await (const entry of extract) {
      await apply(entry);
      entry.resume(); // Whatever was not read (whiteouts, skipped types) is drained.
    }
    await feeding;
  } catch (err) {
    source.destroy();
    extract.destroy();
    await feeding.catch(() => undefined);
    if (err instanceof BuildFailure) throw err;
    throw new BuildFailure('CONTAINER_BUILD_FAILED', `${opts.label}: cannot unpack: ${(err as Error).message}`);
  }
  return written;
}
