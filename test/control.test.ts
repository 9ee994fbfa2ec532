/**
 * The control plane end to end: a real cellad on port 0, real VMs, every
 * call over HTTP.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { zipDirectory } from '../src/archive/index.js';
import { networkForSlot } from '../src/net/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { ALL_HOOKS, API_KEY, V, api, createImage, shutdown, upload, waitState, type MicrovmBody } from './control-helpers.js';
import { main } from '../src/cli/index.js';
import { managedImageArn } from '../src/contract/index.js';
import { alive, eventually, getAt, processesWith, tempDataDir } from './helpers.js';

/** The QEMUs of VMs under `dataDir` (their command lines name their folders in vms/). */
const qemusOf = (dataDir: string): number[] => processesWith(path.join(dataDir, 'vms/'));

const QUOTA_MIB = 1536;

/** GET from the demo app of a VM this server runs. */
function guestGet(server: CellaServer, id: string, p: string): Promise<string> {
  const vm = server.engine.get(id);
  if (!vm) throw new Error(`VM ${id} is not running`);
  return httpGet(vm.address(8080), p);
}

async function httpGet(addr: { host: string; port: number }, p: string): Promise<string> {
  return (await getAt(addr, p)).body;
}

describe('control plane over HTTP', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let base: string;

  const run = async (body: Record<string, unknown>): Promise<MicrovmBody> => {
    const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.state, 'PENDING');
    return r.body;
  };
  const terminate = async (id: string): Promise<MicrovmBody> => {
    assert.equal((await api(base, 'DELETE', `${V}/microvms/${id}`)).status, 200);
    return waitState(base, id, ['TERMINATED']);
  };
  const count = async (): Promise<number> => (await api<{ items: unknown[] }>(base, 'GET', `${V}/microvms`)).body.items.length;

  before(async () => {
    dir = tempDataDir('control');
    server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, maxMemoryMiB: QUOTA_MIB, imageQuotas: { images: 2 }, log: () => {} });
    base = server.url;
    const { build, log } = await createImage(base, 'demo', { hooks: ALL_HOOKS });
    assert.equal(build.buildState, 'SUCCESSFUL', log);
  });

  after(async () => {
    await shutdown(server);
    assert.deepEqual(qemusOf(dir), [], 'no QEMU left');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the first start generates an API key, shown once, that opens the API; anything else is refused', async () => {
    assert.match(server.newApiKey ?? '', /^cella_/);
    const generated = server.newApiKey as string;
    assert.equal((await api(base, 'GET', `${V}/microvms`, undefined, { key: generated })).status, 200);
    const none = await api(base, 'GET', `${V}/microvms`, undefined, { key: null });
    assert.equal(none.status, 401);
    assert.equal((none.body as { code: string }).code, 'UNAUTHENTICATED');
    assert.equal((await api(base, 'GET', `${V}/microvms`, undefined, { key: 'wrong' })).status, 401);
    assert.equal((await api(base, 'GET', '/openapi.json', undefined, { key: null })).status, 401);
  });

  test('/openapi.json describes every operation from the schemas that validate', async () => {
    const r = await api<{ paths: Record<string, Record<string, { operationId: string; requestBody?: { content: Record<string, { schema: { properties: Record<string, { minimum?: number }> } }> } }>> }>(
      base,
      'GET',
      '/openapi.json',
    );
    assert.equal(r.status, 200);
    const ops = Object.values(r.body.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
    for (const op of ['RunMicrovm', 'GetMicrovm', 'ListMicrovms', 'SuspendMicrovm', 'ResumeMicrovm', 'TerminateMicrovm', 'CreateMicrovmAuthToken']) {
      assert.ok(ops.includes(op), op);
    }
    const runBody = r.body.paths[`${V}/microvms`]?.post?.requestBody?.content['application/json']?.schema;
    assert.equal(runBody?.properties.maximumDurationInSeconds?.minimum, 1);
  });

  test('run → RUNNING (run hook with the payload) → idle suspend → resume with RAM and disk kept → terminate', async () => {
    const vm = await run({ runHookPayload: 'hello "vm"', idlePolicy: { maxIdleDurationSeconds: 2, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    assert.equal(vm.endpoint, `${vm.microvmId}.cella.localhost`);
    const running = await waitState(base, vm.microvmId, ['RUNNING', 'TERMINATED']);
    assert.equal(running.state, 'RUNNING', running.stateReason);
    // The ready hook was called in the image build, before the snapshot: the clone remembers it, then gets its run hook.
    assert.equal(await guestGet(server, vm.microvmId, '/hooks'), `ready \nrun ${JSON.stringify({ microvmId: vm.microvmId, runHookPayload: 'hello "vm"' })}\n`);
    assert.equal(await guestGet(server, vm.microvmId, '/inc'), '1');
    assert.equal(await guestGet(server, vm.microvmId, '/write/kept'), 'written');
    // Nothing touches its endpoint: the idle policy suspends it.
    await waitState(base, vm.microvmId, ['SUSPENDED']);
    assert.equal(server.engine.get(vm.microvmId), undefined, 'no QEMU while suspended');
    assert.equal((await api(base, 'POST', `${V}/microvms/${vm.microvmId}/resume`)).status, 200);
    assert.equal((await waitState(base, vm.microvmId, ['RUNNING'])).state, 'RUNNING');
    assert.equal(await guestGet(server, vm.microvmId, '/inc'), '2');
    assert.equal(await guestGet(server, vm.microvmId, '/read'), 'kept');
    assert.match(await guestGet(server, vm.microvmId, '/hooks'), /^ready \nrun .*\nsuspend \nresume \n$/);
    const pid = server.engine.get(vm.microvmId)?.pid as number;
    const done = await terminate(vm.microvmId);
    assert.ok(done.terminatedAt);
    assert.equal(alive(pid), false);
    assert.equal(existsSync(path.join(dir, 'vms', vm.microvmId)), false);
    // Logs outlive the VM; usage was metered.
    const logs = await api(base, 'GET', `/cella/v1/microvms/${vm.microvmId}/logs`);
    assert.match(logs.text, /hook run .*\nhook suspend \nhook resume \nhook terminate \n/);
    const u = await api<{ runningSeconds: number; vcpuSeconds: number; snapshotBytesWritten: number; snapshotBytesRead: number; snapshotStorageGibHours: number }>(
      base,
      'GET',
      `/cella/v1/microvms/${vm.microvmId}/usage`,
    );
    assert.ok(u.body.runningSeconds > 0 && u.body.vcpuSeconds > 0);
    assert.ok(u.body.snapshotBytesWritten > 0);
    assert.equal(u.body.snapshotBytesRead, u.body.snapshotBytesWritten);
    assert.ok(u.body.snapshotStorageGibHours > 0);
    const total = await api<{ total: { runningSeconds: number } }>(base, 'GET', '/cella/v1/usage');
    assert.ok(total.body.total.runningSeconds >= u.body.runningSeconds);
  });

  test('explicit suspend and resume; a refused suspend hook keeps it RUNNING, a failing resume hook SUSPENDED, both healthy (no stateReason)', async () => {
    const vm = await run({});
    await waitState(base, vm.microvmId, ['RUNNING']);
    assert.equal(await guestGet(server, vm.microvmId, '/hookmode/suspend/fail'), 'ok');
    const before = (await server.store.getVm(vm.microvmId))?.generation ?? 0;
    assert.equal((await api(base, 'POST', `${V}/microvms/${vm.microvmId}/suspend`)).status, 200);
    // RUNNING → SUSPENDING → RUNNING: two transitions.
    await eventually(async () => ((await server.store.getVm(vm.microvmId))?.generation ?? 0) >= before + 2, 30_000, 'suspend refusal');
    const refused = await waitState(base, vm.microvmId, ['RUNNING']);
    assert.equal(refused.stateReason, undefined);
    await guestGet(server, vm.microvmId, '/hookmode/suspend/ok');
    await guestGet(server, vm.microvmId, '/hookmode/resume/fail');
    assert.equal((await api(base, 'POST', `${V}/microvms/${vm.microvmId}/suspend`)).status, 200);
    await waitState(base, vm.microvmId, ['SUSPENDED']);
    const conflict = await api(base, 'POST', `${V}/microvms/${vm.microvmId}/suspend`);
    assert.equal(conflict.status, 409);
    assert.equal(conflict.type, 'ConflictException');
    const failed = await api<{ code: string; message: string }>(base, 'POST', `${V}/microvms/${vm.microvmId}/resume`);
    assert.equal(failed.status, 500);
    assert.equal(failed.type, 'InternalServerException');
    assert.equal(failed.body.code, 'HOOK_FAILED');
    assert.match(failed.body.message, /the resume hook answered HTTP 500/);
    const still = await waitState(base, vm.microvmId, ['SUSPENDED']);
    assert.equal(still.stateReason, undefined);
    await terminate(vm.microvmId);
  });

  test('maximumDurationInSeconds ends the VM with a reason', async () => {
    const vm = await run({ maximumDurationInSeconds: 3 });
    await waitState(base, vm.microvmId, ['RUNNING']);
    const done = await waitState(base, vm.microvmId, ['TERMINATED']);
    assert.match(done.stateReason ?? '', /maximum duration of 3 s reached/);
  });

  test('suspendedDurationSeconds ends a suspended VM; 0 terminates it at suspend', async () => {
    const ttl = await run({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 2, autoResumeEnabled: false } });
    await waitState(base, ttl.microvmId, ['SUSPENDED']);
    const done = await waitState(base, ttl.microvmId, ['TERMINATED']);
    assert.match(done.stateReason ?? '', /suspended for longer than suspendedDurationSeconds \(2 s\)/);
    assert.equal(existsSync(path.join(dir, 'vms', ttl.microvmId)), false, 'its checkpoint is gone');

    const zero = await run({ idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 0, autoResumeEnabled: true } });
    const seen = new Set<string>();
    const onState = (r: { id: string; state: string }): void => {
      if (r.id === zero.microvmId) seen.add(r.state);
    };
    server.lifecycle.on('state', onState);
    const end = await waitState(base, zero.microvmId, ['TERMINATED', 'SUSPENDED']);
    server.lifecycle.removeListener('state', onState);
    assert.equal(end.state, 'TERMINATED');
    assert.equal(seen.has('SUSPENDED'), false);
    assert.match(end.stateReason ?? '', /suspendedDurationSeconds is 0/);
  });

  test("the README's run-microvm example runs as written with cella run in front", async () => {
    const readme = readFileSync(path.join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const block = /# aws lambda-microvms run-microvm \\\n([\s\S]*?)\n```/.exec(readme)?.[1];
    assert.ok(block, 'the README shows the example');
    // The shell's job: joined lines, words, single quotes.
    const argv = [...block.replace(/\\\n/g, ' ').matchAll(/'([^']*)'|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string);
    assert.deepEqual(argv.slice(0, 3), ['node', 'bin/cella.js', 'run']);
    let out = '';
    const io: Parameters<typeof main>[1] = { out: (t) => (out += typeof t === 'string' ? t : Buffer.from(t).toString()), err: () => {}, env: { CELLA_URL: base, CELLA_API_KEY: API_KEY } };
    assert.equal(await main([...argv.slice(2), '--json'], io), 0, out);
    const vm = JSON.parse(out) as MicrovmBody & { idlePolicy: unknown; maximumDurationInSeconds: number; ingressNetworkConnectors: string[] };
    assert.equal(vm.state, 'RUNNING');
    assert.deepEqual(vm.idlePolicy, { maxIdleDurationSeconds: 300, suspendedDurationSeconds: 3600, autoResumeEnabled: true });
    assert.equal(vm.maximumDurationInSeconds, 3600);
    assert.deepEqual(vm.ingressNetworkConnectors.map((a) => a.split(':').pop()), ['HTTP_INGRESS']);
    await terminate(vm.microvmId);
  });

  test('the image quota (lowered to 2 for this server) refuses a third image with ServiceQuotaExceeded and creates nothing', async () => {
    const noDockerfile = mkdtempSync(path.join(tmpdir(), 'cella-quota-'));
    writeFileSync(path.join(noDockerfile, 'README'), 'no Dockerfile: the build fails at once, without a VM\n');
    try {
      const zip = await zipDirectory(noDockerfile);
      assert.equal((await createImage(base, 'quota-1', {}, zip)).build.buildState, 'FAILED');
      const uri = await upload(base, zip);
      const over = await api<{ code: string; quotaCode: string; serviceCode: string; resourceId: string }>(base, 'POST', `${V}/microvm-images`, { name: 'quota-2', baseImageArn: managedImageArn('busybox'), codeArtifact: { uri } });
      assert.deepEqual([over.status, over.type, over.body.code, over.body.quotaCode, over.body.resourceId], [402, 'ServiceQuotaExceededException', 'QUOTA_EXCEEDED', 'microvm-images', 'quota-2']);
      assert.equal((await api(base, 'GET', `${V}/microvm-images/quota-2`)).status, 404);
      assert.equal((await api(base, 'DELETE', `${V}/microvm-images/quota-1`)).status, 200);
    } finally {
      rmSync(noDockerfile, { recursive: true, force: true });
    }
  });

  test('clientToken: the same request returns the same VM; different parameters are a conflict and create nothing', async () => {
    const first = await run({ clientToken: 'tok-1', maximumDurationInSeconds: 600 });
    const again = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { maximumDurationInSeconds: 600, imageIdentifier: 'demo', clientToken: 'tok-1' });
    assert.equal(again.status, 200);
    assert.equal(again.body.microvmId, first.microvmId);
    const n = await count();
    const other = await api<{ code: string }>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'tok-1', maximumDurationInSeconds: 601 });
    assert.equal(other.status, 409);
    assert.equal(other.body.code, 'IDEMPOTENCY_CONFLICT');
    assert.equal(await count(), n);
    await waitState(base, first.microvmId, ['RUNNING']);
    await terminate(first.microvmId);
    // Still the same VM, even once it has ended.
    const late = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'tok-1', maximumDurationInSeconds: 600 });
    assert.equal(late.body.microvmId, first.microvmId);
    assert.equal(late.body.state, 'TERMINATED');
  });

  test('logs: followed live until the VM terminates; logging disabled keeps none', async () => {
    const vm = await run({});
    await waitState(base, vm.microvmId, ['RUNNING']);
    const res = await fetch(`${base}/cella/v1/microvms/${vm.microvmId}/logs?follow=true`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    const reading = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += Buffer.from(value).toString();
      }
    })();
    await guestGet(server, vm.microvmId, '/log/out-line');
    await guestGet(server, vm.microvmId, '/err/err-line');
    await eventually(() => text.includes('out-line\n') && text.includes('err-line\n'), 15_000, 'live log lines');
    await terminate(vm.microvmId);
    await reading;
    assert.match(text, /hook run .*\n/);
    assert.match(text, /hook terminate \n$/);

    const quiet = await run({ logging: { disabled: {} } });
    await waitState(base, quiet.microvmId, ['RUNNING']);
    await guestGet(server, quiet.microvmId, '/log/secret');
    const r = await api<{ code: string }>(base, 'GET', `/cella/v1/microvms/${quiet.microvmId}/logs`);
    assert.equal(r.status, 409);
    assert.equal(existsSync(path.join(dir, 'logs', 'vms', `${quiet.microvmId}.log`)), false);
    await terminate(quiet.microvmId);
  });

  test('ListMicrovms pages with maxResults and nextToken and filters by image', async () => {
    const all: string[] = [];
    let token: string | undefined;
    do {
      const r = await api<{ items: Array<{ microvmId: string }>; nextToken?: string }>(
        base,
        'GET',
        `${V}/microvms?maxResults=2${token ? `&nextToken=${encodeURIComponent(token)}` : ''}`,
      );
      assert.equal(r.status, 200);
      assert.ok(r.body.items.length <= 2);
      all.push(...r.body.items.map((i) => i.microvmId));
      token = r.body.nextToken;
    } while (token);
    assert.equal(all.length, await count());
    assert.equal(new Set(all).size, all.length);
    assert.equal((await api<{ items: unknown[] }>(base, 'GET', `${V}/microvms?imageIdentifier=nothing`)).body.items.length, 0);
  });

  test('tokens: minted for a live VM within the contract limits, refused for a terminated one', async () => {
    const vm = await run({});
    const ok = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${vm.microvmId}/auth-token`, {
      expirationInMinutes: 5,
      allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }],
    });
    assert.equal(ok.status, 200, ok.text);
    assert.ok((ok.body.authToken['X-aws-proxy-auth'] ?? '').length > 100);
    const shell = await api<{ code: string }>(base, 'POST', `${V}/microvms/${vm.microvmId}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(shell.status, 400, 'no SHELL_INGRESS connector');
    await waitState(base, vm.microvmId, ['RUNNING']);
    await terminate(vm.microvmId);
    const late = await api(base, 'POST', `${V}/microvms/${vm.microvmId}/auth-token`, { expirationInMinutes: 5, allowedPorts: [{ allPorts: {} }] });
    assert.equal(late.status, 409);
  });

  test('a run hook that fails terminates the VM with the reason', async () => {
    const { build, log } = await createImage(base, 'demo-runfail', { environmentVariables: { CELLA_DEMO_HOOKS: 'run:fail' }, hooks: ALL_HOOKS });
    assert.equal(build.buildState, 'SUCCESSFUL', log);
    const vm = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'arn:cella:lambda:local:000000000000:microvm-image:demo-runfail' });
    assert.equal(vm.status, 200, vm.text);
    const done = await waitState(base, vm.body.microvmId, ['TERMINATED']);
    assert.match(done.stateReason ?? '', /the run hook answered HTTP 500/);
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo-runfail`)).status, 200);
    assert.equal((await api(base, 'GET', `${V}/microvm-images/demo-runfail`)).status, 404);
  });

  test('every validation rule answers its error and changes nothing', async () => {
    const n = await count();
    const live = (await server.store.liveVms()).length;
    const cases: Array<[string, string, unknown, number, string, boolean?]> = [
      ['POST', `${V}/microvms`, '{"imageIdentifier": "demo",', 400, 'MALFORMED_JSON', true],
      ['POST', `${V}/microvms`, '[1,2]', 400, 'INVALID_ARGUMENT', true],
      ['POST', `${V}/microvms`, {}, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', surprise: 1 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: '' }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 0 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 28801 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 1.5 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 0, suspendedDurationSeconds: 0, autoResumeEnabled: true } }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 60, autoResumeEnabled: true } }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: -1, autoResumeEnabled: true } }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', runHookPayload: 'x'.repeat(4097) }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', runHookPayload: 'é'.repeat(2049) }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', logging: { disabled: {}, cloudWatch: {} } }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', executionRoleArn: 'role' }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', ingressNetworkConnectors: ['HTTP_INGRESS'] }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', egressNetworkConnectors: Array(11).fill('arn:aws:lambda:x:aws:network-connector:aws-network-connector:INTERNET_EGRESS') }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'x'.repeat(129) }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'nosuchimage' }, 404, 'NOT_FOUND'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', imageVersion: '9.9' }, 404, 'NOT_FOUND'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'arn:aws:s3:::bucket' }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, JSON.stringify({ imageIdentifier: 'demo', runHookPayload: 'x'.repeat(2 * 1024 * 1024) }), 413, 'PAYLOAD_TOO_LARGE', true],
      ['GET', `${V}/microvms?maxResults=0`, undefined, 400, 'INVALID_ARGUMENT'],
      ['GET', `${V}/microvms?maxResults=51`, undefined, 400, 'INVALID_ARGUMENT'],
      ['GET', `${V}/microvms?maxResults=abc`, undefined, 400, 'INVALID_ARGUMENT'],
      ['GET', `${V}/microvms?nextToken=garbage`, undefined, 400, 'INVALID_ARGUMENT'],
      ['GET', `${V}/microvms?color=blue`, undefined, 400, 'INVALID_ARGUMENT'],
      ['GET', `${V}/microvms/mvm-nope`, undefined, 404, 'NOT_FOUND'],
      ['POST', `${V}/microvms/mvm-nope/suspend`, undefined, 404, 'NOT_FOUND'],
      ['POST', `${V}/microvms/mvm-nope/resume`, undefined, 404, 'NOT_FOUND'],
      ['DELETE', `${V}/microvms/mvm-nope`, undefined, 404, 'NOT_FOUND'],
      ['POST', `${V}/microvms/mvm-nope/auth-token`, { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] }, 404, 'NOT_FOUND'],
      ['GET', `${V}/microvms/${'x'.repeat(300)}`, undefined, 400, 'INVALID_ARGUMENT'],
      ['PUT', `${V}/microvms`, undefined, 405, 'METHOD_NOT_ALLOWED'],
      ['GET', `${V}/nothing-here`, undefined, 404, 'UNKNOWN_OPERATION'],
    ];
    for (const [method, p, body, status, code, raw] of cases) {
      const r = await api<{ code: string; message: string }>(base, method, p, body, { raw: raw ?? false });
      assert.equal(r.status, status, `${method} ${p.slice(0, 80)} ${String(JSON.stringify(body)).slice(0, 120)}: ${r.text.slice(0, 200)}`);
      assert.equal(r.body.code, code, `${method} ${p.slice(0, 80)}`);
      assert.ok(r.body.message.length > 0);
      assert.ok(r.type, 'error type header');
    }
    const nf = await api<{ resourceId: string; resourceType: string }>(base, 'GET', `${V}/microvms/mvm-nope`);
    assert.deepEqual([nf.body.resourceId, nf.body.resourceType, nf.type], ['mvm-nope', 'Microvm', 'ResourceNotFoundException']);

    // Token requests on a live VM.
    const vm = await run({});
    const tokenCases: unknown[] = [
      { expirationInMinutes: 61, allowedPorts: [{ port: 8080 }] },
      { expirationInMinutes: 0, allowedPorts: [{ port: 8080 }] },
      { expirationInMinutes: 5, allowedPorts: [] },
      { expirationInMinutes: 5, allowedPorts: [{ port: 70000 }] },
      { expirationInMinutes: 5, allowedPorts: [{ port: 80, allPorts: {} }] },
      { expirationInMinutes: 5, allowedPorts: [{ range: { startPort: 10, endPort: 5 } }] },
      { allowedPorts: [{ port: 8080 }] },
    ];
    for (const body of tokenCases) {
      const r = await api<{ code: string }>(base, 'POST', `${V}/microvms/${vm.microvmId}/auth-token`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    await waitState(base, vm.microvmId, ['RUNNING']);
    const resumeRunning = await api<{ code: string }>(base, 'POST', `${V}/microvms/${vm.microvmId}/resume`);
    assert.equal(resumeRunning.status, 409);
    await terminate(vm.microvmId);
    assert.equal((await api(base, 'DELETE', `${V}/microvms/${vm.microvmId}`)).status, 200, 'terminate is idempotent');
    assert.equal((await api(base, 'POST', `${V}/microvms/${vm.microvmId}/suspend`)).status, 409);
    assert.equal(await count(), n + 1, 'only the one VM this test ran was created');
    assert.equal((await server.store.liveVms()).length, live);
  });

  test('each caller is throttled per operation with ThrottlingException and Retry-After', async () => {
    // SuspendMicrovm: the contract's 2/s × the default scale of 10 → a burst of 20.
    const replies = await Promise.all(Array.from({ length: 40 }, () => fetch(`${base}${V}/microvms/mvm-nope/suspend`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` } })));
    const statuses = replies.map((r) => r.status);
    const throttled = replies.filter((r) => r.status === 429);
    assert.ok(throttled.length > 0, `some of 40 concurrent calls were throttled: ${statuses.join(',')}`);
    assert.deepEqual([...new Set(statuses)].sort((x, y) => x - y), [404, 429]);
    const first = throttled[0] as Response;
    assert.equal(first.headers.get('x-amzn-errortype'), 'ThrottlingException');
    assert.ok(Number(first.headers.get('retry-after')) >= 1);
    assert.equal(((await first.json()) as { code: string }).code, 'THROTTLED');
    // Other operations have buckets of their own.
    assert.equal((await api(base, 'GET', `${V}/microvms/mvm-nope`)).status, 404);
  });

  test('the memory quota refuses a run beyond it with ServiceQuotaExceeded', async () => {
    const vms: MicrovmBody[] = [];
    const live = (await server.store.liveVms()).reduce((s, v) => s + v.memoryMiB, 0);
    for (let used = live; used + 256 <= QUOTA_MIB; used += 256) vms.push(await run({}));
    const over = await api<{ code: string; quotaCode: string }>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
    assert.equal(over.status, 402);
    assert.equal(over.type, 'ServiceQuotaExceededException');
    assert.equal(over.body.quotaCode, 'microvm-memory-mib');
    for (const v of vms) await waitState(base, v.microvmId, ['RUNNING']);
    for (const v of vms) await terminate(v.microvmId);
  });
});

