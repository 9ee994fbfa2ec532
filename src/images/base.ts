/** FROM resolved to a root disk: a managed base, or an OCI image pulled from its registry; each made once into the cache. */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ext4FromDir } from '../disk/index.js';
import { emptyConfig, type ContainerConfig } from '../dockerfile/index.js';
import { type Arns, BuildFailure, isCellaError } from '../contract/index.js';
import { pullImage } from '../oci/index.js';
import { baseTree, listBases } from '../setup/index.js';
import { DEFAULT_PATH, type BuildSettings, type Say } from './build-spec.js';
import { cacheDirs } from './cache.js';

/** Root disks are sparse: room for what RUN steps install and the app writes, paid for only when used. */
const ROOT_DISK_MIB = 4096;

export interface ResolvedBase {
  /** Raw ext4 the first layer stands on. */
  disk: string;
  /** Identity of that disk's content: the root of every step's cache key. */
  key: string;
  config: ContainerConfig;
}

/**
 * FROM names a managed base (`debian-12-python`, or its ARN) or an OCI
 * image reference, pulled from its registry.
 */
/** The managed base FROM names (a name, or its ARN), or FROM as it is; an ARN of another region or account fails the build. */
function managedBaseName(from: string, line: number, arns: Arns): string {
  try {
    return arns.managedImageName(from, 'FROM') ?? from;
  } catch (err) {
    if (!isCellaError(err, 'INVALID_ARGUMENT')) throw err;
    throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${err.message}`);
  }
}

export async function resolveBase(from: string, line: number, settings: BuildSettings, work: string, say: Say): Promise<ResolvedBase> {
  const bases = cacheDirs(settings.dataDir).bases;
  mkdirSync(bases, { recursive: true });
  const managed = listBases(settings.guest.dir).find((b) => b.name === managedBaseName(from, line, settings.arns));
  if (managed) {
    // A base rebuilt by setup (new inputs or --force) is a new root disk.
    const key = sha256(`managed\0${managed.name}\0${managed.inputsSha256}\0${managed.createdAt}`);
    const disk = path.join(bases, `${managed.name}-${key.slice(0, 16)}.ext4`);
    if (!existsSync(disk)) {
      say(`  preparing the root disk of the managed base ${managed.name}`);
      await ext4Atomic(baseTree(settings.guest, managed.name), disk);
    }
    return { disk, key, config: { ...emptyConfig(), env: { PATH: DEFAULT_PATH, ...managed.env } } };
  }
  if (/^scratch$/i.test(from))
    throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: FROM scratch is not supported: start from a managed base or an image`);
  say(`  pulling ${from}`);
  const tree = path.join(work, 'base-tree');
  let pulled;
  try {
    pulled = await pullImage(from, tree, {
      cacheDir: cacheDirs(settings.dataDir).blobs,
      ...(settings.insecureRegistries ? { insecureRegistries: settings.insecureRegistries } : {}),
      log: (l) => say(`  ${l}`),
    });
  } catch (err) {
    if (err instanceof BuildFailure) throw new BuildFailure(err.reason, `Dockerfile line ${line}: FROM ${from}: ${err.message}`);
    throw err;
  }
  const key = sha256(`oci\0${pulled.digest}`);
  const disk = path.join(bases, `oci-${key.slice(0, 16)}.ext4`);
  if (!existsSync(disk)) await ext4Atomic(tree, disk);
  rmSync(tree, { recursive: true, force: true });
  const config = { ...pulled.config, env: { PATH: DEFAULT_PATH, ...pulled.config.env } };
  return { disk, key, config };
}

async function ext4Atomic(tree: string, out: string): Promise<void> {
  const tmp = `${out}.partial`;
  rmSync(tmp, { force: true });
  await ext4FromDir(tree, tmp, ROOT_DISK_MIB, 'cella-root', { inodeRatio: 65536 });
  renameSync(tmp, out);
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
