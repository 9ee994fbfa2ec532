/**
 * Guest setup: builds everything a Cella guest boots from into one directory
 * (kernel, initrd with cella-init and the virtio modules, demo app, base
 * trees) using only distro packages. Idempotent: a rerun rebuilds only what
 * changed and the manifest, written last, marks a finished setup.
 */

import { createHash } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { delimiter, join, resolve } from 'node:path';
import { CellaError, setupMissing } from '../errors/index.js';
import { run } from '../host/index.js';
import { DEFAULT_GUEST_DIR, guestPaths, loadGuestArtifacts, readManifest, type GuestArtifacts, type GuestManifest } from './artifacts.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { fetchKernel, resolveKernelPackage } from './kernel.js';

export { DEFAULT_GUEST_DIR, baseTree, loadGuestArtifacts, type GuestArtifacts, type GuestManifest } from './artifacts.js';
export { buildDemoRootfs, DEMO_APP, DEMO_PORT } from './demo.js';

/** What cella-init loads before mounting the root disk and bringing up eth0 and the virtio consoles. */
export const GUEST_MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'failover', 'net_failover', 'virtio_net', 'virtio_console'] as const;

const BUSYBOX = '/bin/busybox';
const BASE_PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface SetupOptions {
  guestDir?: string;
  repoRoot: string;
  log?: (line: string) => void;
  /** Rebuild and re-download everything even if it looks current. */
  force?: boolean;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function fileSha256(path: string): Promise<string | undefined> {
  try {
    return sha256(await readFile(path));
  } catch {
    return undefined;
  }
}

/** Write-then-rename, so a reader never sees a half-written file. */
async function writeAtomic(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode); // writeFile's mode is filtered by the umask
  await rename(tmp, path);
}

/** Puts a freshly built directory in place of `path`, keeping the old one until the swap is done. */
async function replaceDir(path: string, fresh: string): Promise<void> {
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

async function requireTools(tools: readonly (readonly [cmd: string, debianPackage: string])[]): Promise<void> {
  for (const [cmd, pkg] of tools) {
    if (!(await onPath(cmd))) throw setupMissing(`${cmd} (Debian package ${pkg})`, `PATH=${process.env.PATH ?? ''}`);
  }
}

/** Finds <name>.ko for each wanted module anywhere under <modulesDir>/kernel. */
async function findModules(modulesDir: string): Promise<Map<string, string>> {
  const wanted = new Set<string>(GUEST_MODULES);
  const found = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && entry.name.endsWith('.ko') && wanted.has(entry.name.slice(0, -'.ko'.length))) {
        found.set(entry.name.slice(0, -'.ko'.length), path);
      }
    }
  };
  await walk(join(modulesDir, 'kernel'));
  const missing = GUEST_MODULES.filter((m) => !found.has(m));
  if (missing.length > 0) {
    throw new CellaError('COMMAND_FAILED', `kernel package lacks uncompressed modules: ${missing.join(', ')}`, { details: { modulesDir, missing } });
  }
  return found;
}

/** A kept copy of the modules, so the initrd can be rebuilt without downloading the kernel again. */
function moduleCachePath(guestDir: string, name: string): string {
  return join(guestDir, 'modules', `${name}.ko`);
}

function kernelIsCurrent(guestDir: string, previous: GuestManifest | undefined, version: string, vmlinuxSha: string | undefined): boolean {
  return (
    previous !== undefined &&
    previous.kernelVersion === version &&
    previous.vmlinuxSha256 === vmlinuxSha &&
    previous.modules.join(',') === GUEST_MODULES.join(',') &&
    GUEST_MODULES.every((m) => existsSync(moduleCachePath(guestDir, m)))
  );
}

