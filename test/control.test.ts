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
import { ALL_HOOKS, API_KEY, V, api, createImage, guestGet, shutdown, upload, waitState, type MicrovmBody } from './control-helpers.js';
import { main } from '../src/cli/index.js';
import { Arns } from '../src/contract/index.js';
import { alive, eventually, getAt, processesWith, tempDataDir } from './helpers.js';

/** The QEMUs of VMs under `dataDir` (their command lines name their folders in vms/). */
const qemusOf = (dataDir: string): number[] => processesWith(path.join(dataDir, 'vms/'));

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

  before(async () => {
    dir = tempDataDir('control');
    server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, imageQuotas: { images: 2 }, log: () => {} });
    base = server.url;
    const { build, log } = await createImage(base, 'demo', { hooks: ALL_HOOKS });
    assert.equal(build.buildState, 'SUCCESSFUL', log);
  });

  after(async () => {
    await shutdown(server);
    assert.deepEqual(qemusOf(dir), [], 'no QEMU left');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the first start generates an API key, shown once, that opens the API; anything else is refused', { timeout: 5 * 60_000 }, async () => {
    assert.match(server.newApiKey ?? '', /^cella_/);
    const generated = server.newApiKey as string;
    assert.equal((await api(base, 'GET', `${V}/microvms`, undefined, { key: generated })).status, 200);
    const none = await api(base, 'GET', `${V}/microvms`, undefined, { key: null });
    assert.equal(none.status, 401);
    assert.equal((none.body as { code: string }).code, 'UNAUTHENTICATED');
    assert.equal((await api(base, 'GET', `${V}/microvms`, undefined, { key: 'wrong' })).status, 401);
    assert.equal((await api(base, 'GET', '/openapi.json', undefined, { key: null })).status, 401);
  });

  test('/openapi.json describes every operation from the schemas that validate', { timeout: 5 * 60_000 }, async () => {
    const r = await api<{
      paths: Record<
        string,
        Record<string, { operationId: string; requestBody?: { content: Record<string, { schema: { properties: Record<string, { minimum?: number }> } }> } }>
      >;
    }>(base, 'GET', '/openapi.json');
    assert.equal(r.status, 200);
    const ops = Object.values(r.body.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
    for (const op of ['RunMicrovm', 'GetMicrovm', 'ListMicrovms', 'SuspendMicrovm', 'ResumeMicrovm', 'TerminateMicrovm', 'CreateMicrovmAuthToken']) {
      assert.ok(ops.includes(op), op);
    }
    const runBody = r.body.paths[`${V}/microvms`]?.post?.requestBody?.content['application/json']?.schema;
    assert.equal(runBody?.properties.maximumDurationInSeconds?.minimum, 1);
  });

  test('run → RUNNING (run hook with the payload) → idle suspend → resume with RAM and disk kept → terminate', { timeout: 5 * 60_000 }, async () => {
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
    const u = await api<{
      runningSeconds: number;
      vcpuSeconds: number;
      snapshotBytesWritten: number;
      snapshotBytesRead: number;
      snapshotStorageGibHours: number;
    }>(base, 'GET', `/cella/v1/microvms/${vm.microvmId}/usage`);
    assert.ok(u.body.runningSeconds > 0 && u.body.vcpuSeconds > 0);
    assert.ok(u.body.snapshotBytesWritten > 0);
    assert.equal(u.body.snapshotBytesRead, u.body.snapshotBytesWritten);
    assert.ok(u.body.snapshotStorageGibHours > 0);
    const total = await api<{ total: { runningSeconds: number } }>(base, 'GET', '/cella/v1/usage');
    assert.ok(total.body.total.runningSeconds >= u.body.runningSeconds);
  });

  test(
    'explicit suspend and resume; a refused suspend hook keeps it RUNNING, a failing resume hook SUSPENDED, both healthy (no stateReason)',
    { timeout: 5 * 60_000 },
    async () => {
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
    },
  );

  test("the README's run-microvm example runs as written with cella run in front", { timeout: 5 * 60_000 }, async () => {
    const readme = readFileSync(path.join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const block = /# aws lambda-microvms run-microvm \\\n([\s\S]*?)\n```/.exec(readme)?.[1];
    assert.ok(block, 'the README shows the example');
    // The shell's job: joined lines, words, single quotes.
    const argv = [...block.replace(/\\\n/g, ' ').matchAll(/'([^']*)'|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string);
    assert.deepEqual(argv.slice(0, 3), ['node', 'bin/cella.js', 'run']);
    let out = '';
    const io: Parameters<typeof main>[1] = {
      out: (t) => (out += typeof t === 'string' ? t : Buffer.from(t).toString()),
      err: () => {},
      env: { CELLA_URL: base, CELLA_API_KEY: API_KEY },
    };
    assert.equal(await main([...argv.slice(2), '--json'], io), 0, out);
    const vm = JSON.parse(out) as MicrovmBody & { idlePolicy: unknown; maximumDurationInSeconds: number; ingressNetworkConnectors: string[] };
    assert.equal(vm.state, 'RUNNING');
    assert.deepEqual(vm.idlePolicy, { maxIdleDurationSeconds: 300, suspendedDurationSeconds: 3600, autoResumeEnabled: true });
    assert.equal(vm.maximumDurationInSeconds, 3600);
    assert.deepEqual(
      vm.ingressNetworkConnectors.map((a) => a.split(':').pop()),
      ['HTTP_INGRESS'],
    );
    await terminate(vm.microvmId);
  });

  test('the image quota (lowered to 2 for this server) refuses a third image with ServiceQuotaExceeded and creates nothing', { timeout: 60_000 }, async () => {
    const noDockerfile = mkdtempSync(path.join(tmpdir(), 'cella-quota-'));
    writeFileSync(path.join(noDockerfile, 'README'), 'no Dockerfile: the build fails at once, without a VM\n');
    try {
      const zip = await zipDirectory(noDockerfile);
      assert.equal((await createImage(base, 'quota-1', {}, zip)).build.buildState, 'FAILED');
      const uri = await upload(base, zip);
      const over = await api<{ code: string; quotaCode: string; serviceCode: string; resourceId: string }>(base, 'POST', `${V}/microvm-images`, {
        name: 'quota-2',
        baseImageArn: new Arns().managedImage('busybox'),
        codeArtifact: { uri },
      });
      assert.deepEqual(
        [over.status, over.type, over.body.code, over.body.quotaCode, over.body.resourceId],
        [402, 'ServiceQuotaExceededException', 'QUOTA_EXCEEDED', 'microvm-images', 'quota-2'],
      );
      assert.equal((await api(base, 'GET', `${V}/microvm-images/quota-2`)).status, 404);
      assert.equal((await api(base, 'DELETE', `${V}/microvm-images/quota-1`)).status, 200);
    } finally {
      rmSync(noDockerfile, { recursive: true, force: true });
    }
  });

  test('logs: followed live until the VM terminates; logging disabled keeps none', { timeout: 5 * 60_000 }, async () => {
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

  test('a run hook that fails terminates the VM with the reason', { timeout: 5 * 60_000 }, async () => {
    const { build, log } = await createImage(base, 'demo-runfail', { environmentVariables: { CELLA_DEMO_HOOKS: 'run:fail' }, hooks: ALL_HOOKS });
    assert.equal(build.buildState, 'SUCCESSFUL', log);
    const vm = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'arn:aws:lambda:us-east-1:000000000000:microvm-image:demo-runfail' });
    assert.equal(vm.status, 200, vm.text);
    const done = await waitState(base, vm.body.microvmId, ['TERMINATED']);
    assert.match(done.stateReason ?? '', /the run hook answered HTTP 500/);
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo-runfail`)).status, 200);
    assert.equal((await api(base, 'GET', `${V}/microvm-images/demo-runfail`)).status, 404);
  });
});

/** cellad in a child process on `dir` (test/fixtures/cellad.ts), to be killed with SIGKILL. */
async function startCellad(dir: string, env: NodeJS.ProcessEnv = {}): Promise<{ url: string; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/cellad.ts'), dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
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
}

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

  test('a managed image whose template changed is built again as a new version; one made by someone else is left alone', { timeout: 10 * 60_000 }, async () => {
    const dir = tempDataDir('template-revision');
    const start = (): Promise<CellaServer> => startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: true, log: () => {} });
    /** Says that demo's version `version` was made with description `text` (an older cellad, or a user). */
    const madeAs = (version: string, text: string): void => {
      const db = new Database(path.join(dir, 'cella.db'));
      db.prepare("UPDATE image_versions SET request = json_set(request, '$.description', ?) WHERE image_name = 'demo' AND version = ?").run(text, version);
      db.close();
    };
    let s: CellaServer | undefined;
    try {
      s = await start();
      const first = s;
      await eventually(async () => (await first.images.latest('demo', 'SUCCESSFUL')) !== undefined, 300_000, 'the demo to be built');
      const r = await api<MicrovmBody>(first.url, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
      assert.equal(r.status, 200, r.text);
      const id = r.body.microvmId;
      await waitState(first.url, id, ['RUNNING']);
      await s.close();
      s = undefined;
      // An older cellad's template: the next start builds version 2.0, and 1.0 serves meanwhile.
      madeAs('1.0', 'made by cellad from its template, revision 0000000000000000');
      const second = await start();
      s = second;
      assert.deepEqual((await second.store.listBuilds('demo')).map((b) => b.version).sort(), ['1.0', '2.0'], 'version 2.0 is being built');
      assert.equal((await second.images.latest('demo', 'SUCCESSFUL'))?.version, '1.0', '1.0 serves until 2.0 is built');
      await eventually(async () => (await second.images.latest('demo', 'SUCCESSFUL'))?.version === '2.0', 300_000, 'version 2.0 to be built');
      const v2 = await second.images.latest('demo', 'SUCCESSFUL');
      assert.match(v2?.request.description ?? '', /^made by cellad from its template, revision [0-9a-f]{16}$/);
      assert.equal(
        (await api<{ state: string; imageVersion?: string }>(second.url, 'GET', `${V}/microvms/${id}`)).body.state,
        'RUNNING',
        'the VM on 1.0 runs on',
      );
      const run2 = await api<MicrovmBody>(second.url, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
      assert.equal(run2.status, 200, run2.text);
      await s.close();
      s = undefined;
      // The same template, then a version a user made: no build either time.
      for (const step of ['unchanged', 'a user version']) {
        if (step === 'a user version') madeAs('2.0', 'my own demo');
        const again = await start();
        s = again;
        assert.deepEqual((await again.store.listBuilds('demo')).map((b) => b.version).sort(), ['1.0', '2.0'], `no new build (${step})`);
        // The last start also ends the two VMs (a close keeps them for the next start): nothing outlives the test.
        if (step === 'a user version') await shutdown(again);
        else await again.close();
        s = undefined;
      }
    } finally {
      if (s) await shutdown(s);
      for (const p of qemusOf(dir)) process.kill(p, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Deadlines re-armed after a restart, and recovery of every state, without VMs: test/control-plane/lifecycle.test.ts.
  test('running VMs are re-adopted with their RAM, suspended ones resume, nothing is orphaned', { timeout: 5 * 60_000 }, async () => {
    const dir = tempDataDir('restart');
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
      const first = await startCellad(dir);
      let base = first.url;
      assert.equal((await createImage(base, 'demo')).build.buildState, 'SUCCESSFUL');
      const mk = async (body: Record<string, unknown>): Promise<string> => {
        const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
        assert.equal(r.status, 200, r.text);
        return r.body.microvmId;
      };
      const a = await mk({});
      const b = await mk({});
      for (const id of [a, b]) await waitState(base, id, ['RUNNING']);
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

  test("a suspended VM's standby QEMU (ADR 0011) is made again at a restart; terminate ends one", { timeout: 5 * 60_000 }, async () => {
    const dir = tempDataDir('standby-restart');
    /** The QEMUs of VM `id` (their command lines name its folder). */
    const qemusOfVm = (id: string): number[] => qemusOf(dir).filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`/vms/${id}/`));
    let server: CellaServer | undefined;
    try {
      // No resume window: the suspend frees the VM's QEMU at once, and the server spawns its standby.
      const first = await startCellad(dir, { CELLA_RESUME_WINDOW: '0' });
      assert.equal((await createImage(first.url, 'demo')).build.buildState, 'SUCCESSFUL');
      const r = await api<MicrovmBody>(first.url, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
      assert.equal(r.status, 200, r.text);
      const id = r.body.microvmId;
      await waitState(first.url, id, ['RUNNING']);
      const db = new Database(path.join(dir, 'cella.db'), { readonly: true });
      const slot = (db.prepare('SELECT slot FROM vms WHERE id = ?').get(id) as { slot: number }).slot;
      db.close();
      assert.equal(await httpGet({ host: networkForSlot(slot).hostAddress, port: 8080 }, '/inc'), '1');
      const ran = qemusOfVm(id);
      assert.equal(ran.length, 1);
      assert.equal((await api(first.url, 'POST', `${V}/microvms/${id}/suspend`)).status, 200);
      await waitState(first.url, id, ['SUSPENDED']);
      await eventually(() => qemusOfVm(id).length === 1 && qemusOfVm(id)[0] !== ran[0], 60_000, 'a standby QEMU for the suspended VM');
      const [standby] = qemusOfVm(id);
      await first.kill();
      assert.ok(alive(standby as number), 'the standby outlived cellad');

      server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, minIdleSeconds: 1, resumeWindowSeconds: 0, log: () => {} });
      assert.ok(!qemusOfVm(id).includes(standby as number), "the restart reclaimed the dead cellad's standby");
      // The VM suspended last gets a standby from the new server, which its resume takes.
      await eventually(() => qemusOfVm(id).length === 1, 60_000, 'a standby QEMU made again after the restart');
      const [again] = qemusOfVm(id);
      assert.notEqual(again, standby);
      assert.equal((await api(server.url, 'POST', `${V}/microvms/${id}/resume`)).status, 200);
      assert.equal(await guestGet(server, id, '/get'), '1', 'the resume restored its RAM from the checkpoint');
      assert.deepEqual(qemusOfVm(id), [again], 'the resume took the standby');
      // This server makes standbys too (its default); terminating the VM ends its standby.
      assert.equal((await api(server.url, 'POST', `${V}/microvms/${id}/suspend`)).status, 200);
      await waitState(server.url, id, ['SUSPENDED']);
      await eventually(() => qemusOfVm(id).length === 1, 60_000, 'a standby QEMU from the new server');
      assert.equal((await api(server.url, 'DELETE', `${V}/microvms/${id}`)).status, 200);
      await waitState(server.url, id, ['TERMINATED']);
      await eventually(() => qemusOfVm(id).length === 0, 10_000, 'the standby ended with its VM');
    } finally {
      if (server) await shutdown(server);
      for (const p of qemusOf(dir)) process.kill(p, 'SIGKILL');
      await eventually(() => qemusOf(dir).length === 0, 10_000, 'QEMUs gone');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
