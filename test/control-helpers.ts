import { demoZip } from '../src/images/index.js';
import { Arns } from '../src/contract/index.js';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CellaServer } from '../src/server/index.js';
import { loadGuestArtifacts } from '../src/setup/index.js';
import { callApi, pollState, type MicrovmBody, type Reply } from './fixtures/api.js';
import { getAt } from './helpers.js';

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

export const API_KEY = 'test-key-0123456789';

let demoZipFile: string | undefined;

/** The demo app's code artifact (its Dockerfile on the busybox base), zipped once per test process. */
export async function demoArtifact(): Promise<Buffer> {
  if (!demoZipFile || !existsSync(demoZipFile)) {
    demoZipFile = await demoZip(path.join(mkdtempSync(path.join(tmpdir(), 'cella-demo-zip-')), 'demo.zip'), loadGuestArtifacts().demoApp);
  }
  return readFileSync(demoZipFile);
}

/** Uploads a zip through the API; returns the URI to put in codeArtifact. */
export async function upload(base: string, zip: Buffer): Promise<string> {
  const r = await fetch(`${base}/cella/v1/code-artifacts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/zip' },
    body: new Uint8Array(zip),
  });
  const body = (await r.json()) as { uri: string };
  if (r.status !== 200) throw new Error(`upload: ${r.status} ${JSON.stringify(body)}`);
  return body.uri;
}

export interface BuildBody {
  buildId: string;
  buildState: string;
  stateReason?: string;
  stateReasonMessage?: string;
  snapshotBuild?: Record<string, number>;
}

/**
 * Creates image `name` from `zip` (default: the demo app) with the request's
 * other fields from `extra`, and waits for its build to end.
 */
export async function createImage(
  base: string,
  name: string,
  extra: Record<string, unknown> = {},
  zip?: Buffer,
): Promise<{ build: BuildBody; version: string; log: string }> {
  const uri = await upload(base, zip ?? (await demoArtifact()));
  const r = await api<{ imageVersion: string; buildId: string }>(base, 'POST', `${V}/microvm-images`, {
    name,
    baseImageArn: ARNS.managedImage('busybox'),
    codeArtifact: { uri },
    resources: [{ minimumMemoryInMiB: 256 }],
    ...extra,
  });
  if (r.status !== 201) throw new Error(`CreateMicrovmImage ${name}: ${r.status} ${r.text}`);
  const build = await waitBuild(base, name, r.body.imageVersion, r.body.buildId);
  const log = (await api(base, 'GET', `/cella/v1/microvm-images/${name}/versions/${r.body.imageVersion}/builds/${r.body.buildId}/logs`)).text;
  return { build, version: r.body.imageVersion, log };
}

/** Polls GetMicrovmImageBuild until the build ends (a bound on waiting, not a timing assertion). */
export async function waitBuild(base: string, name: string, version: string, buildId: string, ms = 300_000): Promise<BuildBody> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api<BuildBody>(base, 'GET', `${V}/microvm-images/${name}/versions/${version}/builds/${buildId}`);
    if (r.status !== 200) throw new Error(`GetMicrovmImageBuild: ${r.status} ${r.text}`);
    if (r.body.buildState === 'SUCCESSFUL' || r.body.buildState === 'FAILED') return r.body;
    if (Date.now() > end) throw new Error(`build ${buildId} still ${r.body.buildState}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

export const ALL_HOOKS = {
  port: 8080,
  microvmHooks: { run: 'ENABLED', resume: 'ENABLED', suspend: 'ENABLED', terminate: 'ENABLED' },
  microvmImageHooks: { ready: 'ENABLED' },
} as const;

export type { Reply };

/** One API call with the suites' key (`key: null` sends none); `raw` sends a string body as is. */
export function api<T = Record<string, unknown>>(
  base: string,
  method: string,
  p: string,
  body?: unknown,
  opts: { raw?: boolean; key?: string | null } = {},
): Promise<Reply<T>> {
  return callApi<T>(base, method, p, body, { ...opts, key: opts.key === undefined ? API_KEY : opts.key });
}

export const V = '/2025-09-09';

export type { MicrovmBody };

/** Polls GetMicrovm until the state is one of `states` (a bound on waiting, not a timing assertion). */
export function waitState(base: string, id: string, states: string[], ms = 60_000): Promise<MicrovmBody> {
  return pollState((method, p) => api<MicrovmBody>(base, method, p), id, states, ms);
}

/** Ends a test or benchmark server: cellad's own close() leaves VMs running for the next start, so they are terminated first. */
export async function shutdown(server: CellaServer): Promise<void> {
  for (const v of await server.store.liveVms()) await server.lifecycle.terminate(v.id).catch(() => {});
  await server.lifecycle.settle();
  await server.close();
}

/** HTTPS to a VM's endpoint through the proxy: dialled at 127.0.0.1 with the endpoint's name for SNI and Host. */
export function endpointRequest(
  server: Pick<CellaServer, 'domain' | 'proxyPort'>,
  ca: Buffer,
  id: string,
  p: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const host = `${id}.${server.domain}`;
    const req = httpsRequest(
      { host: '127.0.0.1', port: server.proxyPort, servername: host, path: p, ca, agent: false, headers: { host, ...headers } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** GET from the demo app (port 8080) of a VM this server runs, from the host, past the endpoint proxy. */
export async function guestGet(server: CellaServer, id: string, p: string): Promise<string> {
  const vm = server.engine.get(id);
  if (!vm) throw new Error(`VM ${id} is not running`);
  return (await getAt(vm.address(8080), p)).body;
}
