/**
 * The E2B facade without VMs: the REAL `e2b` SDK against createE2bApi on
 * port 0, over Sandboxes on a real Lifecycle with a driver that launches
 * at once, a MemoryStore and a fake guest agent. test/e2b-rest.test.ts runs
 * the same calls against `cella server` and real VMs.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AuthenticationError, Sandbox, SandboxNotFoundError } from 'e2b';
import type { GuestStats } from '../agent/index.js';
import { ApiKeys } from '../auth/index.js';
import { Connectors } from '../connectors/index.js';
import { Arns, CellaError } from '../contract/index.js';
import type { RunningVm, VmRef } from '../engine/index.js';
import { Lifecycle, type RunnableImage, type VmDriver } from '../lifecycle/index.js';
import { LogHub } from '../logs/index.js';
import { MemoryStore } from '../store/index.js';
import { createE2bApi, metadataFilter } from './api.js';
import { Sandboxes, type GuestAgent } from './sandboxes.js';
import { warmUpSandbox } from './warm-up.js';

const KEY = 'cella_test-key';

/** Launches and resumes at once; suspends free the VM. */
class InstantDriver extends EventEmitter {
  readonly running = new Map<string, RunningVm>();
  async launch(_image: string, id: string): Promise<RunningVm> {
    return this.run(id);
  }
  async resume(ref: VmRef): Promise<RunningVm> {
    return this.run(ref.id);
  }
  async suspend(vm: RunningVm): Promise<{ bytes: number }> {
    this.running.delete(vm.ref.id);
    return { bytes: 0 };
  }
  async terminate(ref: VmRef): Promise<void> {
    this.running.delete(ref.id);
  }
  get(id: string): RunningVm | undefined {
    return this.running.get(id);
  }
  vmDir(id: string): string {
    return `/nonexistent/${id}`;
  }
  private run(id: string): RunningVm {
    const vm = {
      ref: { id, imageDir: '/img', slot: 1 },
      pid: 1,
      pidStartTime: '1',
      appLog: new EventEmitter(),
      agent: new EventEmitter(),
      address: () => ({ host: '127.0.0.1', port: 1 }),
    };
    this.running.set(id, vm as unknown as RunningVm);
    return vm as unknown as RunningVm;
  }
}

const IMAGE: RunnableImage = {
  name: 'demo',
  arn: 'arn:demo',
  version: '1.0',
  dir: '/img',
  config: { command: ['/app'], environmentVariables: {}, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1 },
};

const STATS: GuestStats = { cpuCount: 1, cpuUsedPct: 12.5, memTotal: 256 << 20, memUsed: 64 << 20, memCache: 8 << 20, diskTotal: 1 << 30, diskUsed: 1 << 20 };

