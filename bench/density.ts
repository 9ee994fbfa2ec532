/**
 * npm run bench:density [-- --count N] [--sample K] [--window S] [--parallel P]
 *
 * How many idle VMs one host holds: starts `cella server` (a child process,
 * its own data dir under /tmp, free ports), launches --count (default 300)
 * VMs of the demo image, P RunMicrovm calls in flight (default 4), then,
 * once they are all RUNNING and quiet, reads the CPU time of every QEMU and
 * of cellad over S seconds (default 20), the PSS of every QEMU, and asks the
 * endpoint of K of them (default all) for an answer through the HTTPS proxy.
 * Prints JSON lines (see ./report.ts); asserts nothing.
 *
 * Server flags it uses, and why: --port 0 and --proxy-port 0 (free ports),
 * --api-rate-scale 0 (the bench is one caller making hundreds of calls) and
 * --max-memory-mib (count + 4) × 256 (the quota counts each VM's baseline,
 * 256 MiB for the demo, whose guest gets the 4× peak; the default, host RAM,
 * admits 96 on 24 GiB). Endpoint limits stay at their defaults: the checks run
 * four at a time. It refuses a --count that MemAvailable cannot hold at
 * 64 MiB per VM plus 2 GiB. Run it under `flock /tmp/cella-vm.lock`.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CellaClient } from '../src/client/index.js';
import { tempDataDir } from '../test/helpers.js';
import { reporter } from './report.js';

const { values: opts } = parseArgs({
  options: { count: { type: 'string' }, sample: { type: 'string' }, window: { type: 'string' }, parallel: { type: 'string' } },
});
const count = Number(opts.count ?? 300);
const sample = Math.min(count, Number(opts.sample ?? count));
const windowS = Number(opts.window ?? 20);
const parallel = Number(opts.parallel ?? 4);
for (const [k, v] of Object.entries({ count, sample, window: windowS, parallel })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}
/** The demo image's memory tier (its baseline; the quota counts it). */
const BASELINE_MIB = 256;
const API_KEY = `bench-density-${process.pid}-0123456789`;
const CLK_TCK = 100;

const memAvailableMiB = Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;
if (count * 48 + 2048 > memAvailableMiB) {
  throw new Error(
    `--count ${count} needs about ${count * 48 + 2048} MiB available (48 MiB per idle VM, PSS being about 26, and 2 GiB spare); this host has ${Math.round(memAvailableMiB)}`,
  );
}

/** utime + stime of a process and all its threads, in seconds. */
function cpuSeconds(pid: number): number {
  const f = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

function pssMiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/**
 * The QEMUs of this data dir (their command lines name files in it), by VM id: the folder a QEMU is
 * chrooted into, which follows the rename when a launch takes a warm clone (whose -name stays the clone's).
 */
function qemus(dataDir: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!argv[0]?.includes('qemu-system') || !argv.some((a) => a.includes(dataDir))) continue;
      const root = readlinkSync(`/proc/${entry}/root`);
      found.set(root === '/' ? (argv[argv.indexOf('-name') + 1] ?? entry) : path.basename(root), Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const dataDir = tempDataDir('bench-density');
const qemuVersion = /version (\S+)/.exec((await run(process.env.CELLA_QEMU ?? 'qemu-system-x86_64', ['--version'])).split('\n')[0] ?? '')?.[1] ?? 'unknown';
let accelerator = 'unknown';
const emit = reporter(() => ({ accel: accelerator, qemu: qemuVersion, count }));

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.on('error', reject);
    p.on('close', () => resolve(out));
  });
}

// prettier-ignore
const server = spawn(process.execPath, [
  '--import', 'tsx', path.join(import.meta.dirname, '../test/fixtures/cli.ts'), 'server',
  '--data-dir', dataDir, '--port', '0', '--proxy-port', '0', '--api-rate-scale', '0',
  '--max-memory-mib', String((count + 4) * BASELINE_MIB),
], { env: { ...process.env, CELLA_API_KEY: API_KEY }, stdio: ['ignore', 'pipe', 'pipe'] });
let serverLog = '';
server.stderr.on('data', (c: Buffer) => (serverLog = (serverLog + c.toString()).slice(-20_000)));

