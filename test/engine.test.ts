/**
 * The engine against real VMs: a demo app booted in a template VM, captured,
 * cloned, suspended, resumed and terminated. No mocks.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Engine, snapshotFiles, vmFiles, type RunningVm } from '../src/engine/index.js';
import { isCellaError, SETUP_COMMAND } from '../src/errors/index.js';
import { listNamespaces } from '../src/net/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';
import { alive, eventually, get, tempDataDir } from './helpers.js';

let engine: Engine;
let dataDir: string;
let imageDir: string;
let namespacesBefore: string[];
let seq = 0;
const nextId = (): string => `vm-${process.pid}-${++seq}`;

before(async () => {
  namespacesBefore = listNamespaces();
  dataDir = tempDataDir('engine');
  engine = await Engine.open({ dataDir, log: () => {} });
  imageDir = path.join(dataDir, 'images', 'demo');
  const rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);
  await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
});

after(async () => {
  await engine?.close();
  rmSync(dataDir, { recursive: true, force: true });
  assert.deepEqual(listNamespaces().sort(), namespacesBefore.sort(), 'no network namespace leaked');
});

describe('clones', () => {
  test('each clone has its own RAM, disk, identity and entropy', async () => {
    const a = await engine.launch(imageDir, nextId());
    const b = await engine.launch(imageDir, nextId());
    try {
      assert.equal((await get(a, '/inc')).body, '1');
      assert.equal((await get(a, '/inc')).body, '2');
      assert.equal((await get(b, '/inc')).body, '1', 'B does not see A\'s counter');
      assert.equal((await get(a, '/write/from-a')).body, 'written');
      assert.equal((await get(b, '/read')).status, 404, 'B does not see A\'s file');
      assert.equal((await get(a, '/read')).body, 'from-a');
      assert.equal((await get(a, '/hostname')).body, a.id);
      assert.equal((await get(b, '/hostname')).body, b.id);
      assert.notEqual((await get(a, '/random')).body, (await get(b, '/random')).body, 'clones were reseeded');
      assert.notEqual(a.network.netns, b.network.netns);
    } finally {
      await engine.terminate(a.ref);
      await engine.terminate(b.ref);
    }
  });

  test('clones from the warm pool are as separate as cold ones and get their own identity', async () => {
    await engine.prewarm(imageDir, 2);
    const a = await engine.launch(imageDir, nextId());
    const b = await engine.launch(imageDir, nextId());
    const cold = await engine.launch(imageDir, nextId(), { fromPool: false });
    try {
      assert.deepEqual([a.pooled, b.pooled, cold.pooled], [true, true, false]);
      assert.equal((await get(a, '/inc')).body, '1', 'a warm clone never served the app');
      assert.equal((await get(b, '/inc')).body, '1');
      assert.equal((await get(a, '/hostname')).body, a.id);
      assert.equal((await get(b, '/hostname')).body, b.id);
      assert.notEqual((await get(a, '/random')).body, (await get(b, '/random')).body);
      assert.ok(a.dir.endsWith(a.id) && existsSync(vmFiles(a.dir).disk));
      // A pooled VM suspends and resumes like any other.
      await get(a, '/write/pooled');
      await engine.suspend(a);
      const back = await engine.resume(a.ref);
      assert.equal((await get(back, '/read')).body, 'pooled');
    } finally {
      for (const vm of [a, b, cold]) await engine.terminate(vm.ref);
    }
  });

  test('the guest clock is set from the host on launch', async () => {
    const vm = await engine.launch(imageDir, nextId());
    try {
      const r = await vm.agent.exec({ argv: ['/bin/date', '+%s'] });
      const guest = Number(r.stdout.toString().trim());
      assert.ok(Math.abs(guest - Date.now() / 1000) < 5, `guest clock ${guest} follows the host`);
    } finally {
      await engine.terminate(vm.ref);
    }
  });

  test('exec streams output and returns the exit code', async () => {
    const vm = await engine.launch(imageDir, nextId());
    try {
      const seen: string[] = [];
      const r = await vm.agent.exec(
        { argv: ['/bin/sh', '-c', 'echo out; echo err >&2; cat; exit 3'], stdin: Buffer.from('from-stdin') },
        { onOutput: (stream, d) => seen.push(`${stream}:${d.toString()}`) },
      );
      assert.equal(r.exitCode, 3);
      assert.equal(r.stdout.toString(), 'out\nfrom-stdin');
      assert.equal(r.stderr.toString(), 'err\n');
      assert.ok(seen.some((s) => s.startsWith('stdout:')) && seen.some((s) => s.startsWith('stderr:')));
      const missing = await vm.agent.exec({ argv: ['/no/such/binary'] });
      assert.equal(missing.exitCode, 127);
      const asNobody = await vm.agent.exec({ argv: ['/bin/sh', '-c', 'echo $(id -u):$(id -g):$(pwd):$GREETING'], uid: 65534, gid: 65534, cwd: '/tmp', env: { GREETING: 'hi', PATH: '/bin' } });
      assert.equal(asNobody.stdout.toString(), '65534:65534:/tmp:hi\n');
    } finally {
      await engine.terminate(vm.ref);
    }
  });
});

describe('suspend and resume', () => {
  test('RAM and disk state survive; QEMU is gone while suspended', async () => {
    const vm = await engine.launch(imageDir, nextId());
    const pid = vm.qemu.pid;
    for (let i = 1; i <= 3; i++) assert.equal((await get(vm, '/inc')).body, String(i));
    assert.equal((await get(vm, '/write/kept-on-disk')).body, 'written');
    assert.equal((await get(vm, '/touch/20')).body, 'touched 20 MiB');
    const s = await engine.suspend(vm);
    assert.ok(!alive(pid), 'QEMU exited');
    assert.equal(engine.get(vm.id), undefined);
    assert.ok(existsSync(vmFiles(vm.dir).checkpoint));
    assert.ok(s.dirtyPages > (20 * 256) && s.dirtyPages < s.totalPages, `dirty pages ${s.dirtyPages}`);
    assert.ok(s.bytes < 256 * 1048576 / 2, `checkpoint holds the dirty pages, not all RAM (${s.bytes} bytes)`);
    const back = await engine.resume(vm.ref);
    try {
      assert.equal((await get(back, '/get')).body, '3');
      assert.equal((await get(back, '/inc')).body, '4');
      assert.equal((await get(back, '/read')).body, 'kept-on-disk');
      // A second cycle keeps what the VM wrote after the first.
      await engine.suspend(back);
      const again = await engine.resume(back.ref);
      assert.equal((await get(again, '/get')).body, '4');
    } finally {
      await engine.terminate(back.ref);
    }
  });

  test('resume refuses a running VM and one with no checkpoint', async () => {
    const vm = await engine.launch(imageDir, nextId());
    try {
      await assert.rejects(engine.resume(vm.ref), (e) => isCellaError(e, 'INVALID_STATE'));
    } finally {
      await engine.terminate(vm.ref);
    }
    await assert.rejects(engine.resume({ ...vm.ref, id: 'never-launched' }), (e) => isCellaError(e, 'INVALID_STATE'));
  });

  test('a truncated checkpoint is refused clearly and touches no other VM', async () => {
    const bystander = await engine.launch(imageDir, nextId());
    const vm = await engine.launch(imageDir, nextId());
    try {
      await get(vm, '/inc');
      await engine.suspend(vm);
      const cp = vmFiles(vm.dir).checkpoint;
      truncateSync(cp, Math.floor(statSync(cp).size / 2));
      await assert.rejects(engine.resume(vm.ref), (e) => isCellaError(e, 'SNAPSHOT_CORRUPT'));
      assert.equal(engine.get(vm.id), undefined, 'no half-started VM is left running');
      assert.equal((await get(bystander, '/inc')).body, '1');
    } finally {
      await engine.terminate(vm.ref);
      await engine.terminate(bystander.ref);
    }
  });
});

describe('terminate and supervision', () => {
  test('terminate leaves no process, namespace or file behind', async () => {
    const vm = await engine.launch(imageDir, nextId());
    const { pid } = vm.qemu;
    const ns = vm.network.netns;
    await engine.terminate(vm.ref);
    assert.ok(!alive(pid));
    assert.ok(!listNamespaces().includes(ns));
    assert.ok(!existsSync(vm.dir));
  });

  test('terminating a suspended VM removes its checkpoint and namespace', async () => {
    const vm = await engine.launch(imageDir, nextId());
    await engine.suspend(vm);
    await engine.terminate(vm.ref);
    assert.ok(!listNamespaces().includes(vm.network.netns));
    assert.ok(!existsSync(vm.dir));
  });

  test('a QEMU killed from outside is detected and reported', async () => {
    const vm = await engine.launch(imageDir, nextId());
    const reported = new Promise<{ id: string; info: { expected: boolean; signal: string | null } }>((resolve) =>
      engine.once('vm-exit', (id: string, info: { expected: boolean; signal: string | null }) => resolve({ id, info })),
    );
    process.kill(vm.qemu.pid, 'SIGKILL');
    const { id, info } = await reported;
    assert.equal(id, vm.id);
    assert.equal(info.expected, false);
    assert.equal(info.signal, 'SIGKILL');
    assert.equal(engine.get(vm.id), undefined);
    await engine.terminate(vm.ref);
  });
});

describe('bad input', () => {
  const copyImage = (name: string): string => {
    const dir = path.join(dataDir, 'images', name);
    cpSync(imageDir, dir, { recursive: true });
    for (const f of Object.values(snapshotFiles(dir))) if (existsSync(f)) chmodSync(f, 0o644);
    return dir;
  };

  test('a truncated device state is refused before any QEMU starts', async () => {
    const dir = copyImage('truncated');
    truncateSync(snapshotFiles(dir).devstate, 100);
    const id = nextId();
    await assert.rejects(engine.launch(dir, id), (e) => isCellaError(e, 'SNAPSHOT_CORRUPT'));
    assert.ok(!existsSync(engine.vmDir(id)));
  });

  test('a RAM file of the wrong size is refused', async () => {
    const dir = copyImage('short-ram');
    truncateSync(snapshotFiles(dir).mem, 1 << 20);
    await assert.rejects(engine.launch(dir, nextId()), (e) => isCellaError(e, 'SNAPSHOT_CORRUPT'));
  });

  test('a snapshot made by another QEMU or kernel is refused, not booted', async () => {
    const dir = copyImage('foreign');
    const manifest = snapshotFiles(dir).manifest;
    const m = JSON.parse(readFileSync(manifest, 'utf8')) as { fingerprint: string };
    writeFileSync(manifest, JSON.stringify({ ...m, fingerprint: 'made-by-qemu-9-and-another-kernel' }));
    await assert.rejects(engine.launch(dir, nextId()), (e) => isCellaError(e, 'SNAPSHOT_INCOMPATIBLE'));
  });

  test('a missing snapshot is NOT_FOUND and a reused id is refused', async () => {
    await assert.rejects(engine.launch(path.join(dataDir, 'images', 'nope'), nextId()), (e) => isCellaError(e, 'NOT_FOUND'));
    const vm = await engine.launch(imageDir, nextId());
    try {
      await assert.rejects(engine.launch(imageDir, vm.id), (e) => isCellaError(e, 'INVALID_STATE'));
    } finally {
      await engine.terminate(vm.ref);
    }
  });

  test('missing QEMU, kernel or agent names the setup command', async () => {
    const noGuest = Engine.open({ dataDir, guestDir: path.join(dataDir, 'no-guest'), log: () => {} });
    await assert.rejects(noGuest, (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes(SETUP_COMMAND));
    const noQemu = Engine.open({ dataDir, qemuBinary: '/nonexistent/qemu-system-x86_64', log: () => {} });
    await assert.rejects(noQemu, (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes(SETUP_COMMAND));
    const partial = path.join(dataDir, 'partial-guest');
    cpSync(engine.guest.dir, partial, { recursive: true, filter: (src) => !src.includes('bases') });
    rmSync(path.join(partial, 'initrd.cpio'));
    await assert.rejects(Engine.open({ dataDir, guestDir: partial, log: () => {} }), (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes('initrd'));
  });

  test('an app that exits before its port opens fails the snapshot with its reason', async () => {
    const dir = path.join(dataDir, 'images', 'crashing-app');
    await assert.rejects(
      engine.createSnapshot({
        dir,
        rootfs: path.join(dataDir, 'demo.ext4'),
        app: { argv: ['/bin/sh', '-c', 'echo giving up >&2; exit 4'], env: { PATH: '/bin' } },
        port: DEMO_PORT,
        memoryMiB: 128,
      }),
      (e) => isCellaError(e, 'APP_NOT_READY') && e.message.includes('giving up'),
    );
    assert.ok(!existsSync(snapshotFiles(dir).manifest), 'no snapshot is recorded');
  });

  test('a snapshot directory that holds one already is refused', async () => {
    await assert.rejects(
      engine.createSnapshot({ dir: imageDir, rootfs: path.join(dataDir, 'demo.ext4'), app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 }),
      (e) => isCellaError(e, 'INVALID_STATE'),
    );
  });
});

test('no QEMU outlives a parent that is killed with SIGKILL', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures', 'launch-and-wait.ts'), dataDir, imageDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [pid, netns] = await new Promise<[number, string]>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /qemu-pid (\d+) netns (\S+)/.exec(out);
      if (m) resolve([Number(m[1]), m[2] as string]);
    });
    child.once('exit', (code) => reject(new Error(`fixture exited with ${code} before launching`)));
  });
  assert.ok(alive(pid));
  child.kill('SIGKILL');
  await eventually(() => !alive(pid), 10_000, `orphaned QEMU ${pid} to die`);
  // Reclaiming what a dead cellad left is the control plane's job; here the test tidies up.
  execFileSync('ip', ['netns', 'del', netns]);
});

test('running VMs are all gone after close()', async () => {
  const vms: RunningVm[] = [await engine.launch(imageDir, nextId()), await engine.launch(imageDir, nextId())];
  const pids = vms.map((v) => v.qemu.pid);
  await engine.close();
  for (const pid of pids) await eventually(() => !alive(pid), 5000, `QEMU ${pid} to exit`);
  engine = await Engine.open({ dataDir, log: () => {} });
});
