import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import yazl from 'yazl';
import { BuildFailure, CellaError, type BuildFailureReason } from '../contract/index.js';
import { S_IFLNK, S_IFREG, rawZip } from '../../test/fixtures/zip-raw.js';
import { extractZip, fetchArtifact, findDockerfile, validateArtifactUri, zipDirectory, zipEntryCount, type ZipLimits } from './index.js';

const MiB = 1024 * 1024;

const scratch: string[] = [];
after(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cella-archive-'));
  scratch.push(dir);
  return dir;
}

type YazlEntry = { name: string; data: Buffer; mode?: number } | { dir: string; mode?: number };

function yazlZip(entries: YazlEntry[]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const entry of entries) {
    if ('dir' in entry) zip.addEmptyDirectory(entry.dir, entry.mode === undefined ? {} : { mode: entry.mode });
    else zip.addBuffer(entry.data, entry.name, entry.mode === undefined ? {} : { mode: entry.mode });
  }
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (chunk: Buffer) => chunks.push(chunk));
    zip.outputStream.on('error', reject);
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

/** A scratch folder holding `archive.zip` and the extraction target `work/dest`. */
async function box(zip: Buffer): Promise<{ base: string; zip: string; dest: string }> {
  const base = await tempDir();
  await writeFile(path.join(base, 'archive.zip'), zip);
  return { base, zip: path.join(base, 'archive.zip'), dest: path.join(base, 'work', 'dest') };
}

/** Everything under `base` except the zip and the extraction target: must stay empty. */
async function outsideDest(base: string): Promise<string[]> {
  const all = await readdir(base, { recursive: true });
  return all.filter((p) => p !== 'archive.zip' && p !== 'work' && p !== 'work/dest' && !p.startsWith('work/dest/'));
}

