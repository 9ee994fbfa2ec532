/**
 * npm run bench:engine [-- --quick] [--no-standby] [--no-preload] [--rate-only]
 *
 * Measures the engine on the demo app (a 256 MiB guest; suspend also a 2 GiB
 * one) and prints one JSON object per line. `baseline` is the target for the metric, `ratio`
 * is value / baseline (`better` says which way is good). Asserts nothing.
 * "Answer" = the app answered an HTTP request through the VM's namespace,
 * the path the endpoint proxy uses.
 */
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { Engine, type RunningVm } from '../src/engine/index.js';
import { DEFAULT_STANDBY_PRELOAD_MIB } from '../src/server/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';
import { get, tempDataDir } from '../test/helpers.js';
import { percentile, reporter } from './report.js';

const quick = process.argv.includes('--quick');
const rateOnly = process.argv.includes('--rate-only');
const N = {
  templates: quick ? 1 : 3,
  launches: quick ? 20 : 40,
  coldLaunches: quick ? 10 : 40,
  suspends: quick ? 3 : 10,
  // 50 alive as the issue asks; --quick uses 20 to stay under a minute (idle TCG guests still tick).
  clones: quick ? 20 : 50,
  sustainSeconds: quick ? 5 : 15,
};

function pssKiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const ms = (t: number): number => performance.now() - t;
/** QEMUs (a -qmp argument) whose command line names `dir` (this bench's data directory). */
function qemusOf(dir: string): number {
  let n = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (argv.split('\0').includes('-qmp') && argv.includes(dir)) n++;
    } catch {
      // gone
    }
  }
  return n;
}
const TICK_MS = 10; // USER_HZ 100
/** CPU ms process `pid` used so far (utime + stime). */
function cpuOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}
/** CPU ms so far: this process, and the whole box (all cores, busy). QEMUs are the spawn server's children, not ours. */
function cpuNow(): { self: number; box: number } {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ') ?? [];
  // Field i of stat(5), counted from 1 (the fields after the command name start at 3).
  const ticks = (i: number): number => Number(f[i - 3]);
  const all = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').split(/\s+/).slice(1).map(Number);
  const busy = all.reduce((a, b) => a + b, 0) - (all[3] ?? 0) - (all[4] ?? 0);
  return { self: (ticks(14) + ticks(15)) * TICK_MS, box: busy * TICK_MS };
}
const p50s = (phases: Record<string, number[]>): Record<string, number> => Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, percentile(v, 50)]));
const dataDir = tempDataDir('bench');
// --no-standby: every resume spawns its QEMU (the cold path); standbys hold the checkpoint's pages in advance
// as `cella server`'s do (ADR 0011), unless --no-preload.
const standby = !process.argv.includes('--no-standby');
const preloadMiB = process.argv.includes('--no-preload') ? 0 : DEFAULT_STANDBY_PRELOAD_MIB;
const engine = await Engine.open({ dataDir, log: () => {}, standbyQemus: standby ? 2 : 0, standbyPreloadMiB: preloadMiB });
const accel = engine.accel.accel;
const emit = reporter(() => ({ accel }));
let seq = 0;
const id = (): string => `bench-${++seq}`;

