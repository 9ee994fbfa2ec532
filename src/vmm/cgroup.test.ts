import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Cgroups, cgroupLimits, detectLayout, limitFiles } from './cgroup.js';

test('limits follow the VM size: a CPU per vCPU, RAM plus QEMU overhead, bounded pids', () => {
  assert.deepEqual(cgroupLimits({ memoryMiB: 256, vcpus: 2 }), {
    cpuQuotaUs: 200_000,
    cpuPeriodUs: 100_000,
    memoryBytes: 512 * 1024 * 1024,
    pids: 512,
  });
});

test('v2 and v1 carry the limits in their own files', () => {
  const limits = cgroupLimits({ memoryMiB: 128, vcpus: 1 });
  assert.deepEqual(
    limitFiles(2, limits).map((f) => `${f.file}=${f.value}`),
    ['cpu.max=100000 100000', 'memory.max=402653184', 'pids.max=512'],
  );
  assert.deepEqual(
    limitFiles(1, limits).map((f) => `${f.controller}/${f.file}=${f.value}`),
    ['cpu/cpu.cfs_period_us=100000', 'cpu/cpu.cfs_quota_us=100000', 'memory/memory.limit_in_bytes=402653184', 'pids/pids.max=512'],
  );
});

/** A fake cgroupfs: plain files where the kernel would have its own. */
function fakeFs(build: (root: string) => void): string {
  const root = mkdtempSync(path.join(tmpdir(), 'cella-cgfs-'));
  build(root);
  return root;
}

test('layout: v2 by cgroup.controllers, v1 by a tree per controller, none without either', () => {
  const v2 = fakeFs((r) => writeFileSync(path.join(r, 'cgroup.controllers'), 'cpuset cpu io memory pids\n'));
  const v1 = fakeFs((r) => {
    for (const c of ['cpu', 'memory']) {
      mkdirSync(path.join(r, c));
      writeFileSync(path.join(r, c, 'cgroup.procs'), '');
    }
    mkdirSync(path.join(r, 'unified'));
  });
  const none = fakeFs(() => {});
  try {
    assert.deepEqual(detectLayout(v2), { version: 2, root: v2, controllers: ['cpu', 'memory', 'pids'] });
    assert.deepEqual(detectLayout(v1), { version: 1, roots: { cpu: path.join(v1, 'cpu'), memory: path.join(v1, 'memory') } });
    assert.equal(detectLayout(none), undefined);
  } finally {
    for (const r of [v2, v1, none]) rmSync(r, { recursive: true, force: true });
  }
});

test('v2: controllers are enabled down to the group and the limits written in the leaf', () => {
  const root = fakeFs((r) => {
    writeFileSync(path.join(r, 'cgroup.controllers'), 'cpu memory pids\n');
    writeFileSync(path.join(r, 'cgroup.subtree_control'), '');
    for (const d of ['cella', 'cella/t']) {
      mkdirSync(path.join(r, d));
      writeFileSync(path.join(r, d, 'cgroup.subtree_control'), '');
    }
  });
  try {
    const layout = detectLayout(root);
    const cg = new Cgroups(layout, 'cella/t', () => {}).create('vm-1', cgroupLimits({ memoryMiB: 64, vcpus: 1 }));
    assert.ok(cg);
    assert.deepEqual(cg.procsFiles, [path.join(root, 'cella/t/vm-1/cgroup.procs')]);
    assert.equal(readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8'), '+cpu +memory +pids');
    assert.equal(readFileSync(path.join(root, 'cella/t/cgroup.subtree_control'), 'utf8'), '+cpu +memory +pids');
    assert.equal(readFileSync(path.join(root, 'cella/t/vm-1/memory.max'), 'utf8'), String(320 * 1024 * 1024));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('without cgroups a VM gets none, and that is said once', () => {
  const lines: string[] = [];
  const cgroups = new Cgroups(undefined, 'cella/t', (l) => lines.push(l));
  assert.equal(cgroups.create('a', cgroupLimits({ memoryMiB: 64, vcpus: 1 })), undefined);
  assert.equal(cgroups.create('b', cgroupLimits({ memoryMiB: 64, vcpus: 1 })), undefined);
  assert.equal(lines.length, 1);
});

test("reclaim removes the group's cgroups except those kept", () => {
  const root = fakeFs((r) => {
    mkdirSync(path.join(r, 'memory'));
    writeFileSync(path.join(r, 'memory', 'cgroup.procs'), '');
    for (const n of ['keep', 'stale']) mkdirSync(path.join(r, 'memory/cella/t', n), { recursive: true });
  });
  try {
    const cgroups = new Cgroups(detectLayout(root), 'cella/t', () => {});
    cgroups.reclaim(new Set(['keep']));
    assert.ok(cgroups.existing('keep'));
    assert.equal(cgroups.existing('stale'), undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
