/**
 * Gets a guest kernel from the distro: Debian's cloud kernel package, unpacked
 * without installing it, and its bzImage turned back into the ELF vmlinux that
 * QEMU's microvm machine boots directly (PVH entry point).
 */

import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CellaError, SETUP_COMMAND } from '../contract/index.js';
import { run } from '../host/index.js';

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** The same magics and order as scripts/extract-vmlinux, with the tool that decodes each from stdin. */
const DECOMPRESSORS: readonly { name: string; magic: Buffer; cmd: string; args: string[] }[] = [
  { name: 'gzip', magic: Buffer.from([0x1f, 0x8b, 0x08]), cmd: 'gzip', args: ['-dc'] },
  { name: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), cmd: 'xz', args: ['-dc'] },
  { name: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), cmd: 'zstd', args: ['-dc'] },
  { name: 'lz4', magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), cmd: 'lz4', args: ['-dc'] },
  { name: 'bzip2', magic: Buffer.from('BZh', 'ascii'), cmd: 'bzip2', args: ['-dc'] },
  { name: 'lzma', magic: Buffer.from([0x5d, 0x00, 0x00, 0x00]), cmd: 'unlzma', args: ['-c'] },
];

const DECOMPRESS_TIMEOUT_MS = 60_000;

type Attempt = { kind: 'elf'; data: Buffer } | { kind: 'other' } | { kind: 'missing' };

/**
 * Feeds `input` to a decompressor and keeps its output only if it starts with
 * the ELF magic. The exit status is ignored: the payload is followed by
 * non-compressed bytes, so the tools often complain after a complete stream.
 * Output that does not start like an ELF file stops the tool early.
 */
function tryDecompress(cmd: string, args: string[], input: Buffer): Promise<Attempt> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    let length = 0;
    let checked = false;
    let rejected = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), DECOMPRESS_TIMEOUT_MS);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ENOENT' ? { kind: 'missing' } : { kind: 'other' });
    });
    // The tool may exit (or be killed) before reading all of its input.
    child.stdin.on('error', () => undefined);
    child.stdout.on('data', (chunk: Buffer) => {
      if (rejected) return;
      chunks.push(chunk);
      length += chunk.length;
      if (!checked && length >= ELF_MAGIC.length) {
        checked = true;
        if (!Buffer.concat(chunks).subarray(0, ELF_MAGIC.length).equals(ELF_MAGIC)) {
          rejected = true;
          child.kill('SIGKILL');
        }
      }
    });
    child.on('close', () => {
      clearTimeout(timer);
      if (rejected || length < ELF_MAGIC.length) resolve({ kind: 'other' });
      else resolve({ kind: 'elf', data: Buffer.concat(chunks, length) });
    });
    child.stdin.end(input);
  });
}

function offsetsOf(haystack: Buffer, needle: Buffer): number[] {
  const found: number[] = [];
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) found.push(at);
  return found;
}

/** Recovers the uncompressed ELF kernel from a bzImage, like the kernel's scripts/extract-vmlinux. */
export async function extractVmlinux(vmlinuz: Buffer): Promise<Buffer> {
  const missing: string[] = [];
  const tried: string[] = [];
  for (const d of DECOMPRESSORS) {
    const offsets = offsetsOf(vmlinuz, d.magic);
    if (offsets.length === 0) continue;
    tried.push(d.name);
    for (const offset of offsets) {
      const attempt = await tryDecompress(d.cmd, d.args, vmlinuz.subarray(offset));
      if (attempt.kind === 'elf') return attempt.data;
      if (attempt.kind === 'missing') {
        missing.push(d.cmd);
        break;
      }
    }
  }
  const hint = missing.length > 0 ? `; missing decompressors: ${missing.join(', ')} (run \`${SETUP_COMMAND}\`)` : '';
  throw new CellaError(
    missing.length > 0 ? 'SETUP_MISSING' : 'COMMAND_FAILED',
    `no ELF kernel found inside the compressed kernel image (tried ${tried.join(', ') || 'no known compression magic'})${hint}`,
    {
      details: { tried, missing },
    },
  );
}

export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

export interface KernelPackage {
  /** Kernel release, as in /lib/modules/<version>, e.g. 6.1.0-56-cloud-amd64. */
  version: string;
  /** The versioned package the meta package points at, e.g. linux-image-6.1.0-56-cloud-amd64. */
  pkg: string;
}

/** Resolves the meta package to the current versioned kernel package from the local apt lists (no network). */
export async function resolveKernelPackage(): Promise<KernelPackage> {
  let out: string;
  try {
    out = await run('apt-cache', ['depends', KERNEL_META_PACKAGE]);
  } catch (cause) {
    throw new CellaError('SETUP_MISSING', `cannot resolve ${KERNEL_META_PACKAGE} from the apt lists; run \`apt-get update\` and \`${SETUP_COMMAND}\``, {
      cause,
    });
  }
  const match = /Depends:\s*(linux-image-(\S+-cloud-amd64))\s*$/m.exec(out);
  if (!match?.[1] || !match[2]) {
    throw new CellaError(
      'SETUP_MISSING',
      `${KERNEL_META_PACKAGE} does not depend on a versioned kernel package; run \`apt-get update\` and \`${SETUP_COMMAND}\``,
      {
        details: { output: out.trim() },
      },
    );
  }
  return { pkg: match[1], version: match[2] };
}

export interface FetchedKernel extends KernelPackage {
  vmlinux: Buffer;
  /** <work>/x/lib/modules/<version>, from the unpacked package. */
  modulesDir: string;
}

/** Downloads and unpacks the cloud kernel package into `work` (which must exist); nothing is installed. */
export async function fetchKernel(work: string, kernel?: KernelPackage): Promise<FetchedKernel> {
  const { pkg, version } = kernel ?? (await resolveKernelPackage());
  await run('apt-get', ['download', pkg], { cwd: work, timeoutMs: 10 * 60_000 });
  const deb = (await readdir(work)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new CellaError('COMMAND_FAILED', `apt-get download ${pkg} left no .deb in ${work}`);
  const root = join(work, 'x');
  await run('dpkg-deb', ['-x', join(work, deb), root], { timeoutMs: 5 * 60_000 });
  const image = join(root, 'boot', `vmlinuz-${version}`);
  let vmlinuz: Buffer;
  try {
    vmlinuz = await readFile(image);
  } catch (cause) {
    throw new CellaError('COMMAND_FAILED', `${pkg} has no kernel image at /boot/vmlinuz-${version}`, { cause });
  }
  return { pkg, version, vmlinux: await extractVmlinux(vmlinuz), modulesDir: join(root, 'lib', 'modules', version) };
}