try {
  const rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);

  // Template boot and capture (fresh image each time).
  const boots: number[] = [];
  const captures: number[] = [];
  let imageDir = '';
  for (let i = 0; i < N.templates; i++) {
    imageDir = path.join(dataDir, 'images', `demo-${i}`);
    const m = await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
    boots.push(m.templateBootMs);
    captures.push(m.captureMs);
    if (i === N.templates - 1) {
      emit('snapshot_bytes', 'bytes', [m.devstateBytes + m.memAllocatedBytes + m.diskAllocatedBytes], null, 'lower', {
        devstate: m.devstateBytes,
        mem: m.memAllocatedBytes,
        disk: m.diskAllocatedBytes,
      });
    }
  }
  // --rate-only: the snapshot and then the sustained launch rate alone (to profile it).
  if (!rateOnly) {
    emit('template_boot_ms', 'ms', boots, null, 'lower');
    emit('snapshot_capture_ms', 'ms', captures, null, 'lower');

    // Launch → first answer, one at a time: from a ready warm pool, then cold (pool bypassed).
    for (const pooled of [true, false]) {
      const launches: number[] = [];
      const phases: Record<string, number[]> = {};
      for (let i = 0; i < (pooled ? N.launches : N.coldLaunches); i++) {
        if (pooled) await engine.prewarm(imageDir);
        const t = performance.now();
        const vm = await engine.launch(imageDir, id(), { fromPool: pooled });
        await get(vm, '/');
        launches.push(ms(t));
        for (const [k, v] of Object.entries(vm.phases)) (phases[k] ??= []).push(v);
        await engine.terminate(vm.ref);
      }
      emit(pooled ? 'launch_to_answer_ms' : 'launch_cold_to_answer_ms', 'ms', launches, 150, 'lower', {
        pooled,
        phases_p50: p50s(phases),
      });
    }

    // Suspend a guest that dirtied some memory; resume → first answer. The two cases: 256 MiB with 50 MiB
    // dirtied, and 2 GiB with 200 MiB dirtied (bytes written follow the dirtied memory, not the guest's size).
    const suspendCase = async (image: string, touchMiB: number) => {
      const r = {
        ms: [] as number[],
        mib: [] as number[],
        resumes: [] as number[],
        phases: {} as Record<string, number[]>,
        resumePhases: {} as Record<string, number[]>,
      };
      for (let i = 0; i < N.suspends; i++) {
        const vm = await engine.launch(image, id());
        await get(vm, `/touch/${touchMiB}`);
        const s = await engine.suspend(vm);
        r.ms.push(s.ms);
        r.mib.push(s.bytes / 1048576);
        for (const [k, v] of Object.entries(s.phases)) (r.phases[k] ??= []).push(v);
        // As with the warm pool above: a resume after the VM idled finds its standby QEMU ready.
        await engine.standbyReady(vm.ref);
        const t = performance.now();
        const back = await engine.resume(vm.ref);
        await get(back, '/get');
        r.resumes.push(ms(t));
        for (const [k, v] of Object.entries(back.phases)) (r.resumePhases[k] ??= []).push(v);
        await engine.terminate(back.ref);
      }
      return r;
    };
    const small = await suspendCase(imageDir, 50);
    emit('suspend_ms', 'ms', small.ms, 300, 'lower', { guest_mib: 256, touched_mib: 50, phases_p50: p50s(small.phases) });
    emit('suspend_bytes', 'MiB', small.mib, 80, 'lower', { guest_mib: 256, touched_mib: 50 });
    emit('resume_to_answer_ms', 'ms', small.resumes, 150, 'lower', { standby, preload_mib: preloadMiB, phases_p50: p50s(small.resumePhases) });
    const bigImage = path.join(dataDir, 'images', 'demo-2g');
    await engine.createSnapshot({ dir: bigImage, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 2048 });
    const big = await suspendCase(bigImage, 200);
    const bigMiB = percentile(big.mib, 50);
    emit('suspend_2g_ms', 'ms', big.ms, 600, 'lower', {
      guest_mib: 2048,
      touched_mib: 200,
      bytes_mib: Math.round(bigMiB * 10) / 10,
      phases_p50: p50s(big.phases),
    });
    emit('suspend_2g_bytes', 'MiB', big.mib, 320, 'lower', { guest_mib: 2048, touched_mib: 200 });
    emit('resume_2g_to_answer_ms', 'ms', big.resumes, null, 'lower', { guest_mib: 2048, standby, preload_mib: preloadMiB, phases_p50: p50s(big.resumePhases) });

    // PSS of an idle clone with 50 alive.
    const clones: RunningVm[] = [];
    const launchOne = async (): Promise<void> => {
      const vm = await engine.launch(imageDir, id());
      await get(vm, '/');
      clones.push(vm);
    };
    while (clones.length < N.clones) await Promise.all([launchOne(), launchOne()].slice(0, N.clones - clones.length));
    await new Promise((r) => setTimeout(r, quick ? 1000 : 3000));
    const pss = clones.map((vm) => pssKiB(vm.qemu.pid) / 1024);
    emit('pss_idle_clone_mib', 'MiB', pss, 40, 'lower', { alive: clones.length });
    await Promise.all(clones.map((vm) => engine.terminate(vm.ref)));
  }

  // Sustained launches: two workers (one per core) launch, get an answer and terminate, for a fixed time.
  // It starts as a user's would, the pool full and nothing of the phases above still running (their VMs and
  // standbys are gone): qemus_at_start counts this engine's QEMUs then (the warm clone alone).
  await engine.prewarm(imageDir);
  const qemusBefore = qemusOf(dataDir);
  let done = 0;
  // One QEMU's own CPU: until its launch returned (start, load, the pool's warm-up run, cont, identify), then to the answer.
  const qemuCpu = { launched: [] as number[], answered: [] as number[] };
  const cpu0 = cpuNow();
  const start = performance.now();
  const until = start + N.sustainSeconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < until) {
      const vm = await engine.launch(imageDir, id());
      const launched = cpuOf(vm.qemu.pid);
      await get(vm, '/');
      const answered = cpuOf(vm.qemu.pid);
      qemuCpu.launched.push(launched);
      qemuCpu.answered.push(answered - launched);
      done++;
      await engine.terminate(vm.ref);
    }
  };
  await Promise.all([worker(), worker()]);
  const rate = done / ((performance.now() - start) / 1000);
  // Where the CPU went, per launch: 10/s on 2 cores leaves 200 ms of CPU for each.
  const cpu = cpuNow();
  const perLaunch = (a: number, b: number): number => Math.round((a - b) / done);
  emit('launches_per_s', 'launches/s', [rate], 10, 'higher', {
    workers: 2,
    seconds: N.sustainSeconds,
    launched: done,
    qemus_at_start: qemusBefore,
    cpu_ms_per_launch: {
      cellad: perLaunch(cpu.self, cpu0.self),
      // To its answer: its exit (SIGKILL, the address space torn down) is in `box` only.
      qemu_mean: Math.round(qemuCpu.launched.reduce((a, b) => a + b, 0) / done + qemuCpu.answered.reduce((a, b) => a + b, 0) / done),
      box: perLaunch(cpu.box, cpu0.box),
      qemu_p50_to_launched: percentile(qemuCpu.launched, 50),
      qemu_p50_launched_to_answer: percentile(qemuCpu.answered, 50),
    },
    load: loadavg()[0],
  });
} finally {
  await engine.close();
  rmSync(dataDir, { recursive: true, force: true });
}
