import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, request } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BuildFailure, isCellaError } from '../src/contract/index.js';
import { parseReference, pullImage } from '../src/oci/index.js';
import {
  MEDIA,
  freePort,
  gzip,
  pushImage,
  pushManifest,
  startRegistry,
  startTokenServer,
  tarOf,
  zstd,
  type Registry,
  type TarEntry,
} from './fixtures/registry.js';

const made: string[] = [];
const tmp = (tag: string) => {
  const dir = mkdtempSync(`/tmp/cella-oci-${tag}-`);
  made.push(dir);
  return dir;
};
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** Every path under `root` with its type, mode, owner and content (or link target). */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const rel = path.relative(root, p);
      const st = lstatSync(p);
      const owner = `${st.uid}:${st.gid}`;
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      if (st.isSymbolicLink()) out[rel] = `symlink ${owner} -> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir ${mode} ${owner}`;
        walk(p);
      } else out[rel] = `file ${mode} ${owner} links=${st.nlink} ${JSON.stringify(readFileSync(p, 'utf8'))}`;
    }
  };
  walk(root);
  return out;
}

async function rejectsWith(p: Promise<unknown>, reason: string): Promise<BuildFailure> {
  const err = await p.then(
    () => assert.fail('expected the pull to fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof BuildFailure, `expected a BuildFailure, got ${String(err)}`);
  assert.equal(err.reason, reason);
  return err;
}

describe('parseReference', () => {
  test('follows Docker rules for registry, repository, tag and digest', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const cases: [string, ReturnType<typeof parseReference>][] = [
      ['alpine', { registry: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' }],
      ['docker.io/alpine:3.20', { registry: 'registry-1.docker.io', repository: 'library/alpine', tag: '3.20' }],
      ['bitnami/redis:7', { registry: 'registry-1.docker.io', repository: 'bitnami/redis', tag: '7' }],
      ['localhost:5000/x', { registry: 'localhost:5000', repository: 'x', tag: 'latest' }],
      ['localhost/x/y', { registry: 'localhost', repository: 'x/y', tag: 'latest' }],
      ['127.0.0.1:41234/a/b:v1', { registry: '127.0.0.1:41234', repository: 'a/b', tag: 'v1' }],
      ['ghcr.io/org/app@' + digest, { registry: 'ghcr.io', repository: 'org/app', digest }],
      ['ghcr.io/org/app:v2@' + digest, { registry: 'ghcr.io', repository: 'org/app', tag: 'v2', digest }],
    ];
    for (const [ref, want] of cases) assert.deepEqual(parseReference(ref), want, ref);
    for (const bad of ['', 'UPPER/case', 'a//b', 'x:', 'x@sha256:abc', 'ghcr.io/', 'x:bad tag', '-x']) {
      assert.throws(
        () => parseReference(bad),
        (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'),
        bad,
      );
    }
  });
});

const CONFIG = {
  architecture: 'amd64',
  os: 'linux',
  rootfs: { type: 'layers', diff_ids: [] },
  config: {
    Env: ['PATH=/usr/bin:/bin', 'GREETING=hello=world'],
    Entrypoint: ['/bin/run'],
    Cmd: ['--port', '8080'],
    WorkingDir: '/data',
    User: '1000:1000',
    ExposedPorts: { '8080/tcp': {}, '53/udp': {}, '9090': {} },
    Labels: { 'org.example.team': 'sandbox' },
  },
};

/** Three layers: files, a whiteout, an opaque directory, links, modes, a device. */
async function amd64Tars(salt: string): Promise<Buffer[]> {
  const lower: TarEntry[] = [
    { name: 'bin/', type: 'directory', mode: 0o755 },
    { name: 'bin/run', mode: 0o755, uid: 1000, gid: 1000, content: `#!/bin/sh\necho ${salt}\n` },
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/app.conf', mode: 0o644, content: 'port=8080\n' },
    { name: 'etc/app.link', type: 'link', linkname: 'etc/app.conf' },
    { name: 'etc/both.conf', mode: 0o644, content: 'both\n' },
    { name: 'etc/both.link', type: 'link', linkname: 'etc/both.conf' },
    { name: './old.txt', mode: 0o600, content: 'old' },
    { name: 'data/', type: 'directory', mode: 0o750 },
    { name: 'data/a', content: 'a' },
    { name: 'data/sub/', type: 'directory', mode: 0o755 },
    { name: 'data/sub/deep', content: 'deep' },
    { name: 'tool', type: 'symlink', linkname: 'bin/run' },
  ];
  const middle: TarEntry[] = [
    { name: '.wh.old.txt' },
    { name: 'data/', type: 'directory', mode: 0o750 },
    { name: 'data/b', content: 'b' },
    { name: 'data/sub/', type: 'directory', mode: 0o755 },
    { name: 'data/sub/new', content: 'new' },
    // After entries of its own layer on purpose: it hides only lower layers' content.
    { name: 'data/.wh..wh..opq' },
    { name: 'dev/', type: 'directory', mode: 0o755 },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  ];
  const upper: TarEntry[] = [
    { name: 'arch', content: 'amd64\n' },
    { name: 'etc/app.conf', mode: 0o640, content: 'port=9090\n' },
    { name: 'sbin/', type: 'directory', mode: 0o755 },
    { name: 'sbin/su', mode: 0o4755, content: 'su' },
  ];
  return [await tarOf(lower), await tarOf(middle), await tarOf(upper)];
}

/** The OCI encodings: gzip, zstd and plain tar. */
async function amd64Layers(salt: string) {
  const [lower, middle, upper] = await amd64Tars(salt);
  return [
    { data: gzip(lower!), mediaType: MEDIA.ociGzip },
    { data: zstd(middle!), mediaType: MEDIA.ociZstd },
    { data: upper!, mediaType: MEDIA.ociTar },
  ];
}

/** Docker's encodings: gzip and plain tar. */
async function dockerLayers(salt: string) {
  const [lower, middle, upper] = await amd64Tars(salt);
  return [
    { data: gzip(lower!), mediaType: MEDIA.dockerGzip },
    { data: gzip(middle!), mediaType: MEDIA.dockerGzip },
    { data: upper!, mediaType: MEDIA.dockerTar },
  ];
}

const expectedTree = (salt: string) => ({
  arch: 'file 0644 0:0 links=1 "amd64\\n"',
  bin: 'dir 0755 0:0',
  'bin/run': `file 0755 1000:1000 links=1 ${JSON.stringify(`#!/bin/sh\necho ${salt}\n`)}`,
  data: 'dir 0750 0:0',
  'data/b': 'file 0644 0:0 links=1 "b"',
  'data/sub': 'dir 0755 0:0',
  'data/sub/new': 'file 0644 0:0 links=1 "new"',
  dev: 'dir 0755 0:0',
  etc: 'dir 0755 0:0',
  // Replacing a file breaks its hardlink, as copy-up does in overlayfs.
  'etc/app.conf': 'file 0640 0:0 links=1 "port=9090\\n"',
  'etc/app.link': 'file 0644 0:0 links=1 "port=8080\\n"',
  'etc/both.conf': 'file 0644 0:0 links=2 "both\\n"',
  'etc/both.link': 'file 0644 0:0 links=2 "both\\n"',
  sbin: 'dir 0755 0:0',
  'sbin/su': 'file 4755 0:0 links=1 "su"',
  tool: 'symlink 0:0 -> bin/run',
});
const expectedBytes = (salt: string) => `#!/bin/sh\necho ${salt}\n`.length + 'port=8080\n'.length + 'both\n'.length + 3 + 1 + 4 + 1 + 3 + 6 + 10 + 2;

/** An OCI index with linux/arm64 (a different layer and config) and linux/amd64. */
async function pushMultiPlatform(host: string, repo: string, salt: string) {
  const amd64 = await pushImage(host, repo, 'amd64', { config: CONFIG, layers: await amd64Layers(salt) });
  const arm64 = await pushImage(host, repo, 'arm64', {
    config: { ...CONFIG, architecture: 'arm64', config: { Cmd: ['arm'] } },
    layers: [{ data: gzip(await tarOf([{ name: 'arch', content: 'arm64\n' }])), mediaType: MEDIA.ociGzip }],
  });
  const index = await pushManifest(host, repo, 'latest', MEDIA.ociIndex, {
    manifests: [
      { ...arm64, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { ...amd64, platform: { os: 'linux', architecture: 'amd64' } },
    ],
  });
  return { index, amd64 };
}

/** Where distribution keeps a blob's bytes. */
const blobData = (reg: Registry, digest: string) => {
  const hex = digest.slice('sha256:'.length);
  return path.join(reg.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
};

describe('pullImage from an open registry', () => {
  let reg: Registry;
  before(async () => {
    reg = await startRegistry();
  });
  after(async () => {
    await reg?.stop();
  });

  test('pulls the linux/amd64 image of an index: layers in order, whiteouts, opaque directories, links and modes', async () => {
    const { index } = await pushMultiPlatform(reg.host, 'cella/multi', 'one');
    const dest = tmp('tree');
    const lines: string[] = [];
    const result = await pullImage(`${reg.host}/cella/multi`, dest, { log: (l) => lines.push(l) });
    assert.deepEqual(snapshot(dest), expectedTree('one'));
    assert.deepEqual(result, {
      digest: index.digest,
      layers: 3,
      bytes: expectedBytes('one'),
      config: {
        env: { PATH: '/usr/bin:/bin', GREETING: 'hello=world' },
        entrypoint: ['/bin/run'],
        cmd: ['--port', '8080'],
        workingDir: '/data',
        user: '1000:1000',
        exposedPorts: [8080, 9090],
        labels: { 'org.example.team': 'sandbox' },
      },
    });
    assert.ok(lines.length >= 3);
  });

  test('pulls the platform asked for, by digest', async () => {
    const { index } = await pushMultiPlatform(reg.host, 'cella/arm', 'arm');
    const dest = tmp('arm');
    const result = await pullImage(`${reg.host}/cella/arm@${index.digest}`, dest, { platform: 'linux/arm64' });
    assert.deepEqual(snapshot(dest), { arch: 'file 0644 0:0 links=1 "arm64\\n"' });
    assert.deepEqual(result.config.cmd, ['arm']);
    assert.equal(result.digest, index.digest);
  });

  test('an index without the platform fails, naming the platforms offered', async () => {
    await pushMultiPlatform(reg.host, 'cella/noplat', 'noplat');
    const err = await rejectsWith(pullImage(`${reg.host}/cella/noplat`, tmp('noplat'), { platform: 'linux/s390x' }), 'CONTAINER_BUILD_FAILED');
    assert.match(err.message, /linux\/arm64\/v8, linux\/amd64/);
  });

  test('a missing tag fails with the 404 named', async () => {
    await pushMultiPlatform(reg.host, 'cella/tags', 'tags');
    const err = await rejectsWith(pullImage(`${reg.host}/cella/tags:nope`, tmp('missing')), 'CONTAINER_BUILD_FAILED');
    assert.match(err.message, /cella\/tags:nope.*HTTP 404/);
  });

  test('reuses verified blobs from the cache and fetches again one that no longer matches its digest', async () => {
    const { amd64 } = await pushMultiPlatform(reg.host, 'cella/cache', 'cache');
    const manifest = (await (
      await fetch(`http://${reg.host}/v2/cella/cache/manifests/${amd64.digest}`, { headers: { accept: MEDIA.ociManifest } })
    ).json()) as { layers: { digest: string }[] };
    const [l1, l2, l3] = manifest.layers.map((l) => l.digest);
    const cacheDir = tmp('cache');
    await pullImage(`${reg.host}/cella/cache`, tmp('cache-first'), { cacheDir });
    for (const d of [l1, l2, l3]) assert.ok(existsSync(path.join(cacheDir, 'sha256', d!.slice(7))), d);

    // The registry can no longer serve layer 2, so only the cache can; layer 1's cached copy is spoiled.
    rmSync(blobData(reg, l2!));
    writeFileSync(path.join(cacheDir, 'sha256', l1!.slice(7)), 'spoiled');
    const dest = tmp('cache-second');
    await pullImage(`${reg.host}/cella/cache`, dest, { cacheDir });
    assert.deepEqual(snapshot(dest), expectedTree('cache'));
  });

  test('a blob whose bytes do not match its digest is refused before it is unpacked', async () => {
    const layer = await tarOf([{ name: 'tampered', content: 'x' }]);
    const pushed = await pushImage(reg.host, 'cella/tamper', 'latest', { config: CONFIG, layers: [{ data: layer, mediaType: MEDIA.ociTar }] });
    const manifest = (await (
      await fetch(`http://${reg.host}/v2/cella/tamper/manifests/${pushed.digest}`, { headers: { accept: MEDIA.ociManifest } })
    ).json()) as { layers: { digest: string }[] };
    const evil = await tarOf([{ name: 'evil', content: 'y' }]);
    assert.equal(evil.length, layer.length);
    writeFileSync(blobData(reg, manifest.layers[0]!.digest), evil);
    const dest = tmp('tamper');
    await rejectsWith(pullImage(`${reg.host}/cella/tamper`, dest), 'CONTAINER_BUILD_FAILED');
    assert.deepEqual(snapshot(dest), {});
  });

  test('layers that would write outside the tree are refused', async () => {
    const outside = tmp('outside');
    const cases: Record<string, TarEntry[]> = {
      dotdot: [{ name: `../${path.basename(outside)}/dotdot`, content: 'x' }],
      absolute: [{ name: `${outside}/absolute`, content: 'x' }],
      hardlink: [{ name: 'h', type: 'link', linkname: `../${path.basename(outside)}/target` }],
      symlinkParent: [
        { name: 'ln', type: 'symlink', linkname: outside },
        { name: 'ln/through', content: 'x' },
      ],
    };
    writeFileSync(path.join(outside, 'target'), 'secret');
    for (const [name, entries] of Object.entries(cases)) {
      const repo = `cella/unsafe-${name.toLowerCase()}`;
      await pushImage(reg.host, repo, 'latest', { config: CONFIG, layers: [{ data: await tarOf(entries), mediaType: MEDIA.ociTar }] });
      const root = tmp('unsafe');
      const dest = path.join(root, 'tree');
      mkdirSync(dest);
      await rejectsWith(pullImage(`${reg.host}/${repo}`, dest), 'CONTAINER_BUILD_FAILED');
      assert.deepEqual(readdirSync(outside), ['target'], name);
      assert.deepEqual(readdirSync(root), ['tree'], name);
    }
  });

  test('maxBytes bounds the unpacked size', async () => {
    await pushMultiPlatform(reg.host, 'cella/big', 'big');
    await rejectsWith(pullImage(`${reg.host}/cella/big`, tmp('big'), { maxBytes: 20 }), 'DISK_STORAGE_FULL');
  });

  test('answers a Basic challenge with the credentials for that registry', async () => {
    await pushMultiPlatform(reg.host, 'cella/basic', 'basic');
    const [regHost, regPort] = reg.host.split(':');
    const port = await freePort();
    const expected = `Basic ${Buffer.from('bob:hunter2').toString('base64')}`;
    // A front that demands Basic auth and forwards to the open registry.
    const front = createServer((req, res) => {
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="cella"' }).end();
        return;
      }
      const upstream = request({ host: regHost, port: Number(regPort), path: req.url, method: req.method, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      req.pipe(upstream);
    });
    await new Promise<void>((r) => front.listen(port, '127.0.0.1', r));
    try {
      const host = `127.0.0.1:${port}`;
      const err = await rejectsWith(pullImage(`${host}/cella/basic`, tmp('basic-none')), 'CONTAINER_BUILD_FAILED');
      assert.match(err.message, /HTTP 401/);
      const dest = tmp('basic');
      await pullImage(`${host}/cella/basic`, dest, { credentials: { [host]: { username: 'bob', password: 'hunter2' } } });
      assert.deepEqual(snapshot(dest), expectedTree('basic'));
    } finally {
      await new Promise((r) => front.close(r));
    }
  });
});

describe('pullImage from a registry with token auth', () => {
  let reg: Registry;
  let tokens: Awaited<ReturnType<typeof startTokenServer>>;
  before(async () => {
    tokens = await startTokenServer((repository, user) =>
      repository === 'public/app' ? (user === 'alice' ? ['pull', 'push'] : ['pull']) : user === 'alice' ? ['pull', 'push'] : [],
    );
    reg = await startRegistry(tokens.auth);
    for (const repo of ['public/app', 'private/app']) {
      const token = await tokens.token(`repository:${repo}:pull,push`, 'alice');
      await pushImage(reg.host, repo, 'latest', { config: CONFIG, layers: await dockerLayers(repo), docker: true }, token);
    }
  });
  after(async () => {
    await reg?.stop();
    await tokens?.stop();
  });

  test('the registry refuses requests without a token', async () => {
    const res = await fetch(`http://${reg.host}/v2/public/app/manifests/latest`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm=/);
  });

  test('pulls anonymously with a pull token from the realm', async () => {
    tokens.requests.length = 0;
    const dest = tmp('token-public');
    await pullImage(`${reg.host}/public/app`, dest);
    assert.deepEqual(snapshot(dest), expectedTree('public/app'));
    assert.deepEqual(tokens.requests[0], { scopes: ['repository:public/app:pull'], user: undefined });
  });

  test('a private repository needs credentials for the token', async () => {
    await rejectsWith(pullImage(`${reg.host}/private/app`, tmp('token-denied')), 'CONTAINER_BUILD_FAILED');
    const dest = tmp('token-private');
    await pullImage(`${reg.host}/private/app`, dest, { credentials: { [reg.host]: { username: 'alice', password: 'secret' } } });
    assert.deepEqual(snapshot(dest), expectedTree('private/app'));
    assert.deepEqual(tokens.requests.at(-1), { scopes: ['repository:private/app:pull'], user: 'alice' });
  });
});
