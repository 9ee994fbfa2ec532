import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { Engine, processStartTime, type RunningVm } from '../src/engine/index.js';
import { listNamespaces, namespaceOwner } from '../src/net/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';

/** Short paths: unix sockets live under the data dir. */
export function tempDataDir(tag: string): string {
  return mkdtempSync(path.join('/tmp', `cella-${tag}-`));
}

/** GET from the demo app inside `vm`, through the namespace path the proxy uses. */
export function get(vm: RunningVm, p: string): Promise<{ status: number; body: string }> {
  return getAt(vm.address(DEMO_PORT), p);
}

/** GET http://host:port/p without connection reuse. */
export function getAt({ host, port }: { host: string; port: number }, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host, port, path: p, timeout: 15_000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .on('timeout', function (this: { destroy: (e: Error) => void }) {
        this.destroy(new Error(`GET ${p} timed out`));
      })
      .end();
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits for `cond` to hold, polling; fails after `ms` (a bound on waiting, not a performance assertion). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Live processes whose command line contains `text` (zombies have ended and are left out). */
export function processesWith(text: string): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text) && processStartTime(pid) !== undefined;
      } catch {
        return false;
      }
    });
}

/** The name of the /run/netns namespace process `pid` runs in, if any. */
export function namespaceOf(pid: number): string | undefined {
  const ino = statSync(`/proc/${pid}/ns/net`).ino;
  return readdirSync('/run/netns').find((n) => statSync(`/run/netns/${n}`).ino === ino);
}

export interface DemoEngine {
  engine: Engine;
  imageDir: string;
  /** A fresh VM id. */
  nextId: () => string;
  /** Runs `fn` on a new clone, terminated after. */
  withVm: (fn: (vm: RunningVm) => Promise<void>) => Promise<void>;
  /** Ends the engine, removes its directory, checks that none of its namespaces leaked. */
  close: () => Promise<void>;
}

/** An engine on a fresh data directory with the demo image snapshotted in it (256 MiB, no warm clones), for suites that launch clones of it. */
export async function demoEngine(tag: string): Promise<DemoEngine> {
  const dataDir = tempDataDir(tag);
  const engine = await Engine.open({ dataDir, log: () => {}, warmNetworks: 1, warmClones: 0 });
  const imageDir = path.join(dataDir, 'images', 'demo');
  const rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);
  await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
  let seq = 0;
  const nextId = (): string => `${tag}-${process.pid}-${++seq}`;
  return {
    engine,
    imageDir,
    nextId,
    withVm: async (fn) => {
      const vm = await engine.launch(imageDir, nextId());
      try {
        await fn(vm);
      } finally {
        await engine.terminate(vm.ref);
      }
    },
    close: async () => {
      const netTag = engine.networkTag;
      await engine.close();
      rmSync(dataDir, { recursive: true, force: true });
      const ours = listNamespaces().filter((n) => namespaceOwner(Number(n.slice('cella-'.length))) === netTag);
      assert.deepEqual(ours, [], 'no network namespace leaked');
    },
  };
}
