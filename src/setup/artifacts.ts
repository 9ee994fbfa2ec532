/**
 * The read side of the guest artifacts that setup writes: the kernel, the
 * initrd carrying cella-init, the demo app and the base trees. The engine
 * calls this before every boot, so it only checks that files exist.
 */

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CellaError, SETUP_COMMAND, setupMissing } from '../contract/index.js';

export const DEFAULT_GUEST_DIR = process.env.CELLA_GUEST_DIR ?? '/var/lib/cella/guest';

export interface GuestManifest {
  format: 1;
  kernelVersion: string;
  kernelPackage: string;
  vmlinuxSha256: string;
  initrdSha256: string;
  /** sha256 of the cella-init binary packed into the initrd as /init. */
  agentSha256: string;
  /** Kernel module names packed into the initrd under /cella/modules. */
  modules: string[];
  createdAt: string;
}

export interface GuestArtifacts {
  dir: string;
  kernel: string;
  initrd: string;
  demoApp: string;
  /** cella-spawn: the host's prelude to each QEMU (guest/host/spawn.c), built with the guest's binaries. */
  spawner: string;
  /** cella-netd: the host's network namespace helper (guest/host/netd.c, ADR 0013), built with them. */
  netd: string;
  bases: string;
  manifest: GuestManifest;
}

/** Paths of the artifacts inside a guest dir; shared with the writer so the two cannot drift. */
export function guestPaths(dir: string): Omit<GuestArtifacts, 'manifest'> & { manifest: string } {
  return {
    dir,
    kernel: join(dir, 'vmlinux'),
    initrd: join(dir, 'initrd.cpio'),
    demoApp: join(dir, 'cella-demo'),
    spawner: join(dir, 'cella-spawn'),
    netd: join(dir, 'cella-netd'),
    bases: join(dir, 'bases'),
    manifest: join(dir, 'manifest.json'),
  };
}

function isManifest(value: unknown): value is GuestManifest {
  if (typeof value !== 'object' || value === null) return false;
  const m = value as Record<string, unknown>;
  const strings = ['kernelVersion', 'kernelPackage', 'vmlinuxSha256', 'initrdSha256', 'agentSha256', 'createdAt'];
  return m.format === 1 && strings.every((k) => typeof m[k] === 'string') && Array.isArray(m.modules) && m.modules.every((n) => typeof n === 'string');
}

/** Reads and validates manifest.json; undefined when it is absent. */
export function readManifest(path: string): GuestManifest | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CellaError('SETUP_MISSING', `cannot read guest manifest at ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new CellaError('SETUP_MISSING', `guest manifest at ${path} is not valid JSON; run \`${SETUP_COMMAND}\` to rebuild it`, { cause, details: { path } });
  }
  if (!isManifest(parsed)) {
    throw new CellaError('SETUP_MISSING', `guest manifest at ${path} has an unknown format; run \`${SETUP_COMMAND}\` to rebuild it`, { details: { path } });
  }
  return parsed;
}

export function loadGuestArtifacts(dir = DEFAULT_GUEST_DIR): GuestArtifacts {
  const paths = guestPaths(dir);
  if (!existsSync(paths.kernel)) throw setupMissing('guest kernel', paths.kernel);
  if (!existsSync(paths.initrd)) throw setupMissing('guest initrd', paths.initrd);
  if (!existsSync(paths.demoApp)) throw setupMissing('guest demo app', paths.demoApp);
  if (!existsSync(paths.spawner)) throw setupMissing('cella-spawn (the QEMU prelude)', paths.spawner);
  if (!existsSync(paths.netd)) throw setupMissing('cella-netd (the network helper)', paths.netd);
  // Setup writes the manifest last, so its absence also means an unfinished setup.
  const manifest = readManifest(paths.manifest);
  if (!manifest) throw setupMissing('guest agent manifest', paths.manifest);
  return { ...paths, manifest };
}

/** bases/<name>/base.json: what an image built FROM <name> starts with. */
export interface BaseInfo {
  name: string;
  description: string;
  /** The environment of the image's process unless the image overrides it. */
  env: Record<string, string>;
  createdAt: string;
  /** Debian packages installed on top of the variant's own; absent for busybox. */
  packages?: string[];
  /** Bytes the tree takes on the host's disk (du). */
  sizeBytes: number;
  /** sha256 over everything the tree was built from; setup rebuilds the base when it changes. */
  inputsSha256: string;
}

function isBaseInfo(value: unknown): value is BaseInfo {
  if (typeof value !== 'object' || value === null) return false;
  const b = value as Record<string, unknown>;
  const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((s) => typeof s === 'string');
  return (
    ['name', 'description', 'createdAt', 'inputsSha256'].every((k) => typeof b[k] === 'string') &&
    typeof b.sizeBytes === 'number' &&
    typeof b.env === 'object' &&
    b.env !== null &&
    Object.values(b.env).every((v) => typeof v === 'string') &&
    (b.packages === undefined || isStrings(b.packages))
  );
}

/** The base.json in `baseDir`; undefined when it is absent, unreadable or of another shape (setup then rebuilds the base). */
export function readBaseInfo(baseDir: string): BaseInfo | undefined {
  try {
    const parsed: unknown = JSON.parse(readFileSync(join(baseDir, 'base.json'), 'utf8'));
    return isBaseInfo(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** The finished bases in a guest dir, by name. Setup writes base.json after the tree is in place, so a listed base is complete. */
export function listBases(guestDir = DEFAULT_GUEST_DIR): BaseInfo[] {
  const dir = guestPaths(guestDir).bases;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries.sort().flatMap((name) => {
    const info = readBaseInfo(join(dir, name));
    return info?.name === name && existsSync(join(dir, name, 'tree')) ? [info] : [];
  });
}

export function baseTree(artifacts: GuestArtifacts, name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new CellaError('INVALID_ARGUMENT', `invalid base name ${JSON.stringify(name)}`);
  }
  const tree = join(artifacts.bases, name, 'tree');
  if (!existsSync(tree)) throw setupMissing(`base tree "${name}"`, tree);
  return tree;
}