const ids: string[] = [];
let client: CellaClient | undefined;
try {
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    server.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
    server.once('exit', (code) => reject(new Error(`cella server exited (${code}) before listening:\n${serverLog}`)));
  });
  client = new CellaClient({ url, apiKey: API_KEY });
  const c = client;
  const info = await c.getServerInfo();
  accelerator = info.accelerator;
  // The first start builds the demo image; a run is accepted once it is CREATED.
  for (const end = Date.now() + 600_000; (await c.getImage('demo').catch(() => undefined))?.state !== 'CREATED'; await sleep(500)) {
    if (Date.now() > end) throw new Error(`the demo image was not built:\n${serverLog}`);
  }

  // Launch: `parallel` RunMicrovm calls in flight, each until the VM is RUNNING.
  const runMs: number[] = [];
  const t0 = performance.now();
  const stamps: number[] = [];
  await pool(
    Array.from({ length: count }, (_, i) => i),
    parallel,
    async () => {
      const t = performance.now();
      const vm = await c.runMicrovm({ imageIdentifier: 'demo' });
      ids.push(vm.microvmId);
      const ran = await c.waitForState(vm.microvmId, ['RUNNING'], { timeoutMs: 120_000, intervalMs: 50 });
      if (ran.state !== 'RUNNING') throw new Error(`${vm.microvmId} ended ${ran.state}: ${ran.stateReason ?? ''}\n${serverLog}`);
      runMs.push(performance.now() - t);
      stamps.push(performance.now() - t0);
    },
  );
  const launchS = (performance.now() - t0) / 1000;
  const lastQuarter = stamps.slice(Math.floor((count * 3) / 4));
  const tailRate = lastQuarter.length > 1 ? (lastQuarter.length - 1) / (((lastQuarter.at(-1) as number) - (lastQuarter[0] as number)) / 1000) : count / launchS;
  emit('density_launches_per_s', 'launches/s', [count / launchS], 10, 'higher', {
    parallel,
    seconds: Math.round(launchS),
    last_quarter_per_s: Math.round(tailRate * 10) / 10,
  });
  emit('density_run_to_running_ms', 'ms', runMs, null, 'lower');

  // Idle: let launches, pool refills and first-request work settle, then read CPU time over the window.
  await sleep(10_000);
  const byName = qemus(dataDir);
  const pids = ids.map((id) => byName.get(id)).filter((p): p is number => p !== undefined);
  if (pids.length !== count) throw new Error(`${count} VMs launched but ${pids.length} of their QEMUs are alive`);
  const warm = [...byName.values()].filter((p) => !pids.includes(p));
  const before = pids.map(cpuSeconds);
  const serverBefore = cpuSeconds(server.pid as number);
  const w0 = performance.now();
  await sleep(windowS * 1000);
  const elapsed = (performance.now() - w0) / 1000;
  const perVm = pids.map((p, i) => ((cpuSeconds(p) - (before[i] as number)) / elapsed) * 100);
  const serverCores = (cpuSeconds(server.pid as number) - serverBefore) / elapsed;
  const qemuCores = perVm.reduce((a, b) => a + b, 0) / 100;
  // 1 core for 300 VMs is the target: 0.33 % of a core each.
  // The mean is the figure: one VM's reading moves in clock ticks (1/100 s, so 0.05 % over 20 s).
  emit('density_cpu_per_idle_vm_pct', '% of a core', [(qemuCores / count) * 100], 100 / 300, 'lower', {
    window_s: Math.round(elapsed),
    max_vm: Math.round(Math.max(...perVm) * 1000) / 1000,
  });
  emit('density_cpu_idle_total_cores', 'cores', [qemuCores + serverCores], 1, 'lower', {
    qemu_cores: Math.round(qemuCores * 1000) / 1000,
    cellad_cores: Math.round(serverCores * 1000) / 1000,
    warm_clones: warm.length,
  });
  emit('density_pss_mib', 'MiB', pids.map(pssMiB), 40, 'lower', { alive: pids.length });

  // Every VM (or a spread-out sample) still answers at its endpoint.
  const ca = info.caCertificate;
  const step = count / sample;
  const checked = Array.from({ length: sample }, (_, i) => ids[Math.floor(i * step)] as string);
  let answered = 0;
  const failures: string[] = [];
  await pool(checked, 4, async (id) => {
    const token = (await c.createMicrovmAuthToken(id, { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] })).authToken['X-aws-proxy-auth'] as string;
    const host = `${id}.${info.domain}`;
    const status = await new Promise<number>((resolve) => {
      httpsRequest(
        {
          host: '127.0.0.1',
          port: info.proxyPort,
          servername: host,
          path: '/',
          ca,
          agent: false,
          timeout: 15_000,
          headers: { host: `${host}:${info.proxyPort}`, 'x-aws-proxy-auth': token },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      )
        .on('error', () => resolve(0))
        .on('timeout', function (this: { destroy: () => void }) {
          this.destroy();
        })
        .end();
    });
    if (status === 200) answered++;
    else failures.push(`${id}: ${status || 'no answer'}`);
  });
  emit('density_endpoints_answering', 'VMs', [answered], sample, 'higher', { checked: sample, failures: failures.slice(0, 5) });
} finally {
  if (client) await pool([...ids], 4, (id) => client!.terminateMicrovm(id).catch(() => {}));
  server.kill('SIGTERM');
  await new Promise((r) => (server.exitCode === null ? server.once('exit', r) : r(undefined)));
  // VMs outlive a stopped cellad by design: whatever terminate missed goes now.
  for (const pid of qemus(dataDir).values()) process.kill(pid, 'SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