function isFailure(reason: BuildFailureReason) {
  return (err: unknown) => {
    assert.ok(err instanceof BuildFailure, `expected a BuildFailure, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    return true;
  };
}

async function assertRefused(zip: Buffer, limits: Partial<ZipLimits> = {}, because?: RegExp): Promise<string> {
  const { base, zip: file, dest } = await box(zip);
  await assert.rejects(extractZip(file, dest, limits), (err) => {
    isFailure('ARCHIVE_INVALID')(err);
    if (because) assert.match((err as Error).message, because);
    return true;
  });
  assert.deepEqual(await outsideDest(base), []);
  return dest;
}

const DOCKERFILE = { name: 'Dockerfile', data: Buffer.from('FROM scratch\n') };

describe('extractZip', () => {
  test('extracts a tree with its modes and inside symlinks; setuid bits are dropped', async () => {
    const zip = await yazlZip([
      { name: 'Dockerfile', data: Buffer.from('FROM scratch\n'), mode: S_IFREG | 0o644 },
      { name: 'bin/run.sh', data: Buffer.from('#!/bin/sh\n'), mode: S_IFREG | 0o755 },
      { name: 'bin/su', data: Buffer.from('x'), mode: S_IFREG | 0o4755 },
      { dir: 'secret/', mode: 0o40700 },
      { name: 'secret/key', data: Buffer.from('k'), mode: S_IFREG | 0o600 },
      { name: 'current', data: Buffer.from('bin/run.sh'), mode: S_IFLNK | 0o777 },
      { name: 'lib/up', data: Buffer.from('../secret'), mode: S_IFLNK | 0o777 },
    ]);
    const { base, zip: file, dest } = await box(zip);
    const result = await extractZip(file, dest);
    assert.equal(result.entries, 7);
    assert.equal(result.bytes, 13 + 10 + 1 + 1 + 'bin/run.sh'.length + '../secret'.length);
    const mode = async (rel: string) => (await lstat(path.join(dest, rel))).mode & 0o7777;
    assert.equal(await mode('Dockerfile'), 0o644);
    assert.equal(await mode('bin/run.sh'), 0o755);
    assert.equal(await mode('bin/su'), 0o755);
    assert.equal(await mode('bin'), 0o755);
    assert.equal(await mode('secret'), 0o700);
    assert.equal(await mode('secret/key'), 0o600);
    assert.equal(await readFile(path.join(dest, 'bin/run.sh'), 'utf8'), '#!/bin/sh\n');
    assert.equal(await readlink(path.join(dest, 'current')), 'bin/run.sh');
    assert.equal(await readlink(path.join(dest, 'lib/up')), '../secret');
    assert.equal(await findDockerfile(dest), path.join(dest, 'Dockerfile'));
    assert.deepEqual(await outsideDest(base), []);
  });

  test('refuses names that escape or are not plain relative paths', async () => {
    const base = await tempDir();
    for (const name of ['../evil', 'a/../../evil', `${base}/abs-evil`, '/etc/cella-evil', 'C:/evil', 'a\\..\\..\\evil', 'a\0b', 'a//b', './a']) {
      await assertRefused(rawZip([DOCKERFILE, { name, data: Buffer.from('x') }]));
    }
    assert.deepEqual(await readdir(base), []);
  });

  test('refuses symlinks that point outside, absolute or relative', async () => {
    for (const [name, target] of [
      ['link', '/etc'],
      ['link', '..'],
      ['sub/link', '../../x'],
      ['sub/link', '../sub/../..'],
      // s -> . makes 's/x/../..' the root's parent, though it normalises to '.'.
      ['link', 's/x/../..'],
    ] as const) {
      await assertRefused(
        rawZip([DOCKERFILE, { name: 's', data: Buffer.from('.'), mode: S_IFLNK | 0o777 }, { name, data: Buffer.from(target), mode: S_IFLNK | 0o777 }]),
      );
    }
  });

  test('never writes through a symlink it created', async () => {
    await assertRefused(rawZip([DOCKERFILE, { name: 'a', data: Buffer.from('.'), mode: S_IFLNK | 0o777 }, { name: 'a/../../evil', data: Buffer.from('x') }]));
    const dest = await assertRefused(
      rawZip([
        DOCKERFILE,
        { name: 'sub/keep', data: Buffer.from('k') },
        { name: 'link', data: Buffer.from('sub'), mode: S_IFLNK | 0o777 },
        { name: 'link/file', data: Buffer.from('x') },
      ]),
    );
    assert.deepEqual(await readdir(path.join(dest, 'sub')), ['keep']);
  });

  test('refuses more entries than the limit', async () => {
    const entries = Array.from({ length: 11 }, (_, i) => ({ name: `f${i}`, data: Buffer.from('x') }));
    await assertRefused(rawZip(entries), { maxEntries: 10 });
  });

  test('refuses an archive that unpacks to more than the total limit', async () => {
    const entries = Array.from({ length: 3 }, (_, i) => ({ name: `f${i}`, data: randomBytes(MiB / 2) }));
    await assertRefused(await yazlZip(entries), { maxTotalBytes: MiB });
  });

  test('refuses an entry compressed beyond the ratio (4 MiB of zeros, far over 200:1)', async () => {
    // Above the 1 MiB under which the ratio is not judged; the default limits, so nothing but the ratio refuses it.
    await assertRefused(await yazlZip([DOCKERFILE, { name: 'zeros', data: Buffer.alloc(4 * MiB) }]), {}, /compressed more than 200:1/);
  });

  test('holds the limits on the bytes inflated, not the sizes declared', async () => {
    // Declared 100 bytes: passes the central directory checks, then inflates to 4 MiB of zeros.
    await assertRefused(rawZip([DOCKERFILE, { name: 'liar', data: Buffer.alloc(4 * MiB), declaredSize: 100 }]), {
      maxTotalBytes: 2 * MiB,
    });
    await assertRefused(rawZip([DOCKERFILE, { name: 'liar', data: randomBytes(64 * 1024), declaredSize: 100 }]));
  });

  test('refuses a file that is not a zip, or a truncated one', async () => {
    await assertRefused(Buffer.from('this is not a zip file\n'));
    const whole = await yazlZip([DOCKERFILE, { name: 'data', data: randomBytes(4096) }]);
    await assertRefused(whole.subarray(0, whole.length - 30));
  });

  test('refuses duplicate entries and a path both file and folder', async () => {
    await assertRefused(rawZip([DOCKERFILE, DOCKERFILE]));
    await assertRefused(rawZip([DOCKERFILE, { name: 'a', data: Buffer.from('x') }, { name: 'a/b', data: Buffer.from('y') }]));
    await assertRefused(rawZip([DOCKERFILE, { name: 'a/b', data: Buffer.from('x') }, { name: 'a', data: Buffer.from('y') }]));
  });

  test('wants an empty destination', async () => {
    const { zip, dest } = await box(await yazlZip([DOCKERFILE]));
    await mkdir(dest, { recursive: true });
    await writeFile(path.join(dest, 'there'), '');
    await assert.rejects(extractZip(zip, dest), (err) => err instanceof CellaError && err.code === 'INVALID_ARGUMENT');
  });
});

describe('findDockerfile', () => {
  test('names the Dockerfile found one folder down', async () => {
    const { zip, dest } = await box(await yazlZip([{ name: 'app/Dockerfile', data: Buffer.from('FROM scratch\n') }]));
    await extractZip(zip, dest);
    await assert.rejects(findDockerfile(dest), (err) => {
      isFailure('ARCHIVE_DOCKERFILE_NOT_FOUND')(err);
      assert.match((err as Error).message, /app\/Dockerfile/);
      return true;
    });
  });

  test('fails without any Dockerfile', async () => {
    const { zip, dest } = await box(await yazlZip([{ name: 'README', data: Buffer.from('hi') }]));
    await extractZip(zip, dest);
    await assert.rejects(findDockerfile(dest), isFailure('ARCHIVE_DOCKERFILE_NOT_FOUND'));
  });
});

describe('zipEntryCount', () => {
  test('counts the entries of a zip, 0 for an empty one, and does not judge what is not a zip', async () => {
    assert.equal(await zipEntryCount((await box(rawZip([]))).zip), 0);
    assert.equal(await zipEntryCount((await box(await yazlZip([DOCKERFILE, { name: 'app', data: Buffer.from('x') }]))).zip), 2);
    assert.equal(await zipEntryCount((await box(Buffer.from('this is not a zip'))).zip), undefined);
  });
});

describe('zipDirectory', () => {
  async function sampleFolder(): Promise<string> {
    const dir = await tempDir();
    await mkdir(path.join(dir, 'bin'));
    await mkdir(path.join(dir, 'empty'));
    await writeFile(path.join(dir, 'Dockerfile'), 'FROM scratch\n');
    await writeFile(path.join(dir, 'bin', 'run.sh'), '#!/bin/sh\n');
    await chmod(path.join(dir, 'bin', 'run.sh'), 0o755);
    await symlink('bin/run.sh', path.join(dir, 'start'));
    return dir;
  }

  test('round-trips files, modes, empty folders and inside symlinks', async () => {
    const src = await sampleFolder();
    const { zip, dest } = await box(await zipDirectory(src));
    await extractZip(zip, dest);
    assert.deepEqual((await readdir(dest, { recursive: true })).sort(), ['Dockerfile', 'bin', 'bin/run.sh', 'empty', 'start']);
    assert.equal((await stat(path.join(dest, 'bin', 'run.sh'))).mode & 0o777, 0o755);
    assert.equal(await readFile(path.join(dest, 'Dockerfile'), 'utf8'), 'FROM scratch\n');
    assert.equal(await readlink(path.join(dest, 'start')), 'bin/run.sh');
  });

  test('gives the same bytes for the same content, whatever the mtimes', async () => {
    const src = await sampleFolder();
    const first = await zipDirectory(src);
    await utimes(path.join(src, 'Dockerfile'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    assert.ok(first.equals(await zipDirectory(src)));
  });

  test('refuses symlinks that point outside the folder', async () => {
    for (const target of ['/etc/passwd', '../outside']) {
      const src = await sampleFolder();
      await symlink(target, path.join(src, 'escape'));
      await assert.rejects(zipDirectory(src), (err) => err instanceof CellaError && err.code === 'INVALID_ARGUMENT');
    }
  });
});

describe('fetchArtifact', () => {
  const content = randomBytes(100_000);
  const sha256 = createHash('sha256').update(content).digest('hex');

  test('validateArtifactUri accepts s3:// and absolute file:// URIs only', () => {
    validateArtifactUri('s3://my-bucket/code/app.zip');
    validateArtifactUri('file:///srv/code/app.zip');
    for (const uri of ['http://example.com/a.zip', 'file://host/a.zip', 'file:relative.zip', 's3://bucket', 's3://Bad_Bucket/k', 'app.zip']) {
      assert.throws(
        () => validateArtifactUri(uri),
        (err) => err instanceof CellaError && err.code === 'INVALID_ARGUMENT',
        uri,
      );
    }
  });

  test('copies a file:// artifact and hashes it', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'app.zip'), content);
    const got = await fetchArtifact(pathToFileURL(path.join(dir, 'app.zip')).href, path.join(dir, 'copy.zip'));
    assert.deepEqual(got, { bytes: content.length, sha256 });
    assert.ok(content.equals(await readFile(path.join(dir, 'copy.zip'))));
  });

  test('refuses a missing file:// artifact and one over the size limit', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'app.zip'), content);
    const dest = path.join(dir, 'copy.zip');
    await assert.rejects(fetchArtifact(pathToFileURL(path.join(dir, 'nope.zip')).href, dest), isFailure('ARCHIVE_INVALID'));
    await assert.rejects(fetchArtifact(pathToFileURL(path.join(dir, 'app.zip')).href, dest, { maxBytes: 1000 }), isFailure('ARCHIVE_INVALID'));
    assert.deepEqual((await readdir(dir)).sort(), ['app.zip']);
  });

  test('needs S3 settings for s3://', async () => {
    const dir = await tempDir();
    await assert.rejects(fetchArtifact('s3://code/app.zip', path.join(dir, 'copy.zip')), isFailure('S3_ACCESS_DENIED'));
  });

  describe('from s3rver', () => {
    let server: S3rver;
    let endpoint: string;
    // s3rver's built-in account.
    const keys = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

    before(async () => {
      server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: await tempDir(), configureBuckets: [{ name: 'code' }] });
      endpoint = `http://127.0.0.1:${(await server.run()).port}`;
      // s3rver cannot read the SDK's default streaming checksums, so the upload sends none.
      const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: keys, requestChecksumCalculation: 'WHEN_REQUIRED' });
      await client.send(new PutObjectCommand({ Bucket: 'code', Key: 'apps/app.zip', Body: content }));
      client.destroy();
    });
    after(() => server.close());

    test('fetches an object', async () => {
      const dest = path.join(await tempDir(), 'copy.zip');
      const got = await fetchArtifact('s3://code/apps/app.zip', dest, { s3: { endpoint, ...keys } });
      assert.deepEqual(got, { bytes: content.length, sha256 });
      assert.ok(content.equals(await readFile(dest)));
    });

    test('maps a missing key and a missing bucket', async () => {
      const dest = path.join(await tempDir(), 'copy.zip');
      const s3 = { endpoint, ...keys };
      await assert.rejects(fetchArtifact('s3://code/apps/missing.zip', dest, { s3 }), isFailure('S3_NO_SUCH_KEY'));
      await assert.rejects(fetchArtifact('s3://no-such-bucket/app.zip', dest, { s3 }), isFailure('S3_NO_SUCH_BUCKET'));
    });

    test('refuses an object over the size limit', async () => {
      const dir = await tempDir();
      await assert.rejects(
        fetchArtifact('s3://code/apps/app.zip', path.join(dir, 'copy.zip'), { s3: { endpoint, ...keys }, maxBytes: 1000 }),
        isFailure('ARCHIVE_INVALID'),
      );
      assert.deepEqual(await readdir(dir), []);
    });
  });
});
