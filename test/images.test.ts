/**
 * Images from code artifacts against a real cellad: a zip with a Dockerfile
 * is built in a builder VM, snapshotted after its ready hook, run, reached
 * through its endpoint, suspended when idle and auto-resumed. Every bad
 * artifact ends in its build stateReason with the log saying why.
 */
import { Arns } from '../src/contract/index.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { zipDirectory } from '../src/archive/index.js';
import { main } from '../src/cli/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { loadGuestArtifacts, baseTree } from '../src/setup/index.js';
import { API_KEY, V, api, createImage, demoArtifact, endpointRequest, shutdown, upload, waitBuild, waitState, type MicrovmBody } from './control-helpers.js';
import { rawZip, type RawEntry } from './fixtures/zip-raw.js';
import { SITE_A, SITE_PORT, startFakeInternet } from './fixtures/fake-internet.js';
import { PY_APP, PY_DOCKERFILE } from './fixtures/pyapp.js';
import { MEDIA, digestOf, gzip, pushImage, startRegistry } from './fixtures/registry.js';
import { getAt, tempDataDir } from './helpers.js';

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

describe('images from a zip with a Dockerfile', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let base: string;
  let ca: Buffer;
  let s3: S3rver;
  const g = loadGuestArtifacts();

  /** A zip of `files` (name → content). */
  const zipOf = async (files: Record<string, string | Buffer>): Promise<Buffer> => {
    const d = path.join(dir, `ctx-${Math.random().toString(36).slice(2)}`);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(d, name)), { recursive: true });
      // The demo binary must stay executable inside the zip, as a real app's would.
      writeFileSync(path.join(d, name), content, { mode: name === 'cella-demo' ? 0o755 : 0o644 });
    }
    const zip = await zipDirectory(d);
    rmSync(d, { recursive: true, force: true });
    return zip;
  };
  const demoFiles = (dockerfile: string): Record<string, string | Buffer> => ({ Dockerfile: dockerfile, 'cella-demo': readFileSync(g.demoApp) });

  const endpoint = (id: string, p: string, tokenValue: string): Promise<{ status: number; body: string }> =>
    endpointRequest(server, ca, id, p, { 'x-aws-proxy-auth': tokenValue });

  const run = async (body: Record<string, unknown>): Promise<string> => {
    const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, body);
    assert.equal(r.status, 200, r.text);
    await waitState(base, r.body.microvmId, ['RUNNING']);
    return r.body.microvmId;
  };
  const terminate = async (id: string): Promise<void> => {
    assert.equal((await api(base, 'DELETE', `${V}/microvms/${id}`)).status, 200);
    await waitState(base, id, ['TERMINATED']);
  };

  before(async () => {
    dir = tempDataDir('images');
    // An S3-compatible endpoint for s3:// artifacts, with s3rver's built-in account.
    mkdirSync(path.join(dir, 's3'), { recursive: true });
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: path.join(dir, 's3'), configureBuckets: [{ name: 'code' }] });
    const s3Endpoint = `http://127.0.0.1:${(await s3.run()).port}`;
    const keys = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    // s3rver cannot read the SDK's default streaming checksums, so the upload sends none.
    const client = new S3Client({
      endpoint: s3Endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: keys,
      requestChecksumCalculation: 'WHEN_REQUIRED',
    });
    await client.send(new PutObjectCommand({ Bucket: 'code', Key: 'apps/demo.zip', Body: await demoArtifact() }));
    client.destroy();
    server = await startServer({
      dataDir: dir,
      port: 0,
      proxyPort: 0,
      apiKey: API_KEY,
      minIdleSeconds: 1,
      resumeWindowSeconds: 0,
      s3: { endpoint: s3Endpoint, region: 'us-east-1', ...keys },
      log: () => {},
    });
    base = server.url;
    ca = readFileSync(server.caFile as string);
  });

  after(async () => {
    await shutdown(server);
    await s3.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a Python app: zip → build → run → HTTPS answer; state kept across an idle suspend and auto-resume', async () => {
    const zip = await zipOf({ Dockerfile: PY_DOCKERFILE, 'app.py': PY_APP });
    const { build, log, version } = await createImage(
      base,
      'pyapp',
      {
        baseImageArn: ARNS.managedImage('debian-12-python'),
        resources: [{ minimumMemoryInMiB: 512 }],
        hooks: { port: 8080, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 120 } },
      },
      zip,
    );
    assert.equal(build.buildState, 'SUCCESSFUL', log);
    assert.equal(version, '1.0');
    // The log tells the story step by step: every Dockerfile line, the RUN output, the ready hook.
    assert.match(log, /Step 1\/10 : FROM debian-12-python/);
    assert.match(log, /Step 4\/10 : WORKDIR \/app/);
    assert.match(log, /ready hook answered 200/);
    assert.match(log, /app listening on 8080/);
    const sizes = build.snapshotBuild ?? {};
    assert.ok(
      (sizes.memorySnapshotSizeInBytes ?? 0) > 0 && (sizes.codeInstallSizeInBytes ?? 0) > 0 && (sizes.diskSnapshotSizeInBytes ?? 0) > 0,
      JSON.stringify(sizes),
    );

    const id = await run({ imageIdentifier: 'pyapp', idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 600, autoResumeEnabled: true } });
    const tok = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/auth-token`, {
      expirationInMinutes: 5,
      allowedPorts: [{ port: 8080 }],
    });
    const t = tok.body.authToken['X-aws-proxy-auth'] as string;
    assert.equal((await endpoint(id, '/inc', t)).status, 200);
    const second = JSON.parse((await endpoint(id, '/inc', t)).body) as Record<string, unknown>;
    assert.deepEqual(second, { count: 2, disk: '2', uid: 1000, built: 'built by root in /app', greeting: 'hello', cwd: '/app' });
    await waitState(base, id, ['SUSPENDED'], 120_000);
    // The next request resumes it: RAM (count) and disk (/data/count) as they were.
    const resumed = await endpoint(id, '/', t);
    assert.equal(resumed.status, 200, resumed.body);
    assert.deepEqual(JSON.parse(resumed.body), second);
    assert.equal((await api<MicrovmBody>(base, 'GET', `${V}/microvms/${id}`)).body.state, 'RUNNING');
    await terminate(id);
  });

  test('versions: update builds 2.0 from the cache, runs take the latest ACTIVE one, pins and deactivation are honoured', async () => {
    const first = await createImage(base, 'demo');
    assert.equal(first.build.buildState, 'SUCCESSFUL', first.log);
    assert.match(first.log, /COPY cella-demo \/usr\/bin\/cella-demo\n +[\d.]+ {2}---> done/);
    const uri = await upload(base, await demoArtifact());
    const upd = await api<{ imageVersion: string; buildId: string; state: string }>(base, 'PUT', `${V}/microvm-images/demo`, {
      baseImageArn: ARNS.managedImage('busybox'),
      codeArtifact: { uri },
      resources: [{ minimumMemoryInMiB: 256 }],
      environmentVariables: { VERSION_MARK: 'two' },
    });
    assert.equal(upd.status, 200, upd.text);
    assert.equal(upd.body.imageVersion, '2.0');
    assert.equal(upd.body.state, 'UPDATING');
    assert.equal((await waitBuild(base, 'demo', '2.0', upd.body.buildId)).buildState, 'SUCCESSFUL');
    const log2 = (await api(base, 'GET', `/cella/v1/microvm-images/demo/versions/2.0/builds/${upd.body.buildId}/logs`)).text;
    // The same Dockerfile and files: the COPY layer comes from the cache.
    assert.match(log2, /COPY cella-demo \/usr\/bin\/cella-demo\n +[\d.]+ {2}---> using cache/);
    assert.doesNotMatch(log2, /starting a builder VM/);
    const img = await api<Record<string, unknown>>(base, 'GET', `${V}/microvm-images/arn:aws:lambda:us-east-1:000000000000:microvm-image:demo`);
    assert.equal(img.body.state, 'UPDATED');
    const versions = await api<{ items: { imageVersion: string; state: string; status: string }[] }>(base, 'GET', `${V}/microvm-images/demo/versions`);
    assert.deepEqual(
      versions.body.items.map((v) => [v.imageVersion, v.state, v.status]),
      [
        ['1.0', 'SUCCESSFUL', 'ACTIVE'],
        ['2.0', 'SUCCESSFUL', 'ACTIVE'],
      ],
    );
    const builds = await api<{ items: { buildId: string; buildState: string }[] }>(base, 'GET', `${V}/microvm-images/demo/versions/2.0/builds`);
    assert.deepEqual(
      builds.body.items.map((b) => b.buildId),
      [upd.body.buildId],
    );

    const latest = await run({ imageIdentifier: 'demo' });
    // The 256 MiB tier's guest is given its peak, 4x: 1 GiB (contract §3).
    const argv = readFileSync(`/proc/${server.engine.get(latest)?.pid}/cmdline`, 'utf8').split('\0');
    assert.equal(argv[argv.indexOf('-m') + 1], '1024M');
    assert.equal((await api<{ imageVersion: string }>(base, 'GET', `${V}/microvms/${latest}`)).body.imageVersion, '2.0');
    assert.match((await getAt(server.engine.get(latest)?.address(8080) as { host: string; port: number }, '/echo-env/VERSION_MARK')).body, /two/);
    // 2.0 INACTIVE: runs fall back to 1.0; pinning 2.0 is refused.
    assert.equal((await api(base, 'PATCH', `${V}/microvm-images/demo/versions/2.0`, { status: 'INACTIVE' })).status, 200);
    const older = await run({ imageIdentifier: 'demo' });
    assert.equal((await api<{ imageVersion: string }>(base, 'GET', `${V}/microvms/${older}`)).body.imageVersion, '1.0');
    const pinned = await api<{ code: string; message: string }>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', imageVersion: '2.0' });
    assert.equal(pinned.status, 404);
    assert.match(pinned.body.message, /No active version found/);
    // The image shows its latest versions: 2.0 is INACTIVE, so 1.0 is the active one.
    type Latest = { state: string; latestActiveImageVersion?: string; latestFailedImageVersion?: string };
    const shown = (await api<Latest>(base, 'GET', `${V}/microvm-images/demo`)).body;
    assert.deepEqual([shown.latestActiveImageVersion, shown.latestFailedImageVersion], ['1.0', undefined]);
    // A failed update (no Dockerfile: no VM needed) leaves the image UPDATE_FAILED, which the contract does not let run.
    const bad = await api<{ buildId: string }>(base, 'PUT', `${V}/microvm-images/demo`, {
      baseImageArn: ARNS.managedImage('busybox'),
      codeArtifact: { uri: await upload(base, await zipOf({ README: 'x' })) },
    });
    assert.equal((await waitBuild(base, 'demo', '3.0', bad.body.buildId)).buildState, 'FAILED');
    const failed = (await api<Latest>(base, 'GET', `${V}/microvm-images/demo`)).body;
    assert.deepEqual([failed.state, failed.latestActiveImageVersion, failed.latestFailedImageVersion], ['UPDATE_FAILED', '1.0', '3.0']);
    const refused = await api<{ code: string }>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
    assert.deepEqual([refused.status, refused.type, refused.body.code], [404, 'ResourceNotFoundException', 'NOT_FOUND']);
    let out = '';
    const io: Parameters<typeof main>[1] = {
      out: (t) => (out += typeof t === 'string' ? t : Buffer.from(t).toString()),
      err: () => {},
      env: { CELLA_URL: base, CELLA_API_KEY: API_KEY },
    };
    assert.equal(await main(['image', 'ls'], io), 0);
    assert.match(out, /^demo +UPDATE_FAILED +1\.0 +3\.0 /m, 'cella image ls shows both columns');
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo/versions/3.0`)).status, 200);
    // A version that live VMs use, and the last version, cannot be deleted.
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo/versions/1.0`)).status, 409);
    await terminate(older);
    await terminate(latest);
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo/versions/1.0`)).status, 200);
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo/versions/1.0`)).status, 200, 'idempotent');
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo/versions/2.0`)).status, 409, 'the last version');
    assert.equal((await api(base, 'PATCH', `${V}/microvm-images/demo/versions/2.0`, { status: 'ACTIVE' })).status, 200);
    const del = await api<{ state: string }>(base, 'DELETE', `${V}/microvm-images/demo`);
    assert.equal(del.status, 200);
    assert.equal(del.body.state, 'DELETED');
    assert.equal((await api(base, 'GET', `${V}/microvm-images/demo`)).status, 404);
    assert.equal((await api(base, 'DELETE', `${V}/microvm-images/demo`)).status, 200, 'idempotent');
  });

  test('each bad artifact fails its build with the contract reason, and the build log says why', async () => {
    // A Dockerfile beside one entry the safe unzip must refuse.
    const unzipRefuses = (name: string, entry: RawEntry, log: RegExp) => ({
      name,
      zip: rawZip([{ name: 'Dockerfile', data: Buffer.from('FROM busybox\n') }, entry]),
      reason: 'ARCHIVE_INVALID',
      log,
    });
    const cases: { name: string; zip: Buffer; extra?: Record<string, unknown>; reason: string; log: RegExp }[] = [
      {
        name: 'no-dockerfile',
        zip: await zipOf({ 'app/Dockerfile': 'FROM busybox\n', 'app/x': 'x' }),
        reason: 'ARCHIVE_DOCKERFILE_NOT_FOUND',
        log: /found app\/Dockerfile/,
      },
      unzipRefuses('escape', { name: '../../evil', data: Buffer.from('x') }, /evil/),
      unzipRefuses('absolute', { name: '/etc/evil', data: Buffer.from('x') }, /evil/),
      unzipRefuses('symlink-out', { name: 'passwd', symlink: '/etc/passwd' }, /passwd/),
      unzipRefuses('bomb', { name: 'zeros', data: Buffer.alloc(64 * 1024 * 1024) }, /ratio|compress/i),
      { name: 'not-a-zip', zip: Buffer.from('this is not a zip file at all'), reason: 'ARCHIVE_INVALID', log: /zip/i },
      {
        name: 'failing-run',
        zip: await zipOf({ Dockerfile: 'FROM busybox\nRUN echo about-to-fail && exit 7\nCMD ["/bin/true"]\n' }),
        reason: 'CONTAINER_BUILD_FAILED',
        log: /about-to-fail[\s\S]*line 2: RUN echo about-to-fail && exit 7 exited with code 7/,
      },
      {
        name: 'unsupported',
        zip: await zipOf({ Dockerfile: 'FROM busybox\nHEALTHCHECK CMD true\nCMD ["/bin/true"]\n' }),
        reason: 'CONTAINER_BUILD_FAILED',
        log: /line 2: HEALTHCHECK/,
      },
      {
        name: 'missing-source',
        zip: await zipOf({ Dockerfile: 'FROM busybox\nCOPY nothere /x\nCMD ["/bin/true"]\n' }),
        reason: 'CONTAINER_BUILD_FAILED',
        log: /line 2: nothere does not exist/,
      },
      {
        name: 'unknown-base',
        zip: await zipOf({ Dockerfile: 'FROM 127.0.0.1:1/nothing/here:1\nCMD ["/bin/true"]\n' }),
        reason: 'CONTAINER_BUILD_FAILED',
        log: /line 1: FROM 127\.0\.0\.1:1\/nothing\/here:1/,
      },
      {
        name: 'ready-never',
        zip: await zipOf(demoFiles('FROM busybox\nCOPY cella-demo /usr/bin/cella-demo\nCMD ["/usr/bin/cella-demo", "8080"]\n')),
        extra: {
          environmentVariables: { CELLA_DEMO_HOOKS: 'ready:busy' },
          hooks: { port: 8080, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 3 } },
        },
        reason: 'CONTAINER_BUILD_FAILED',
        log: /ready hook: HTTP 503 \(not ready yet\)[\s\S]*Ready hook invocation timed out after PT3S/,
      },
    ];
    for (const c of cases) {
      const { build, log } = await createImage(base, c.name, c.extra ?? {}, c.zip);
      assert.equal(build.buildState, 'FAILED', `${c.name}: ${log}`);
      assert.equal(build.stateReason, c.reason, `${c.name}: ${log}`);
      assert.match(log, c.log, c.name);
      assert.match(log, new RegExp(`build FAILED: ${c.reason}`), c.name);
      const img = await api<{ state: string; latestFailedImageVersion?: string }>(base, 'GET', `${V}/microvm-images/${c.name}`);
      assert.equal(img.body.state, 'CREATE_FAILED', c.name);
      const v = await api<{ state: string; stateReason: string }>(base, 'GET', `${V}/microvm-images/${c.name}/versions/1.0`);
      assert.deepEqual([v.body.state, v.body.stateReason], ['FAILED', c.reason], c.name);
      const r = await api(base, 'POST', `${V}/microvms`, { imageIdentifier: c.name });
      assert.equal(r.status, 404, c.name);
    }
    // Nothing escaped the build's folder.
    assert.throws(() => readFileSync(path.join(dir, 'evil')));
    assert.throws(() => readFileSync(path.join(dir, 'builds', 'evil')));
  });

  test('bad requests are refused with stable codes and change nothing', async () => {
    const uri = await upload(base, await demoArtifact());
    const ok = { name: 'valid', baseImageArn: ARNS.managedImage('busybox'), codeArtifact: { uri } };
    const before = (await api<{ items: unknown[] }>(base, 'GET', `${V}/microvm-images`)).body.items.length;
    const bad: [Record<string, unknown> | string, number, string][] = [
      ['{"name": "x",', 400, 'MALFORMED_JSON'],
      [{ ...ok, name: 'bad name!' }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, name: 'x'.repeat(65) }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, baseImageArn: ARNS.managedImage('no-such-base') }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, baseImageVersion: '7' }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, codeArtifact: { uri: 'http://example.com/app.zip' } }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, codeArtifact: {} }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, resources: [{ minimumMemoryInMiB: 300 }] }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, environmentVariables: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`V${i}`, 'x'])) }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, hooks: { port: 8080, microvmHooks: { run: 'ENABLED' } } }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, hooks: { port: 8080, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 3601 } } }, 400, 'INVALID_ARGUMENT'],
      [{ ...ok, surprise: true }, 400, 'INVALID_ARGUMENT'],
    ];
    for (const [body, status, code] of bad) {
      const r = await api<{ code: string }>(base, 'POST', `${V}/microvm-images`, body, { raw: typeof body === 'string' });
      assert.equal(r.status, status, JSON.stringify(body).slice(0, 200));
      assert.equal(r.body.code, code);
    }
    assert.equal((await api<{ items: unknown[] }>(base, 'GET', `${V}/microvm-images`)).body.items.length, before, 'nothing was created');
    // Idempotency: the same clientToken answers the same build; other parameters conflict.
    const a = await api<{ buildId: string }>(base, 'POST', `${V}/microvm-images`, { ...ok, clientToken: 'tok-1' });
    const b = await api<{ buildId: string }>(base, 'POST', `${V}/microvm-images`, { ...ok, clientToken: 'tok-1' });
    assert.equal(a.status, 201, a.text);
    assert.equal(b.body.buildId, a.body.buildId);
    assert.equal((await api(base, 'POST', `${V}/microvm-images`, { ...ok, description: 'other', clientToken: 'tok-1' })).status, 409);
    const dup = await api<{ code: string; message: string }>(base, 'POST', `${V}/microvm-images`, ok);
    assert.equal(dup.status, 400);
    assert.match(dup.body.message, /already exists/);
    // An update while the first build runs is a conflict.
    assert.equal((await api(base, 'PUT', `${V}/microvm-images/valid`, { baseImageArn: ARNS.managedImage('busybox'), codeArtifact: { uri } })).status, 409);
    assert.equal((await waitBuild(base, 'valid', '1.0', a.body.buildId)).buildState, 'SUCCESSFUL');
    // Uploads: empty, and declared larger than the limit (refused before reading a byte).
    const empty = await fetch(`${base}/cella/v1/code-artifacts`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` }, body: new Uint8Array(0) });
    assert.equal(empty.status, 400);
    const huge = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${base}/cella/v1/code-artifacts`);
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          headers: { authorization: `Bearer ${API_KEY}`, 'content-length': String(600 * 1024 * 1024) },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write('PK');
    });
    assert.equal(huge, 413);
    // Managed bases are listed with their versions.
    const managed = await api<{ items: { imageArn: string }[] }>(base, 'GET', `${V}/managed-microvm-images`);
    for (const name of ['busybox', 'debian-12', 'debian-12-python'])
      assert.ok(
        managed.body.items.some((i) => i.imageArn === ARNS.managedImage(name)),
        name,
      );
    const mv = await api<{ items: { imageVersion: string; status: string }[] }>(
      base,
      'GET',
      `${V}/managed-microvm-images/${ARNS.managedImage('busybox')}/versions`,
    );
    assert.deepEqual(
      mv.body.items.map((i) => [i.imageVersion, i.status]),
      [['1', 'AVAILABLE']],
    );
  });

  test("RUN steps reach what the image's egress connectors allow, and nothing without them", async () => {
    const site = path.join(dir, 'site');
    mkdirSync(site, { recursive: true });
    writeFileSync(path.join(site, 'hello.txt'), 'hello from the internet\n');
    const internet = startFakeInternet(site);
    try {
      const fetch = `printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${SITE_A} ${SITE_PORT} | tail -n 1 > /var/cella-demo.txt && grep -q internet /var/cella-demo.txt`;
      const zip = await zipOf(demoFiles(`FROM busybox\nCOPY cella-demo /usr/bin/cella-demo\nRUN ${fetch}\nCMD ["/usr/bin/cella-demo", "8080"]\n`));
      // The contract's default egress (INTERNET_EGRESS) holds for builds too.
      const open = await createImage(base, 'egress-default', {}, zip);
      assert.equal(open.build.buildState, 'SUCCESSFUL', open.log);
      assert.match(open.log, /starting a builder VM \(egress: internet\)/);
      const id = await run({ imageIdentifier: 'egress-default' });
      assert.equal((await getAt(server.engine.get(id)?.address(8080) as { host: string; port: number }, '/read')).body.trim(), 'hello from the internet');
      await terminate(id);
      const closed = await createImage(base, 'egress-none', { egressNetworkConnectors: [] }, zip);
      assert.equal(closed.build.buildState, 'FAILED', closed.log);
      assert.equal(closed.build.stateReason, 'CONTAINER_BUILD_FAILED');
      assert.match(closed.log, /line 3: RUN printf .* exited with code 1/);
    } finally {
      internet.stop();
    }
  });

  test('code artifacts by s3:// URI from the configured endpoint; a missing key or bucket is the build reason', async () => {
    const s3Image = async (name: string, uri: string): Promise<{ build: { buildState: string; stateReason?: string }; log: string }> => {
      const r = await api<{ imageVersion: string; buildId: string }>(base, 'POST', `${V}/microvm-images`, {
        name,
        baseImageArn: ARNS.managedImage('busybox'),
        codeArtifact: { uri },
        resources: [{ minimumMemoryInMiB: 256 }],
      });
      assert.equal(r.status, 201, r.text); // CreateMicrovmImage is 201 in the contract's model
      const build = await waitBuild(base, name, r.body.imageVersion, r.body.buildId);
      const log = (await api(base, 'GET', `/cella/v1/microvm-images/${name}/versions/${r.body.imageVersion}/builds/${r.body.buildId}/logs`)).text;
      return { build, log };
    };
    const ok = await s3Image('from-s3', 's3://code/apps/demo.zip');
    assert.equal(ok.build.buildState, 'SUCCESSFUL', ok.log);
    const noKey = await s3Image('s3-no-key', 's3://code/apps/missing.zip');
    assert.deepEqual([noKey.build.buildState, noKey.build.stateReason], ['FAILED', 'S3_NO_SUCH_KEY'], noKey.log);
    const noBucket = await s3Image('s3-no-bucket', 's3://nothere/app.zip');
    assert.deepEqual([noBucket.build.buildState, noBucket.build.stateReason], ['FAILED', 'S3_NO_SUCH_BUCKET'], noBucket.log);
  });

  test('FROM an OCI image pulled from a registry', async () => {
    const registry = await startRegistry();
    try {
      const layerTar = execFileSync('tar', ['-C', baseTree(g, 'busybox'), '--owner=0', '--group=0', '-cf', '-', '.'], { maxBuffer: 64 * 1024 * 1024 });
      const layer = gzip(layerTar);
      await pushImage(registry.host, 'cella/busybox', '1', {
        config: {
          architecture: 'amd64',
          os: 'linux',
          config: { Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'FROM_OCI=yes'], Cmd: ['/bin/sh'] },
          rootfs: { type: 'layers', diff_ids: [digestOf(layerTar)] },
        },
        layers: [{ data: layer, mediaType: MEDIA.ociGzip }],
      });
      const zip = await zipOf(demoFiles(`FROM ${registry.host}/cella/busybox:1\nCOPY cella-demo /usr/bin/cella-demo\nCMD ["/usr/bin/cella-demo", "8080"]\n`));
      const { build, log } = await createImage(base, 'from-oci', {}, zip);
      assert.equal(build.buildState, 'SUCCESSFUL', log);
      assert.match(log, /pulling 127\.0\.0\.1:\d+\/cella\/busybox:1/);
      const id = await run({ imageIdentifier: 'from-oci' });
      const address = server.engine.get(id)?.address(8080) as { host: string; port: number };
      assert.match((await getAt(address, '/echo-env/FROM_OCI')).body, /yes/);
      await terminate(id);
    } finally {
      await registry.stop();
    }
  });
});