describe('restart safety: kill -9 of cellad at any moment', { concurrency: false }, () => {
  test('regression (issue 11): a demo image whose build never succeeded is built again at the next start', { timeout: 10 * 60_000 }, async () => {
    const dir = tempDataDir('demo-again');
    const noDockerfile = mkdtempSync(path.join(tmpdir(), 'cella-no-dockerfile-'));
    writeFileSync(path.join(noDockerfile, 'README'), 'no Dockerfile here\n');
    let s: CellaServer | undefined;
    try {
      s = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, log: () => {} });
      // A zip with no Dockerfile: the build fails at once, as one cut short by a failed first start would have.
      const { build } = await createImage(s.url, 'demo', {}, await zipDirectory(noDockerfile));
      assert.equal(build.buildState, 'FAILED');
      await s.close();
      s = undefined;
      const again = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: true, log: () => {} });
      s = again;
      const img = await again.store.getImage('demo');
      assert.ok(img && img.state === 'CREATING', `the demo is building again (${img?.state})`);
      await eventually(async () => (await again.images.latest('demo', 'SUCCESSFUL')) !== undefined, 300_000, 'the demo to be built');
    } finally {
      if (s) await shutdown(s);
      rmSync(dir, { recursive: true, force: true });
      rmSync(noDockerfile, { recursive: true, force: true });
    }
  });

  test('running VMs are re-adopted with their RAM, suspended ones resume, deadlines re-arm, nothing is orphaned', async () => {
    const dir = tempDataDir('restart');
    const start = async (): Promise<{ url: string; kill: () => Promise<void> }> => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/cellad.ts'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          const line = out.split('\n')[0];
          if (out.includes('\n') && line) resolve((JSON.parse(line) as { url: string }).url);
        });
        child.once('exit', (code) => reject(new Error(`cellad exited with ${code}`)));
      });
      return {
        url,
        kill: async () => {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        },
      };
    };
    const slotOf = (id: string): number => {
      const db = new Database(path.join(dir, 'cella.db'), { readonly: true });
      try {
        return (db.prepare('SELECT slot FROM vms WHERE id = ?').get(id) as { slot: number }).slot;
      } finally {
        db.close();
      }
    };
    let server: CellaServer | undefined;
    try {
      const first = await start();
      let base = first.url;
      assert.equal((await createImage(base, 'demo')).build.buildState, 'SUCCESSFUL');
      const mk = async (body: Record<string, unknown>): Promise<string> => {
        const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
        assert.equal(r.status, 200, r.text);
        return r.body.microvmId;
      };
      const a = await mk({});
      const b = await mk({});
      const c = await mk({ maximumDurationInSeconds: 6 });
      for (const id of [a, b, c]) await waitState(base, id, ['RUNNING']);
      const addrA = networkForSlot(slotOf(a)).hostAddress;
      assert.equal(await httpGet({ host: addrA, port: 8080 }, '/inc'), '1');
      assert.equal((await api(base, 'POST', `${V}/microvms/${b}/suspend`)).status, 200);
      await waitState(base, b, ['SUSPENDED']);
      // One more caught mid-start: whatever it becomes must be true.
      const d = await mk({});
      await first.kill();

      const qemuPidA = qemusOf(dir).find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(a));
      assert.ok(qemuPidA, "A's QEMU outlived cellad");
      server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, log: () => {} });
      base = server.url;
      assert.equal((await waitState(base, a, ['RUNNING'])).state, 'RUNNING');
      assert.equal(server.engine.get(a)?.pid, qemuPidA, 'the same QEMU, re-adopted');
      assert.equal(await guestGet(server, a, '/inc'), '2', 'its RAM is intact');
      const dState = (await waitState(base, d, ['RUNNING', 'TERMINATED'])).state;
      const dRec = await server.store.getVm(d);
      if (dState === 'TERMINATED') assert.match(dRec?.stateReason ?? '', /cellad restarted/);
      assert.equal((await api<MicrovmBody>(base, 'GET', `${V}/microvms/${b}`)).body.state, 'SUSPENDED');
      assert.equal((await api(base, 'POST', `${V}/microvms/${b}/resume`)).status, 200);
      assert.equal(await guestGet(server, b, '/get'), '0');
      // C's maximum duration was stored and is re-armed.
      const cEnd = await waitState(base, c, ['TERMINATED'], 30_000);
      assert.match(cEnd.stateReason ?? '', /maximum duration of 6 s/);
      // Nothing orphaned: one QEMU per running VM (plus the warm clone this server keeps), no stray folders.
      const running = (await server.store.liveVms()).filter((v) => v.state === 'RUNNING');
      await eventually(() => qemusOf(dir).length <= running.length + 1, 10_000, 'stray QEMUs reclaimed');
      for (const v of running) assert.ok(server.engine.get(v.id));
      const dirs = readdirSync(path.join(dir, 'vms')).filter((n) => !n.startsWith('.warm-'));
      assert.deepEqual(dirs.sort(), (await server.store.liveVms()).map((v) => v.id).sort());
    } finally {
      if (server) {
        await shutdown(server);
      }
      for (const p of qemusOf(dir)) process.kill(p, 'SIGKILL');
      await eventually(() => qemusOf(dir).length === 0, 10_000, 'QEMUs gone');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
