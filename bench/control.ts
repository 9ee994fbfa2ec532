/**
 * npm run bench:control [-- --quick]
 *
 * The control plane's own cost on top of the engine, through a real cellad
 * on port 0: GetMicrovm latency with a Bearer key and signed with SigV4 (as
 * the AWS SDK signs: the client's signing and the server's verification
 * included), and RunMicrovm → RUNNING minus the engine's launch time
 * (validation, store writes, scheduling, state fan-out). Prints JSON lines
 * (see ./report.ts); asserts nothing.
 */
import { rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { HttpRequest } from '@smithy/core/protocols';
import { Hash } from '@smithy/core/serde';
import { SignatureV4 } from '@smithy/signature-v4';
import { startServer } from '../src/server/index.js';
import { API_KEY, V, shutdown, createImage } from '../test/control-helpers.js';
import { tempDataDir } from '../test/helpers.js';
import { reporter } from './report.js';

const quick = process.argv.includes('--quick');
const N = { runs: quick ? 10 : 30, gets: quick ? 300 : 2000 };

const dataDir = tempDataDir('bench-control');
const server = await startServer({ dataDir, port: 0, proxyPort: 0, apiRateScale: 0, apiKey: API_KEY, log: () => {} });
const accessKey = server.newAccessKey;
if (!accessKey) throw new Error('a fresh data directory has a first access key');
const signer = new SignatureV4({ credentials: accessKey, region: server.region, service: 'lambda', sha256: Hash.bind(null, 'sha256') });
const emit = reporter(() => ({ accel: server.engine.accel.accel }));
// One kept-alive connection, as a client SDK would use.
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const { hostname, port } = new URL(server.url);
/** The headers of a GET signed anew, as the AWS SDK signs each call (a unique invocation id, so no two signatures are alike). */
let invocation = 0;
const sigv4 = async (p: string): Promise<Record<string, string>> => {
  const headers = { host: `${hostname}:${port}`, 'amz-sdk-invocation-id': String(++invocation) };
  const signed = await signer.sign(new HttpRequest({ method: 'GET', protocol: 'http:', hostname, port: Number(port), path: p, headers }));
  return signed.headers;
};
const call = async (method: string, p: string, body?: unknown, auth: 'bearer' | 'sigv4' = 'bearer'): Promise<Record<string, unknown>> => {
  const headers = auth === 'sigv4' ? await sigv4(p) : { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' };
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ host: hostname, port, method, path: p, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () =>
        res.statusCode === 200
          ? resolve(text ? (JSON.parse(text) as Record<string, unknown>) : {})
          : reject(new Error(`${method} ${p}: ${res.statusCode} ${text}`)),
      );
    });
    req.on('error', reject);
    req.end(payload);
  });
};

try {
  const { build, log } = await createImage(server.url, 'demo');
  if (build.buildState !== 'SUCCESSFUL') throw new Error(`image build failed:\n${log}`);
  const demoDir = (await server.images.runnable('demo')).dir;

  // Time the engine's launch inside the same run, to subtract it.
  const launchMs = new Map<string, number>();
  const launch = server.engine.launch.bind(server.engine);
  server.engine.launch = async (image, id, opts) => {
    const t = performance.now();
    const vm = await launch(image, id, opts);
    launchMs.set(id, performance.now() - t);
    return vm;
  };
  const overhead: number[] = [];
  const total: number[] = [];
  let lastId = '';
  for (let i = 0; i < N.runs; i++) {
    await server.engine.prewarm(demoDir);
    const t0 = performance.now();
    let running: (() => void) | undefined;
    const reached = new Promise<void>((resolve) => (running = resolve));
    let id = '';
    const onState = (r: { id: string; state: string }): void => {
      if (r.id === id && r.state === 'RUNNING') running?.();
    };
    server.lifecycle.on('state', onState);
    id = (await call('POST', `${V}/microvms`, { imageIdentifier: 'demo' })).microvmId as string;
    await reached;
    const t = performance.now() - t0;
    server.lifecycle.removeListener('state', onState);
    total.push(t);
    overhead.push(t - (launchMs.get(id) ?? 0));
    lastId = id;
    if (i < N.runs - 1) {
      await call('DELETE', `${V}/microvms/${id}`);
      await server.lifecycle.settle();
    }
  }
  emit('run_to_running_minus_launch_ms', 'ms', overhead, 20, 'lower');
  emit('run_to_running_ms', 'ms', total, null, 'lower', {
    launch_p50_ms: Math.round([...launchMs.values()].sort((a, b) => a - b)[Math.floor(launchMs.size / 2)] ?? 0),
  });

  for (let i = 0; i < 50; i++) await call('GET', `${V}/microvms/${lastId}`);
  const gets: number[] = [];
  for (let i = 0; i < N.gets; i++) {
    const t = performance.now();
    await call('GET', `${V}/microvms/${lastId}`);
    gets.push(performance.now() - t);
  }
  emit('get_microvm_ms', 'ms', gets, 2, 'lower', { p99: Math.round(([...gets].sort((a, b) => a - b)[Math.floor(gets.length * 0.99)] as number) * 100) / 100 });
  for (let i = 0; i < 50; i++) await call('GET', `${V}/microvms/${lastId}`, undefined, 'sigv4');
  const signedGets: number[] = [];
  for (let i = 0; i < N.gets; i++) {
    const t = performance.now();
    await call('GET', `${V}/microvms/${lastId}`, undefined, 'sigv4');
    signedGets.push(performance.now() - t);
  }
  emit('get_microvm_sigv4_ms', 'ms', signedGets, 2, 'lower', {
    p99: Math.round(([...signedGets].sort((a, b) => a - b)[Math.floor(signedGets.length * 0.99)] as number) * 100) / 100,
  });
  await call('DELETE', `${V}/microvms/${lastId}`);
  await server.lifecycle.settle();
} finally {
  agent.destroy();
  await shutdown(server);
  rmSync(dataDir, { recursive: true, force: true });
}
