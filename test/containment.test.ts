/**
 * Containment against real VMs: every QEMU runs as its own uid, under its
 * seccomp filter, chrooted into its VM folder and in a cgroup with limits
 * from the VM's size; VMs still answer, suspend and resume, and a builder
 * commits layers while jailed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createOverlay, ext4FromDir } from '../src/disk/index.js';
import { Engine, type RunningVm } from '../src/engine/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';
import { BUILDER_UIDS, BUILDER_UID_BASE, QEMU_OVERHEAD_MIB, VM_UID_BASE, detectLayout, type CgroupLayout, type Controller } from '../src/vmm/index.js';
import { eventually, get, processesWith, tempDataDir } from './helpers.js';

let engine: Engine;
let dataDir: string;
let imageDir: string;
let rootfs: string;
const layout = detectLayout();
let seq = 0;
const nextId = (): string => `jail-${process.pid}-${++seq}`;
const MEMORY_MIB = 256;

before(async () => {
  dataDir = tempDataDir('jail');
  engine = await Engine.open({ dataDir, log: () => {}, warmClones: 0 });
  imageDir = path.join(dataDir, 'images', 'demo');
  rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);
  await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: MEMORY_MIB });
});

after(async () => {
  await engine?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Real uid and gid (the first of /proc's four), and whether the seccomp filter and NoNewPrivs are on. */
function jailOf(pid: number): { uid: number; gid: number; seccomp: string; noNewPrivs: string; root: string } {
  const s = status(pid);
  return {
    uid: Number(s.Uid?.split(/\s+/)[0]),
    gid: Number(s.Gid?.split(/\s+/)[0]),
    seccomp: s.Seccomp ?? '',
    noNewPrivs: s.NoNewPrivs ?? '',
    root: readlinkSync(`/proc/${pid}/root`),
  };
}

/** The directory of process `pid`'s cgroup for `controller`. */
function cgroupDir(pid: number, controller: Controller, l: CgroupLayout): string {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(':'));
  if (l.version === 2) return path.join(l.root, lines.find(([id]) => id === '0')?.[2] ?? '');
  const line = lines.find(([, ctrls]) => ctrls?.split(',').includes(controller));
  return path.join(l.roots[controller] as string, line?.[2] ?? '');
}

function limit(pid: number, controller: Controller, file: string, l: CgroupLayout): string {
  return readFileSync(path.join(cgroupDir(pid, controller, l), file), 'utf8').trim();
}

/** Asserts the cgroup of `pid` is cella/<tag>/<name> with limits for `memoryMiB` and `vcpus`. */
function assertCgroup(pid: number, name: string, memoryMiB: number, vcpus: number): void {
  assert.ok(layout, 'cgroups are available on this host');
  const memory = String((memoryMiB + QEMU_OVERHEAD_MIB) * 1024 * 1024);
  for (const c of ['cpu', 'memory', 'pids'] as const) {
    const dir = cgroupDir(pid, c, layout);
    assert.match(dir, new RegExp(`/cella/[0-9a-f]{16}/${name.replace('.', '\\.')}$`), `${c} cgroup of ${name}`);
  }
  if (layout.version === 2) {
    assert.equal(limit(pid, 'cpu', 'cpu.max', layout), `${vcpus * 100000} 100000`);
    assert.equal(limit(pid, 'memory', 'memory.max', layout), memory);
  } else {
    assert.equal(limit(pid, 'cpu', 'cpu.cfs_quota_us', layout), String(vcpus * 100000));
    assert.equal(limit(pid, 'cpu', 'cpu.cfs_period_us', layout), '100000');
    assert.equal(limit(pid, 'memory', 'memory.limit_in_bytes', layout), memory);
  }
  assert.equal(limit(pid, 'pids', 'pids.max', layout), '512');
}

function assertVmJailed(vm: RunningVm): void {
  const j = jailOf(vm.qemu.pid);
  assert.equal(j.uid, VM_UID_BASE + vm.ref.slot, 'QEMU runs as the uid of its network slot');
  assert.equal(j.gid, j.uid);
  assert.equal(j.seccomp, '2', 'seccomp filter on');
  assert.equal(j.noNewPrivs, '1');
  assert.equal(j.root, vm.dir, 'QEMU is chrooted into its VM folder');
  assertCgroup(vm.qemu.pid, vm.id, MEMORY_MIB, 1);
}