let dir: string;
let store: MemoryStore;
let lifecycle: Lifecycle;
let driver: InstantDriver;
let sandboxes: Sandboxes;
let server: Server;
let apiUrl: string;
let statsFail = false;
/** What create put in the guest's environment (served at 127.0.0.1:49983/envs), and whether the listener was started. */
let guestEnv: Record<string, string> | undefined;
let envsListening = false;
/** Files create wrote in the guest, by path. */
const guestWrites = new Map<string, string>();
/** How many times create asked the guest for E2B's user. */
let userLookups = 0;
/** The images whose warm pool create gave a warm-up. */
const warmUps = new Map<string, unknown>();
const opts = (): { apiKey: string; apiUrl: string } => ({ apiKey: KEY, apiUrl });

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'cella-e2b-'));
  store = new MemoryStore();
  driver = new InstantDriver();
  lifecycle = new Lifecycle({ store, driver: driver as unknown as VmDriver, logs: new LogHub(dir), images: async () => IMAGE });
  const agent: GuestAgent = {
    stats: async () => {
      if (statsFail) throw new CellaError('AGENT_ERROR', 'no stats');
      return STATS;
    },
    lookupUser: async (name) => {
      userLookups++;
      return { name, uid: 1000, gid: 1000, home: `/home/${name}`, shell: '/bin/bash', groups: [1000] };
    },
    setEnv: async (env) => void (guestEnv = env),
    startEnvdListener: async () => void (envsListening = true),
    fs: { write: async (p, data) => void guestWrites.set(p, data) },
  };
  sandboxes = await Sandboxes.open({
    store,
    lifecycle,
    images: {
      runnable: async (name: string) => {
        if (name !== 'demo') throw new CellaError('NOT_FOUND', `image ${name} not found`);
        return IMAGE;
      },
    },
    connectors: new Connectors(store, new Arns()),
    capacity: { require: () => {} },
    maxMemoryMiB: 1024,
    agentOf: (id) => (driver.get(id) ? agent : undefined),
    fixedAddresses: true,
    warmPool: (imageDir, warmUp) => void warmUps.set(imageDir, warmUp),
  });
  const handler = createE2bApi({ sandboxes, keys: await ApiKeys.open(store, KEY), domain: 'cella.localhost:7443' });
  server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/e2b`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  lifecycle.close();
  await lifecycle.settle();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

test('create answers once the VM runs, with the fields the SDK reads; the sandbox is a MicroVM with its timeout', { timeout: 20_000 }, async () => {
  const before = Date.now();
  const sbx = await Sandbox.create('demo', { ...opts(), metadata: { team: 'a' }, envs: { FOO: 'bar' }, timeoutMs: 60_000 });
  assert.match(sbx.sandboxId, /^mvm-/);
  assert.equal(sbx.sandboxDomain, 'cella.localhost:7443');
  const vm = await store.getVm(sbx.sandboxId);
  assert.equal(vm?.state, 'RUNNING');
  assert.deepEqual(vm?.spec.timeout, { onExpiry: 'terminate' });
  assert.ok(vm && vm.maxDeadline >= before + 60_000 && vm.maxDeadline <= Date.now() + 60_000);
  const info = await Sandbox.getInfo(sbx.sandboxId, opts());
  assert.equal(info.templateId, 'demo');
  assert.equal(info.state, 'running');
  assert.deepEqual(info.metadata, { team: 'a' });
  assert.equal(info.envdVersion, '0.6.4');
  assert.equal(info.endAt.getTime(), vm?.maxDeadline);
  assert.deepEqual(info.lifecycle, { onTimeout: 'kill', autoResume: false });
  // The envd seam: the token the SDK was given, the create-time env and the guest's `user`.
  const token = sandboxes.envdAccessToken(sbx.sandboxId);
  assert.equal(await sandboxes.checkEnvdToken(sbx.sandboxId, token), true);
  assert.equal(await sandboxes.checkEnvdToken(sbx.sandboxId, `${token.slice(0, -1)}x`), false);
  assert.equal(await sandboxes.checkEnvdToken(sbx.sandboxId, undefined), false);
  assert.equal(await sandboxes.checkEnvdToken('mvm-other', token), false);
  assert.deepEqual(await sandboxes.defaults(sbx.sandboxId), { user: 'user', envVars: { FOO: 'bar' } });
  assert.deepEqual(guestEnv, { E2B_SANDBOX: 'true', E2B_SANDBOX_ID: sbx.sandboxId, E2B_TEMPLATE_ID: 'demo', FOO: 'bar' });
  assert.equal(envsListening, true);
  // Under TCG, processes at fixed addresses (ADR 0010).
  assert.equal(guestWrites.get('/proc/sys/kernel/randomize_va_space'), '0\n');
  // ... and the image's later warm clones have run a sandbox's first command (warm-up.ts).
  assert.deepEqual([...warmUps], [['/img', warmUpSandbox]]);
  // Public traffic unless asked otherwise: no traffic token.
  assert.equal(sbx.trafficAccessToken, undefined);
  assert.equal(await sandboxes.trafficToken(sbx.sandboxId), undefined);
  assert.equal(await sbx.kill(), true);
});

test("the guest's user is looked up once per image: later creates clone the same guest", { timeout: 20_000 }, async () => {
  const made = await Promise.all([Sandbox.create('demo', opts()), Sandbox.create('demo', opts())]);
  const later = await Sandbox.create('demo', opts());
  for (const sbx of [...made, later]) assert.equal((await sandboxes.defaults(sbx.sandboxId))?.user, 'user');
  // The first create (in the test above) looked it up; concurrent ones may too, until one has answered.
  const seen = userLookups;
  const last = await Sandbox.create('demo', opts());
  assert.equal(userLookups, seen);
  for (const sbx of [...made, later, last]) await sbx.kill();
});

test('network.allowPublicTraffic: false gives the sandbox a traffic access token, the one its ports then take', { timeout: 20_000 }, async () => {
  const sbx = await Sandbox.create('demo', { ...opts(), network: { allowPublicTraffic: false } });
  assert.ok(sbx.trafficAccessToken);
  assert.equal(await sandboxes.trafficToken(sbx.sandboxId), sbx.trafficAccessToken);
  assert.notEqual(sbx.trafficAccessToken, sandboxes.envdAccessToken(sbx.sandboxId));
  assert.equal(await sbx.kill(), true);
});

test('bad input is an SDK error and changes nothing: unknown template, bad key, unknown id, too long a timeout', { timeout: 20_000 }, async () => {
  const live = (await store.liveVms()).length;
  await assert.rejects(Sandbox.create('nope', opts()), /404: template nope not found: E2B templates are Cella images/);
  await assert.rejects(Sandbox.create('bad/name', opts()), /400: templateID/);
  await assert.rejects(Sandbox.create('demo', { ...opts(), timeoutMs: 86_401_000 }), /400: timeout/);
  await assert.rejects(Sandbox.create('demo', { ...opts(), apiKey: 'cella_wrong' }), AuthenticationError);
  await assert.rejects(Sandbox.getInfo('mvm-missing', opts()), SandboxNotFoundError);
  await assert.rejects(Sandbox.connect('mvm-missing', opts()), SandboxNotFoundError);
  await assert.rejects(Sandbox.setTimeout('mvm-missing', 1000, opts()), SandboxNotFoundError);
  assert.equal(await Sandbox.kill('mvm-missing', opts()), false);
  assert.equal((await store.liveVms()).length, live);
  const raw = await fetch(`${apiUrl}/sandboxes/mvm-missing`, { headers: { 'x-api-key': KEY } });
  assert.deepEqual([raw.status, ((await raw.json()) as { code: number }).code], [404, 404]);
  const noKey = await fetch(`${apiUrl}/v2/sandboxes`);
  assert.deepEqual([noKey.status, ((await noKey.json()) as { code: number }).code], [401, 401]);
});

test(
  'setTimeout may shorten, connect only extends; pause is 409 the second time; connect resumes (201) and the kill is final',
  { timeout: 20_000 },
  async () => {
    const sbx = await Sandbox.create('demo', { ...opts(), timeoutMs: 600_000 });
    const id = sbx.sandboxId;
    await sbx.setTimeout(30_000);
    const shortened = (await sbx.getInfo()).endAt.getTime();
    assert.ok(shortened <= Date.now() + 30_000);
    await Sandbox.connect(id, { ...opts(), timeoutMs: 5_000 });
    assert.equal((await sbx.getInfo()).endAt.getTime(), shortened, 'connect never shortens');
    assert.equal(await sbx.pause(), true);
    assert.equal((await sbx.getInfo()).state, 'paused');
    assert.equal((await store.getVm(id))?.state, 'SUSPENDED');
    assert.equal(await sbx.pause(), false, 'already paused: 409');
    const res = await fetch(`${apiUrl}/v2/sandboxes/${id}/connect`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      body: '{"timeout":120}',
    });
    assert.equal(res.status, 201, 'resumed');
    assert.equal((await sbx.getInfo()).state, 'running');
    assert.ok((await sbx.getInfo()).endAt.getTime() >= Date.now() + 100_000, 'extended');
    const again = await fetch(`${apiUrl}/v2/sandboxes/${id}/connect`, { method: 'POST', headers: { 'x-api-key': KEY }, body: '{}' });
    assert.equal(again.status, 200, 'was running');
    assert.equal(await sbx.kill(), true);
    assert.equal(await sbx.kill(), false);
    await assert.rejects(sbx.getInfo(), SandboxNotFoundError);
  },
);

test('autoPause: reaching the timeout pauses the sandbox instead of killing it', { timeout: 20_000 }, async () => {
  const sbx = await Sandbox.create('demo', { ...opts(), lifecycle: { onTimeout: 'pause', autoResume: true } });
  assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: 'pause', autoResume: true });
  assert.equal(await sandboxes.autoResume(sbx.sandboxId), true);
  await sbx.setTimeout(0);
  const alive = setInterval(() => {}, 1000);
  try {
    while ((await store.getVm(sbx.sandboxId))?.state !== 'SUSPENDED') await new Promise((r) => setTimeout(r, 20));
  } finally {
    clearInterval(alive);
  }
  assert.equal((await sbx.getInfo()).state, 'paused');
  assert.equal(await sbx.kill(), true);
});

test('list: both states by default, state and metadata filters, pages by X-Next-Token, newest first', { timeout: 20_000 }, async () => {
  const a = await Sandbox.create('demo', { ...opts(), metadata: { suite: 'list', n: 'a b&c=d' } });
  const b = await Sandbox.create('demo', { ...opts(), metadata: { suite: 'list', n: '2' } });
  const c = await Sandbox.create('demo', { ...opts(), metadata: { suite: 'list', n: '3' } });
  await b.pause();
  const ids = async (query: Parameters<typeof Sandbox.list>[0]): Promise<string[]> => {
    const p = Sandbox.list({ ...opts(), ...query });
    const out: string[] = [];
    while (p.hasNext) out.push(...(await p.nextItems()).map((s) => s.sandboxId));
    return out;
  };
  assert.deepEqual(await ids({ query: { metadata: { suite: 'list' } } }), [c.sandboxId, b.sandboxId, a.sandboxId]);
  assert.deepEqual(await ids({ query: { metadata: { suite: 'list' } }, limit: 1 }), [c.sandboxId, b.sandboxId, a.sandboxId], 'one per page');
  assert.deepEqual(await ids({ query: { metadata: { suite: 'list' }, state: ['paused'] } }), [b.sandboxId]);
  assert.deepEqual(await ids({ query: { metadata: { suite: 'list' }, state: ['running'] }, order: 'asc' }), [a.sandboxId, c.sandboxId]);
  assert.deepEqual(await ids({ query: { metadata: { n: 'a b&c=d' } } }), [a.sandboxId], 'escaped metadata');
  const first = Sandbox.list({ ...opts(), query: { metadata: { suite: 'list' } }, limit: 2 });
  assert.equal((await first.nextItems()).length, 2);
  assert.ok(first.hasNext);
  assert.equal((await first.nextItems()).length, 1);
  assert.equal(first.hasNext, false, 'no X-Next-Token on the last page');
  const bad = await fetch(`${apiUrl}/v2/sandboxes?state=gone`, { headers: { 'x-api-key': KEY } });
  assert.equal(bad.status, 400);
  for (const s of [a, b, c]) await s.kill();
});

test('metrics: one sample from the guest while it runs, none when paused or when the guest cannot say', { timeout: 20_000 }, async () => {
  const sbx = await Sandbox.create('demo', opts());
  const [m] = await sbx.getMetrics();
  assert.equal(m?.cpuUsedPct, 12.5);
  assert.equal(m?.memTotal, 256 << 20);
  assert.ok(m && Math.abs(m.timestamp.getTime() - Date.now()) < 60_000);
  assert.deepEqual(await sbx.getMetrics({ end: new Date(Date.now() - 3_600_000) }), [], 'outside the window');
  statsFail = true;
  assert.deepEqual(await sbx.getMetrics(), []);
  statsFail = false;
  await sbx.pause();
  assert.deepEqual(await sbx.getMetrics(), []);
  await sbx.kill();
});

test('what Cella does not do is 501 {code, message}; unknown paths 404', { timeout: 10_000 }, async () => {
  const call = async (method: string, p: string, body?: string): Promise<[number, unknown]> => {
    const r = await fetch(`${apiUrl}${p}`, { method, headers: { 'x-api-key': KEY }, ...(body ? { body } : {}) });
    return [r.status, ((await r.json()) as { code: number }).code];
  };
  assert.deepEqual(await call('POST', '/sandboxes/x/snapshots', '{}'), [501, 501]);
  assert.deepEqual(await call('PUT', '/sandboxes/x/network', '{}'), [501, 501]);
  assert.deepEqual(await call('GET', '/snapshots'), [501, 501]);
  assert.deepEqual(await call('POST', '/v3/templates', '{}'), [501, 501]);
  assert.deepEqual(await call('POST', '/v2/sandboxes', '{"templateID":"demo","network":{"denyOut":["0.0.0.0/0"]}}'), [501, 501]);
  assert.deepEqual(await call('GET', '/nothing'), [404, 404]);
  assert.deepEqual(await call('POST', '/v2/sandboxes', '{"templateID":'), [400, 400]);
  await assert.rejects(Sandbox.create('demo', { ...opts(), network: { denyOut: ['0.0.0.0/0'] } }), /501/);
});

test('metadataFilter decodes as E2B does: the whole value once more, then each key and value', () => {
  const sdk = (m: Record<string, string>): string =>
    new URLSearchParams(Object.fromEntries(Object.entries(m).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]))).toString();
  assert.deepEqual(metadataFilter(sdk({ 'a b': 'c&d=e', x: '' })), { 'a b': 'c&d=e', x: '' });
  assert.deepEqual(metadataFilter(null), {});
  assert.throws(
    () => metadataFilter('novalue'),
    (e: CellaError) => e.code === 'INVALID_ARGUMENT',
  );
});