async function buildInitrd(guestDir: string, agent: Buffer): Promise<Buffer> {
  const dir = (path: string): CpioEntry => ({ path, mode: 0o040755 });
  const entries: CpioEntry[] = [
    { path: '/init', mode: 0o100755, data: agent },
    { path: '/proc', mode: 0o040555 },
    { path: '/sys', mode: 0o040555 },
    dir('/dev'),
    dir('/newroot'),
    dir('/cella'),
    dir('/cella/modules'),
  ];
  for (const m of GUEST_MODULES) {
    entries.push({ path: `/cella/modules/${m}.ko`, mode: 0o100644, data: await readFile(moduleCachePath(guestDir, m)) });
  }
  return writeCpio(entries);
}

async function busyboxApplets(): Promise<string[]> {
  const out = await run(BUSYBOX, ['--list']);
  // Applet names are plain words plus '[' and '[['; anything else is not a safe file name.
  return out.split('\n').map((l) => l.trim()).filter((l) => /^[A-Za-z0-9._[\]-]+$/.test(l) && l !== '.' && l !== '..');
}

/** Builds the busybox root tree into a fresh directory next to `tree` and swaps it in. */
async function buildBusyboxBase(baseDir: string): Promise<number> {
  const tree = join(baseDir, 'tree');
  await mkdir(baseDir, { recursive: true });
  const tmp = await mkdtemp(join(baseDir, 'tree.tmp-'));
  try {
    const dirs: [string, number][] = [
      ['bin', 0o755], ['etc', 0o755], ['proc', 0o555], ['sys', 0o555], ['dev', 0o755], ['tmp', 0o1777],
      ['var', 0o755], ['root', 0o700], ['usr', 0o755], ['usr/bin', 0o755], ['usr/sbin', 0o755], ['sbin', 0o755],
      ['run', 0o755], ['home', 0o755],
    ];
    await chmod(tmp, 0o755);
    for (const [d, mode] of dirs) {
      await mkdir(join(tmp, d));
      await chmod(join(tmp, d), mode); // explicit: mkdir's mode is filtered by the umask and drops the sticky bit
    }
    await copyFile(BUSYBOX, join(tmp, 'bin', 'busybox'));
    await chmod(join(tmp, 'bin', 'busybox'), 0o755);
    const taken = new Set(['busybox']);
    let links = 0;
    for (const applet of await busyboxApplets()) {
      if (taken.has(applet)) continue;
      taken.add(applet);
      await symlink('busybox', join(tmp, 'bin', applet));
      links++;
    }
    const etc: [string, string][] = [
      ['passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'],
      ['group', 'root:x:0:\nnogroup:x:65534:\n'],
      ['hostname', 'cella\n'],
      ['hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost\n'],
    ];
    for (const [name, text] of etc) {
      await writeFile(join(tmp, 'etc', name), text);
      await chmod(join(tmp, 'etc', name), 0o644);
    }
    await replaceDir(tree, tmp);
    return links;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

async function busyboxBaseIsCurrent(baseDir: string): Promise<boolean> {
  if (!existsSync(join(baseDir, 'base.json'))) return false;
  const [have, want] = await Promise.all([fileSha256(join(baseDir, 'tree', 'bin', 'busybox')), fileSha256(BUSYBOX)]);
  return have !== undefined && have === want;
}

export async function setupGuest(opts: SetupOptions): Promise<GuestArtifacts> {
  // Absolute, because make runs in another directory and gets OUT from here.
  const guestDir = resolve(opts.guestDir ?? DEFAULT_GUEST_DIR);
  const log = opts.log ?? (() => undefined);
  const force = opts.force ?? false;
  const paths = guestPaths(guestDir);
  await mkdir(guestDir, { recursive: true });

  let previous: GuestManifest | undefined;
  try {
    previous = force ? undefined : readManifest(paths.manifest);
  } catch {
    previous = undefined; // a damaged manifest only means everything is rebuilt
  }

  // a. Guest binaries; make itself skips them when the sources are unchanged.
  await requireTools([['make', 'make'], ['musl-gcc', 'musl-tools'], ['strip', 'binutils']]);
  const build = join(guestDir, 'build');
  log(`guest: building cella-init and cella-demo into ${build}`);
  await run('make', ['-C', resolve(opts.repoRoot, 'guest'), ...(force ? ['-B'] : []), 'CC=musl-gcc', `OUT=${build}`], { timeoutMs: 5 * 60_000 });
  const agent = await readFile(join(build, 'cella-init'));
  const agentSha = sha256(agent);

  // b. Kernel and its modules.
  await requireTools([['apt-cache', 'apt'], ['apt-get', 'apt'], ['dpkg-deb', 'dpkg']]);
  const kernelPkg = await resolveKernelPackage();
  let vmlinuxSha = await fileSha256(paths.kernel);
  const kernelChanged = !kernelIsCurrent(guestDir, previous, kernelPkg.version, vmlinuxSha);
  if (kernelChanged) {
    log(`kernel: downloading ${kernelPkg.pkg}`);
    const work = await mkdtemp(join(guestDir, '.work-'));
    try {
      const kernel = await fetchKernel(work, kernelPkg);
      const modules = await findModules(kernel.modulesDir);
      const fresh = await mkdtemp(join(guestDir, 'modules.tmp-'));
      await chmod(fresh, 0o755); // mkdtemp makes it 0700
      for (const [name, path] of modules) await copyFile(path, join(fresh, `${name}.ko`));
      await replaceDir(join(guestDir, 'modules'), fresh);
      await writeAtomic(paths.kernel, kernel.vmlinux);
      vmlinuxSha = sha256(kernel.vmlinux);
      log(`kernel: ${kernel.version} extracted (${(kernel.vmlinux.length / 2 ** 20).toFixed(1)} MiB), ${modules.size} modules kept`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  } else {
    log(`kernel: ${kernelPkg.version} already present`);
  }
  if (vmlinuxSha === undefined) throw setupMissing('guest kernel', paths.kernel);

  // c. Initrd: cella-init as /init plus the modules it loads.
  let initrdSha = await fileSha256(paths.initrd);
  const initrdCurrent = !kernelChanged && previous?.agentSha256 === agentSha && previous.initrdSha256 === initrdSha;
  if (initrdCurrent) {
    log('initrd: up to date');
  } else {
    const initrd = await buildInitrd(guestDir, agent);
    await writeAtomic(paths.initrd, initrd);
    initrdSha = sha256(initrd);
    log(`initrd: wrote ${paths.initrd} (${(initrd.length / 2 ** 10).toFixed(0)} KiB)`);
  }
  if (initrdSha === undefined) throw setupMissing('guest initrd', paths.initrd);

  // d. Demo app.
  const demo = await readFile(join(build, 'cella-demo'));
  if ((await fileSha256(paths.demoApp)) !== sha256(demo)) {
    await writeAtomic(paths.demoApp, demo, 0o755);
    log(`demo: wrote ${paths.demoApp}`);
  }

  // e. Busybox base tree.
  const baseDir = join(paths.bases, 'busybox');
  if (!existsSync(BUSYBOX)) throw setupMissing('busybox (Debian package busybox-static)', BUSYBOX);
  if (!force && (await busyboxBaseIsCurrent(baseDir))) {
    log('base busybox: up to date');
  } else {
    const links = await buildBusyboxBase(baseDir);
    const base = { name: 'busybox', description: "BusyBox from Debian's busybox-static with a minimal /etc", env: { PATH: BASE_PATH_ENV } };
    await writeAtomic(join(baseDir, 'base.json'), `${JSON.stringify(base, null, 2)}\n`);
    log(`base busybox: built ${join(baseDir, 'tree')} (${links} applet links)`);
  }

  // f. Manifest last: its presence says the rest is complete.
  if (kernelChanged || !initrdCurrent || previous === undefined) {
    const manifest: GuestManifest = {
      format: 1,
      kernelVersion: kernelPkg.version,
      kernelPackage: kernelPkg.pkg,
      vmlinuxSha256: vmlinuxSha,
      initrdSha256: initrdSha,
      agentSha256: agentSha,
      modules: [...GUEST_MODULES],
      createdAt: new Date().toISOString(),
    };
    await writeAtomic(paths.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
    log(`manifest: wrote ${paths.manifest}`);
  }
  return loadGuestArtifacts(guestDir);
}
