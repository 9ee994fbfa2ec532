/**
 * The demo image used by the CLI demo, the tests and the benchmarks: the
 * busybox base plus cella-demo (guest/demo/counter.c) as its app.
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ext4FromDir } from '../disk/index.js';
import { baseTree, type GuestArtifacts } from './artifacts.js';

export const DEMO_PORT = 8080;

export const DEMO_APP = {
  argv: ['/usr/bin/cella-demo', String(DEMO_PORT)],
  env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  cwd: '/',
};

/** Writes an ext4 root filesystem for the demo app to `out`. */
export async function buildDemoRootfs(artifacts: GuestArtifacts, out: string, sizeMiB = 64): Promise<void> {
  const stage = mkdtempSync(path.join(path.dirname(out), '.demo-'));
  try {
    cpSync(baseTree(artifacts, 'busybox'), stage, { recursive: true, verbatimSymlinks: true });
    cpSync(artifacts.demoApp, path.join(stage, 'usr/bin/cella-demo'));
    await ext4FromDir(stage, out, sizeMiB);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
