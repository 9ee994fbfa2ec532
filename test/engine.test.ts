/**
 * The engine against real VMs: a demo app booted in a template VM, captured,
 * cloned, suspended, resumed and terminated. No mocks.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Engine, processStartTime, snapshotFiles, vmFiles, type EngineOptions, type RunningVm, type VmRef } from '../src/engine/index.js';
import { isCellaError, SETUP_COMMAND } from '../src/contract/index.js';
import { listNamespaces, namespaceOwner } from '../src/net/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';
import { alive, eventually, get, namespaceOf, processesWith, tempDataDir } from './helpers.js';

let engine: Engine;
let dataDir: string;
let imageDir: string;
/** Network tags of every data directory the suite uses: other suites on this host may make and delete namespaces meanwhile. */
const ourTags = new Set<string>();
let seq = 0;
const nextId = (): string => `vm-${process.pid}-${++seq}`;

/** Runs `fn` with an engine of its own (no warm pool) on a fresh data directory, closed and removed after. */
async function withOwnEngine(name: string, opts: Partial<EngineOptions>, fn: (e: Engine) => Promise<void>): Promise<void> {
  const dir = tempDataDir(name);
  const e = await Engine.open({ dataDir: dir, log: () => {}, warmNetworks: 0, warmClones: 0, ...opts });
  try {
    await fn(e);
  } finally {
    await e.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

before(async () => {
  dataDir = tempDataDir('engine');
  engine = await Engine.open({ dataDir, log: () => {} });
  ourTags.add(engine.networkTag);
  imageDir = path.join(dataDir, 'images', 'demo');
  const rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);
  await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
});

after(async () => {
  await engine?.close();
  rmSync(dataDir, { recursive: true, force: true });
  const ours = listNamespaces().filter((n) => ourTags.has(namespaceOwner(Number(n.slice('cella-'.length))) ?? ''));
  assert.deepEqual(ours, [], 'no network namespace leaked');
});

describe('clones', () => {
  test('each clone has its own RAM, disk, identity and entropy', async () => {
    const a = await engine.launch(imageDir, nextId());
    const b = await engine.launch(imageDir, nextId());
    try {
      assert.equal((await get(a, '/inc')).body, '1');
      assert.equal((await get(a, '/inc')).body, '2');
      assert.equal((await get(b, '/inc')).body, '1', "B does not see A's counter");
      assert.equal((await get(a, '/write/from-a')).body, 'written');
      assert.equal((await get(b, '/read')).status, 404, "B does not see A's file");
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

  test('app output goes to the file given, or nowhere', async () => {
    const vm = await engine.launch(imageDir, nextId(), { appLog: null });
    const file = path.join(dataDir, `${vm.id}.log`);
    try {
      assert.equal((await get(vm, '/inc')).body, '1');
      assert.ok(!existsSync(vmFiles(vm.dir).appLog), 'no log file when logging is off');
      await engine.suspend(vm);
      const back = await engine.resume(vm.ref, { appLog: file });
      assert.equal((await get(back, '/get')).body, '1');
      assert.ok(existsSync(file) && !existsSync(vmFiles(vm.dir).appLog), 'the log goes where it was told');
    } finally {
      await engine.terminate(vm.ref);
      rmSync(file, { force: true });
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
      const asNobody = await vm.agent.exec({
        argv: ['/bin/sh', '-c', 'echo $(id -u):$(id -g):$(pwd):$GREETING'],
        uid: 65534,
        gid: 65534,
        cwd: '/tmp',
        env: { GREETING: 'hi', PATH: '/bin' },
      });
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
    assert.ok(s.dirtyPages > 20 * 256 && s.dirtyPages < s.totalPages, `dirty pages ${s.dirtyPages}`);
    assert.ok(s.bytes < (256 * 1048576) / 2, `checkpoint holds the dirty pages, not all RAM (${s.bytes} bytes)`);
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

  test('parked: within the window a resume continues the same QEMU; after it, a restore from the checkpoint', async () => {
    await withOwnEngine('park', { parkSeconds: 2 }, async (e) => {
      const vm = await e.launch(imageDir, nextId());
      assert.equal((await get(vm, '/inc')).body, '1');
      const pid = vm.qemu.pid;
      await e.suspend(vm);
      assert.equal(e.get(vm.id), undefined, 'suspended, not running');
      assert.ok(alive(pid), 'its stopped QEMU is kept for the window');
      assert.ok(existsSync(vmFiles(vm.dir).checkpoint), 'the checkpoint is complete anyway');
      const back = await e.resume(vm.ref);
      assert.equal(back.qemu.pid, pid, 'continued in place');
      assert.equal(existsSync(vmFiles(vm.dir).checkpoint), false, 'a stale checkpoint is not kept');
      assert.equal((await get(back, '/inc')).body, '2');
      await e.suspend(back);
      await eventually(() => !alive(pid), 15_000, 'the parked QEMU ends after the window');
      const cold = await e.resume(vm.ref);
      assert.notEqual(cold.qemu.pid, pid);
      assert.equal((await get(cold, '/inc')).body, '3');
      // A crash after a resume in place is reported as one.
      const exited = new Promise<{ expected: boolean }>((r) => e.once('vm-exit', (_id: string, info: { expected: boolean }) => r(info)));
      await e.suspend(cold);
      const again = await e.resume(vm.ref);
      process.kill(again.qemu.pid, 'SIGKILL');
      assert.equal((await exited).expected, false);
      await e.terminate(vm.ref);
    });
  });

  test('standby: a suspended VM gets an empty jailed QEMU in its namespace, which its resume takes; the budget ends the oldest', async () => {
    const qemusOf = (vm: RunningVm): number[] => processesWith(`unix:${vmFiles(vm.dir).qmp}`);
    await withOwnEngine('standby', { standbyQemus: 1 }, async (e) => {
      const [a, b] = [await e.launch(imageDir, nextId()), await e.launch(imageDir, nextId())];
      assert.equal((await get(a, '/inc')).body, '1');
      assert.equal((await get(b, '/write/b-disk')).body, 'written');
      const pidA = a.qemu.pid;
      await e.suspend(a);
      await e.standbyReady(a.ref);
      const [standby] = qemusOf(a);
      assert.ok(standby !== undefined && standby !== pidA, 'a new QEMU stands by for the suspended VM');
      assert.equal(e.get(a.id), undefined, 'it is suspended, not running');
      assert.equal(namespaceOf(standby), a.network.netns, 'in its own namespace');
      assert.match(readFileSync(`/proc/${standby}/status`, 'utf8'), new RegExp(`^Uid:\\s+${200_000 + a.ref.slot}\\b`, 'm'), 'as its uid');
      const back = await e.resume(a.ref);
      assert.equal(back.qemu.pid, standby, 'the resume took the standby QEMU');
      assert.equal((await get(back, '/get')).body, '1', 'with the RAM of the checkpoint');
      assert.equal((await get(back, '/inc')).body, '2');
      // The budget is one: B's standby ends when A's is made.
      await e.suspend(b);
      await e.standbyReady(b.ref);
      const [standbyB] = qemusOf(b);
      assert.ok(standbyB !== undefined);
      await e.suspend(back);
      await e.standbyReady(a.ref);
      await eventually(() => !alive(standbyB), 10_000, "B's standby to end");
      assert.equal(qemusOf(a).length, 1);
      const coldB = await e.resume(b.ref);
      assert.equal((await get(coldB, '/read')).body, 'b-disk', 'B resumes cold all the same');
      // A standby killed from outside is forgotten: the resume restores cold.
      const [standbyA] = qemusOf(a);
      process.kill(standbyA as number, 'SIGKILL');
      await eventually(() => !alive(standbyA as number), 10_000, 'the killed standby to end');
      const again = await e.resume(a.ref);
      assert.notEqual(again.qemu.pid, standbyA);
      assert.equal((await get(again, '/get')).body, '2');
      // Terminating a suspended VM ends its standby QEMU.
      await e.suspend(again);
      await e.standbyReady(a.ref);
      const [last] = qemusOf(a);
      await e.terminate(a.ref);
      assert.ok(last !== undefined && !alive(last), 'its standby ended with it');
      assert.ok(!existsSync(a.dir));
      await e.terminate(b.ref);
    });
  });

  test('standby with preload: the pages are in its RAM before the resume, which brings the VM back intact', async () => {
    await withOwnEngine('preload', { standbyQemus: 2, standbyPreloadMiB: 40 }, async (e) => {
      const [a, b] = [await e.launch(imageDir, nextId()), await e.launch(imageDir, nextId())];
      for (const vm of [a, b]) {
        assert.equal((await get(vm, '/inc')).body, '1');
        assert.equal((await get(vm, '/touch/30')).body, 'touched 30 MiB');
        await e.suspend(vm);
        await e.standbyReady(vm.ref);
      }
      const dirtyMiB = (vm: RunningVm): number => {
        const [pid] = processesWith(`unix:${vmFiles(vm.dir).qmp}`);
        const m = /^Private_Dirty:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
        return Number(m?.[1] ?? 0) / 1024;
      };
      assert.ok(dirtyMiB(a) > 30, `A's standby holds its pages (${dirtyMiB(a)} MiB)`);
      assert.ok(dirtyMiB(b) < 30, `B's did not fit the 40 MiB budget (${dirtyMiB(b)} MiB)`);
      for (const vm of [a, b]) {
        const back = await e.resume(vm.ref);
        assert.equal((await get(back, '/get')).body, '1');
        assert.equal((await get(back, '/inc')).body, '2');
        await e.terminate(vm.ref);
      }
    });
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

  test('missing QEMU, kernel, agent or cella-spawn names the setup command', async () => {
    const noGuest = Engine.open({ dataDir, guestDir: path.join(dataDir, 'no-guest'), log: () => {} });
    await assert.rejects(noGuest, (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes(SETUP_COMMAND));
    const noQemu = Engine.open({ dataDir, qemuBinary: '/nonexistent/qemu-system-x86_64', log: () => {} });
    await assert.rejects(noQemu, (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes(SETUP_COMMAND));
    const partial = path.join(dataDir, 'partial-guest');
    cpSync(engine.guest.dir, partial, { recursive: true, filter: (src) => !src.includes('bases') });
    rmSync(path.join(partial, 'initrd.cpio'));
    await assert.rejects(Engine.open({ dataDir, guestDir: partial, log: () => {} }), (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes('initrd'));
    // A guest dir from before cella-spawn (ADR 0012): the engine starts no QEMU without its prelude.
    const noSpawner = path.join(dataDir, 'no-spawner-guest');
    cpSync(engine.guest.dir, noSpawner, { recursive: true, filter: (src) => !src.includes('bases') });
    rmSync(path.join(noSpawner, 'cella-spawn'));
    await assert.rejects(
      Engine.open({ dataDir, guestDir: noSpawner, log: () => {} }),
      (e) => isCellaError(e, 'SETUP_MISSING') && e.message.includes('cella-spawn') && e.message.includes(SETUP_COMMAND),
    );
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

describe('restart of cellad', () => {
  interface Adoptable {
    ref: VmRef;
    pid: number;
    startTime: string;
    pooled: boolean;
  }
  interface Report {
    vms: Adoptable[];
    suspended?: VmRef;
  }
  const quiet = async (dir: string, extra: { outliveParent?: boolean } = {}): Promise<Engine> => {
    const e = await Engine.open({ dataDir: dir, log: () => {}, warmNetworks: 0, warmClones: 0, ...extra });
    ourTags.add(e.networkTag);
    return e;
  };
  const running = (p: Adoptable): boolean => processStartTime(p.pid) === p.startTime;

  /** Runs a cellad stand-in that launches VMs with outliveParent, then kills it with SIGKILL. */
  async function deadDaemon(dir: string, scenario: 'adopt' | 'reclaim'): Promise<Report> {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures', 'outliving-daemon.ts'), dir, imageDir, scenario], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0] as string);
      });
      void exited.then((code) => reject(new Error(`fixture exited with ${String(code)} before reporting`)));
    });
    child.kill('SIGKILL');
    await exited;
    return JSON.parse(line) as Report;
  }

  /** Whatever a failed test left in `dir` goes. */
  async function cleanUp(dir: string): Promise<void> {
    const e = await quiet(dir);
    await e.reclaim([]);
    await e.close();
    rmSync(dir, { recursive: true, force: true });
  }

  test('VMs outlive a SIGKILLed cellad and are adopted with their memory intact', async () => {
    const dir = tempDataDir('adopt');
    try {
      const { vms } = await deadDaemon(dir, 'adopt');
      const [a, b] = vms as [Adoptable, Adoptable];
      assert.ok(running(a) && running(b), 'QEMU outlived its cellad');

      const first = await quiet(dir, { outliveParent: true });
      const log = path.join(dir, 'a.log');
      const vm = await first.adopt(a.ref, a.pid, a.startTime, { appLog: log });
      assert.ok(vm);
      assert.equal(first.get('a'), vm);
      assert.deepEqual([vm.pid, vm.pidStartTime], [a.pid, a.startTime]);
      assert.equal((await vm.queryStatus()).running, true);
      assert.equal((await get(vm, '/get')).body, '2', 'the in-memory counter survived');
      assert.equal((await get(vm, '/inc')).body, '3');
      await vm.agent.ping();
      assert.equal((await vm.agent.exec({ argv: ['/bin/echo', 'adopted'] })).stdout.toString(), 'adopted\n');
      assert.ok(existsSync(log));

      // A cellad that stops on purpose lets go of its VMs; the next one adopts them again.
      await first.close({ keepRunning: true });
      assert.ok(running(a), 'close({ keepRunning }) leaves QEMU running');
      const second = await quiet(dir, { outliveParent: true });
      try {
        const again = await second.adopt(a.ref, a.pid, a.startTime);
        assert.ok(again);
        assert.equal((await get(again, '/inc')).body, '4');

        // A VM from the warm pool runs from a renamed folder, and is adopted all the same.
        assert.ok(b.pooled);
        const vmB = await second.adopt(b.ref, b.pid, b.startTime);
        assert.ok(vmB);
        await vmB.agent.ping();
        // The end of an adopted QEMU (not our child) is still noticed.
        const reported = new Promise<[string, { expected: boolean; code: number | null; signal: string | null }]>((resolve) =>
          second.once('vm-exit', (id: string, info: { expected: boolean; code: number | null; signal: string | null }) => resolve([id, info])),
        );
        process.kill(b.pid, 'SIGKILL');
        const [id, info] = await reported;
        assert.deepEqual([id, info.expected, info.code, info.signal], ['b', false, null, null]);
        assert.equal(second.get('b'), undefined);
        await second.terminate(b.ref);

        await second.terminate(again.ref);
        assert.ok(!running(a), 'terminate ends an adopted QEMU');
        assert.ok(!listNamespaces().includes(again.network.netns));
        assert.ok(!existsSync(again.dir));
      } finally {
        await second.close();
      }
    } finally {
      await cleanUp(dir);
    }
  });

  test('adopt() refuses a dead pid, a wrong start time and another process, and kills nothing', async () => {
    const dir = tempDataDir('refuse');
    const owner = await quiet(dir, { outliveParent: true });
    const other = await quiet(dir, { outliveParent: true });
    try {
      const vm = await owner.launch(imageDir, 'a');
      const neighbour = await owner.launch(imageDir, 'b');
      const dead = spawnSync('true').pid;
      const self = processStartTime(process.pid) as string;
      assert.equal(await other.adopt(vm.ref, dead, vm.pidStartTime), undefined, 'dead pid');
      assert.equal(await other.adopt(vm.ref, vm.pid, `${vm.pidStartTime}0`), undefined, 'wrong start time');
      assert.equal(await other.adopt(vm.ref, neighbour.pid, neighbour.pidStartTime), undefined, "another VM's QEMU");
      assert.equal(await other.adopt(vm.ref, process.pid, self), undefined, 'not a QEMU');
      assert.equal(other.list().length, 0);
      assert.equal(processStartTime(vm.pid), vm.pidStartTime);
      assert.equal((await get(vm, '/inc')).body, '1', 'the VM was not disturbed');
    } finally {
      await other.close();
      await owner.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('reclaim() ends what a dead cellad left, keeps the VMs it is told to and touches no other data directory', async () => {
    const dir = tempDataDir('reclaim');
    // A VM of another data directory, running, and one suspended: their namespaces must survive.
    const bystander = await engine.launch(imageDir, nextId());
    const sleeper = await engine.launch(imageDir, nextId());
    try {
      await get(sleeper, '/inc');
      await engine.suspend(sleeper);
      const report = await deadDaemon(dir, 'reclaim');
      const a = report.vms[0] as Adoptable;
      const kept = report.suspended as VmRef;
      const warm = processesWith(path.join(dir, 'vms', '.warm-'));
      assert.equal(warm.length, 1, 'the dead cellad left a warm clone');
      const warmNs = namespaceOf(warm[0] as number);
      assert.ok(running(a) && warmNs);

      const e = await quiet(dir);
      try {
        assert.deepEqual(await e.reclaim([kept]), { killed: 2, removedDirs: 2, removedNamespaces: 2 });
        assert.ok(!running(a));
        assert.deepEqual(processesWith(path.join(dir, 'vms')), [], 'no QEMU of this data directory is left');
        const namespaces = listNamespaces();
        assert.ok(!namespaces.includes(`cella-${a.ref.slot}`) && !namespaces.includes(warmNs));
        assert.ok(namespaces.includes(bystander.network.netns) && namespaces.includes(sleeper.network.netns), "other data directories' namespaces stay");
        assert.deepEqual(
          execFileSync('ls', ['-A', path.join(dir, 'vms')], { encoding: 'utf8' })
            .split('\n')
            .filter(Boolean),
          ['b'],
        );

        const back = await e.resume(kept);
        assert.equal((await get(back, '/get')).body, '1', 'the kept suspended VM resumes');
        await e.terminate(kept);
        assert.deepEqual(await e.reclaim([]), { killed: 0, removedDirs: 0, removedNamespaces: 0 });
      } finally {
        await e.close();
      }
      assert.equal((await get(bystander, '/inc')).body, '1');
      const woken = await engine.resume(sleeper.ref);
      assert.equal((await get(woken, '/get')).body, '1');
    } finally {
      await engine.terminate(bystander.ref);
      await engine.terminate(sleeper.ref);
      await cleanUp(dir);
    }
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