describe('VMs', () => {
  test('a launched VM is jailed and in its cgroup, answers, and suspends and resumes with its RAM', async () => {
    const a = await engine.launch(imageDir, nextId());
    const b = await engine.launch(imageDir, nextId());
    try {
      assertVmJailed(a);
      assertVmJailed(b);
      assert.notEqual(jailOf(a.qemu.pid).uid, jailOf(b.qemu.pid).uid, 'two VMs, two uids');
      await a.agent.ping();
      assert.equal((await get(a, '/inc')).body, '1');
      assert.equal((await get(a, '/inc')).body, '2');
      assert.equal((await get(a, '/touch/8')).body, 'touched 8 MiB');
      const cg = layout && cgroupDir(a.qemu.pid, 'memory', layout);

      await engine.suspend(a);
      if (cg) await eventually(() => !existsSync(cg), 5000, 'the cgroup to be removed with its QEMU');
      const back = await engine.resume(a.ref);
      assertVmJailed(back);
      assert.equal((await get(back, '/get')).body, '2', 'RAM survived the suspend');
      assert.equal((await get(back, '/inc')).body, '3');
    } finally {
      await engine.terminate(a.ref);
      await engine.terminate(b.ref);
    }
  });

  test('a warm clone is jailed in the folder it was renamed to, and suspends and resumes from there', async () => {
    await engine.prewarm(imageDir, 1);
    const vm = await engine.launch(imageDir, nextId());
    try {
      assert.ok(vm.pooled);
      assertVmJailed(vm);
      assert.equal((await get(vm, '/inc')).body, '1');
      await engine.suspend(vm);
      const back = await engine.resume(vm.ref);
      assertVmJailed(back);
      assert.equal((await get(back, '/get')).body, '1');
    } finally {
      await engine.terminate(vm.ref);
    }
  });

  test('the jailed QEMU cannot write to its folder', async () => {
    const vm = await engine.launch(imageDir, nextId());
    try {
      const { uid } = jailOf(vm.qemu.pid);
      assert.equal(statSync(vm.dir).uid, 0, "the VM folder stays root's");
      assert.ok(!existsSync(path.join(vm.dir, 'incoming')), 'the folder QEMU could write to during the load is gone');
      // As its uid, nothing in the folder can be created (what a QEMU taken over by its guest could try).
      const r = spawnSync('setpriv', ['--reuid', String(uid), '--regid', String(uid), '--clear-groups', 'touch', path.join(vm.dir, 'x')]);
      assert.notEqual(r.status, 0);
      assert.ok(!existsSync(path.join(vm.dir, 'x')));
    } finally {
      await engine.terminate(vm.ref);
    }
  });
});

describe('builder', () => {
  test('a builder runs a step and commits a layer while jailed', async () => {
    const work = path.join(dataDir, 'build');
    const layers = path.join(dataDir, 'layers');
    const ctx = path.join(work, 'ctx');
    mkdirSync(ctx, { recursive: true });
    mkdirSync(layers);
    writeFileSync(path.join(ctx, 'hello.txt'), 'from the context\n');
    const buildDisk = path.join(work, 'build.ext4');
    await ext4FromDir(ctx, buildDisk, 16, 'cella-build');
    const first = path.join(layers, 'l1.qcow2');
    const second = path.join(layers, 'l2.qcow2');
    await createOverlay(rootfs, 'raw', first);

    const vm = await engine.startBuilder({ top: first, buildDisk, consoleLog: path.join(work, 'console.log'), memoryMiB: 256 });
    try {
      const [pid] = processesWith(`${dataDir}/vms/.builder-`);
      assert.ok(pid, 'the builder QEMU runs');
      const j = jailOf(pid);
      assert.ok(j.uid >= BUILDER_UID_BASE && j.uid < BUILDER_UID_BASE + BUILDER_UIDS, `builder uid ${j.uid} is in the builders' range`);
      assert.equal(j.seccomp, '2');
      assert.match(j.root, /\/vms\/\.builder-[0-9a-f]{8}$/, 'chrooted into its folder');
      assertCgroup(pid, path.basename(j.root), 256, 1);

      const step = await vm.exec({ argv: ['/bin/sh', '-c', 'cp /run/cella/build/hello.txt /step1 && echo ok'] });
      assert.equal(step.stdout.toString(), 'ok\n');
      await vm.commit(second);
      assert.equal(vm.currentTop, second);
      const step2 = await vm.exec({ argv: ['/bin/sh', '-c', 'echo two > /step2 && cat /step1'] });
      assert.equal(step2.stdout.toString(), 'from the context\n');
    } finally {
      await vm.close();
    }
    for (const layer of [first, second]) assert.equal(statSync(layer).uid, 0, `${path.basename(layer)} is root's again`);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', second]).toString()) as { 'backing-filename'?: string };
    assert.equal(info['backing-filename'], first, 'the new layer is backed by the frozen one');

    // What the steps wrote is in the layers: a new builder on top of them sees it.
    const third = path.join(layers, 'l3.qcow2');
    await createOverlay(second, 'qcow2', third);
    const check = await engine.startBuilder({ top: third, buildDisk, consoleLog: path.join(work, 'console2.log'), memoryMiB: 256 });
    try {
      const r = await check.exec({ argv: ['/bin/sh', '-c', 'cat /step1 /step2'] });
      assert.equal(r.stdout.toString(), 'from the context\ntwo\n');
    } finally {
      await check.close();
    }
  });
});
