/**
 * npm run bench:proxy [-- --quick] [--standby-qemus N] [--standby-preload-mib N]
 *
 * The endpoint proxy in one run: requests/s and latency through the proxy
 * (HTTPS, keep-alive, token checked on every request) and directly to the
 * guest's namespace address, and suspended → first byte through the proxy
 * (auto-resume). Prints JSON lines (see ./report.ts); asserts nothing.
 * `--standby-qemus` sets the server's standby budget (ADR 0011; default the
 * server's), to compare a cold resume with a standby QEMU and without;
 * `--standby-preload-mib` the pages standbys may hold in advance.
 */
import { request as httpsRequest } from 'node:https';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readFileSync, rmSync } from 'node:fs';
import { DEFAULT_STANDBY_PRELOAD_MIB, DEFAULT_STANDBY_QEMUS, startServer } from '../src/server/index.js';
import { API_KEY, V, shutdown, api, createImage, waitState } from '../test/control-helpers.js';
import { tempDataDir } from '../test/helpers.js';
import type { LoadSpec } from './load-worker.js';
import { percentile, reporter } from './report.js';

const exec = promisify(execFile);
const quick = process.argv.includes('--quick');
const N = { seconds: quick ? 4 : 10, concurrency: 8, resumes: quick ? 5 : 15 };
const standbyArg = process.argv.indexOf('--standby-qemus');
const standbyQemus = standbyArg < 0 ? DEFAULT_STANDBY_QEMUS : Number(process.argv[standbyArg + 1]);
const preloadArg = process.argv.indexOf('--standby-preload-mib');
const standbyPreloadMiB = preloadArg < 0 ? DEFAULT_STANDBY_PRELOAD_MIB : Number(process.argv[preloadArg + 1]);

const dataDir = tempDataDir('bench-proxy');
// A short resume window, so one run measures a resume within it (a continue) and one after it (a restore).
const WINDOW_S = 2;
const server = await startServer({
  dataDir,
  port: 0,
  proxyPort: 0,
  apiKey: API_KEY,
  minIdleSeconds: 1,
  resumeWindowSeconds: WINDOW_S,
  standbyQemus,
  standbyPreloadMiB,
  endpointRpsPerVcpu: 0,
  log: () => {},
});
const emit = reporter(() => ({ accel: server.engine.accel.accel, standby_qemus: standbyQemus, standby_preload_mib: standbyPreloadMiB }));
const base = server.url;

/** Runs the load in a child process; returns requests/s and per-request latencies. */
async function load(spec: LoadSpec): Promise<{ rps: number; latencies: number[]; errors: number }> {
  const { stdout } = await exec(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./load-worker.ts', import.meta.url)), JSON.stringify(spec)], {
    maxBuffer: 64 * 1024 * 1024,
  });
  const m = JSON.parse(stdout) as { latencies: number[]; errors: number; seconds: number };
  return { rps: m.latencies.length / m.seconds, latencies: m.latencies, errors: m.errors };
}

try {
  const { build, log } = await createImage(base, 'demo');
  if (build.buildState !== 'SUCCESSFUL') throw new Error(`image build failed:\n${log}`);
  const run = await api<{ microvmId: string }>(base, 'POST', `${V}/microvms`, {
    imageIdentifier: 'demo',
    idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true },
  });
  const id = run.body.microvmId;
  await waitState(base, id, ['RUNNING']);
  const tok = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/auth-token`, {
    expirationInMinutes: 60,
    allowedPorts: [{ port: 8080 }],
  });
  const token = tok.body.authToken['X-aws-proxy-auth'] as string;
  const ca = readFileSync(server.caFile as string);
  const hostname = `${id}.${server.domain}`;
  const addr = server.engine.get(id)?.address(8080) as { host: string; port: number };
  const direct: LoadSpec = { tls: false, ...addr, path: '/', headers: {}, seconds: N.seconds, concurrency: N.concurrency };
  const viaProxy: LoadSpec = {
    tls: true,
    host: '127.0.0.1',
    port: server.proxyPort,
    path: '/',
    headers: { host: hostname, 'x-aws-proxy-auth': token },
    servername: hostname,
    ca: ca.toString(),
    seconds: N.seconds,
    concurrency: N.concurrency,
  };
  // Warm both paths, then measure them back to back.
  await load({ ...direct, seconds: 1 });
  await load({ ...viaProxy, seconds: 1 });
  const d = await load(direct);
  const p = await load(viaProxy);
  const round = (x: number): number => Math.round(x * 100) / 100;
  emit('direct_rps', 'req/s', [d.rps], null, 'higher', {
    concurrency: N.concurrency,
    errors: d.errors,
    latency_p50_ms: round(percentile(d.latencies, 50)),
    latency_p99_ms: round(percentile(d.latencies, 99)),
  });
  emit('proxy_rps', 'req/s', [p.rps], null, 'higher', {
    concurrency: N.concurrency,
    errors: p.errors,
    latency_p50_ms: round(percentile(p.latencies, 50)),
    latency_p99_ms: round(percentile(p.latencies, 99)),
  });
  emit('proxy_to_direct_throughput', 'ratio', [p.rps / d.rps], 0.8, 'higher');
  emit('proxy_latency_ms', 'ms', p.latencies, null, 'lower', { p99: round(percentile(p.latencies, 99)), direct_p50_ms: round(percentile(d.latencies, 50)) });

  // Suspended → first byte through the proxy (auto-resume), within the resume window and after it.
  const firstByte = async (waitMs: number): Promise<number> => {
    await api(base, 'POST', `${V}/microvms/${id}/suspend`);
    await waitState(base, id, ['SUSPENDED']);
    await new Promise((r) => setTimeout(r, waitMs));
    const t = performance.now();
    return new Promise<number>((resolve, reject) => {
      httpsRequest(
        {
          host: '127.0.0.1',
          port: server.proxyPort,
          path: '/',
          ca,
          servername: hostname,
          agent: false,
          headers: { host: hostname, 'x-aws-proxy-auth': token },
        },
        (res) => {
          const ms = performance.now() - t;
          res.resume();
          res.on('end', () => resolve(ms));
        },
      )
        .on('error', reject)
        .end();
    });
  };
  const inWindow: number[] = [];
  const cold: number[] = [];
  for (let i = 0; i < N.resumes; i++) {
    inWindow.push(await firstByte(0));
    // 1.5 s past the window: time for the standby QEMU (made when the window ends) to be ready.
    cold.push(await firstByte(WINDOW_S * 1000 + 1500));
  }
  emit('suspended_to_first_byte_ms', 'ms', inWindow, 150, 'lower', { note: `within the ${WINDOW_S} s resume window: the stopped QEMU is continued` });
  emit('suspended_cold_to_first_byte_ms', 'ms', cold, 150, 'lower', {
    note: `after the window: restored from the checkpoint${standbyQemus > 0 ? ' into a standby QEMU' : ''}`,
  });
  await api(base, 'DELETE', `${V}/microvms/${id}`);
  await server.lifecycle.settle();
} finally {
  await shutdown(server);
  rmSync(dataDir, { recursive: true, force: true });
}
