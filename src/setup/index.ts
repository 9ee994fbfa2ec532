/**
 * Guest setup: builds everything a Cella guest boots from into one directory
 * (kernel, initrd with cella-init and the virtio modules, demo app, base
 * trees) using only distro packages. Idempotent: a rerun rebuilds only what
 * changed and the manifest, written last, marks a finished setup.
 */

import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CellaError, setupMissing } from '../contract/index.js';
import { run } from '../host/index.js';
import { DEFAULT_GUEST_DIR, guestPaths, loadGuestArtifacts, readManifest, type GuestArtifacts, type GuestManifest } from './artifacts.js';
import { setupBases } from './bases.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { fetchKernel, resolveKernelPackage } from './kernel.js';
import { fileSha256, replaceDir, requireTools, sha256, writeAtomic } from './util.js';

export { DEFAULT_GUEST_DIR, baseTree, listBases, loadGuestArtifacts, type BaseInfo, type GuestArtifacts, type GuestManifest } from './artifacts.js';
export { buildDemoRootfs, DEMO_APP, DEMO_PORT } from './demo.js';

/** What cella-init loads before mounting the root disk and bringing up eth0 and the virtio consoles. */
export const GUEST_MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'failover', 'net_failover', 'virtio_net', 'virtio_console'] as const;

export interface SetupOptions {
  guestDir?: string;
  repoRoot: string;
  log?: (line: string) => void;
  /** Rebuild and re-download everything even if it looks current. */
  force?: boolean;
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
  await requireTools([
    ['make', 'make'],
    ['musl-gcc', 'musl-tools'],
    ['strip', 'binutils'],
  ]);
  const build = join(guestDir, 'build');
  log(`guest: building cella-init, cella-demo, cella-spawn and cella-netd into ${build}`);
  await run('make', ['-C', resolve(opts.repoRoot, 'guest'), ...(force ? ['-B'] : []), 'CC=musl-gcc', `OUT=${build}`], { timeoutMs: 5 * 60_000 });
  const agent = await readFile(join(build, 'cella-init'));
  const agentSha = sha256(agent);

  // b. Kernel and its modules.
  await requireTools([
    ['apt-cache', 'apt'],
    ['apt-get', 'apt'],
    ['dpkg-deb', 'dpkg'],
  ]);
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

  // d. Demo app, cella-spawn (the host's QEMU prelude) and cella-netd (its network helper).
  for (const [name, to] of [
    ['cella-demo', paths.demoApp],
    ['cella-spawn', paths.spawner],
    ['cella-netd', paths.netd],
  ] as const) {
    const bin = await readFile(join(build, name));
    if ((await fileSha256(to)) !== sha256(bin)) {
      await writeAtomic(to, bin, 0o755);
      log(`${name}: wrote ${to}`);
    }
  }

  // e. Base trees: busybox and the Debian bases.
  await setupBases(paths.bases, { force, log });

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
