/**
 * One conformance suite for every Store: SQLite (in memory and in a file)
 * and the in-memory store must answer alike, call for call.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import Database from 'better-sqlite3';
import { encodeRow, type Table } from './columns.js';
import { IMAGES, VERSIONS } from './images.js';
import { migrate } from './migrations.js';
import { VMS } from './vms.js';
import {
  MemoryStore,
  SqliteStore,
  type BuildRecord,
  type ConnectorRecord,
  type E2bSandboxRecord,
  type ImageRecord,
  type ImageVersionRecord,
  type Store,
  type Tx,
  type VmRecord,
} from './index.js';

const vm = (id: string, createdAt: number, more: Partial<VmRecord> = {}): VmRecord => ({
  id,
  imageName: 'img',
  imageArn: 'arn:img',
  imageVersion: '1.0',
  state: 'PENDING',
  generation: 1,
  stateReason: null,
  spec: {
    maximumDurationInSeconds: 60,
    ingressNetworkConnectors: ['in'],
    egressNetworkConnectors: [],
    loggingDisabled: false,
    network: { ingress: [8080], egress: 'none' },
  },
  memoryMiB: 256,
  vcpus: 1,
  createdAt,
  terminatedAt: null,
  slot: null,
  pid: null,
  pidStartTime: null,
  idleDeadline: null,
  suspendedDeadline: null,
  maxDeadline: createdAt + 60_000,
  stateSince: createdAt,
  runningMs: 0,
  bytesWritten: 0,
  bytesRead: 0,
  storageByteMs: 0,
  checkpointBytes: 0,
  ...more,
});
const image = (name: string, more: Partial<ImageRecord> = {}): ImageRecord => ({
  name,
  arn: `arn:${name}`,
  state: 'CREATING',
  tags: { team: 'a' },
  createdAt: 1,
  updatedAt: null,
  ...more,
});
const version = (imageName: string, major: number, more: Partial<ImageVersionRecord> = {}): ImageVersionRecord => ({
  imageName,
  version: `${major}.0`,
  major,
  state: 'PENDING',
  status: 'ACTIVE',
  stateReason: null,
  request: { baseImageArn: 'arn:base', codeArtifact: { uri: 'file:///a.zip' } },
  runtime: null,
  dir: `/data/${imageName}/v${major}`,
  createdAt: major,
  updatedAt: null,
  ...more,
});
const build = (buildId: string, imageName: string, v: string, createdAt: number): BuildRecord => ({
  buildId,
  imageName,
  version: v,
  state: 'PENDING',
  stateReason: null,
  message: null,
  snapshotBuild: null,
  createdAt,
  updatedAt: null,
});
const internal = (e: unknown): boolean => isCellaError(e, 'INTERNAL');
const ids = (vms: VmRecord[]): string[] => vms.map((v) => v.id);

/** Resolves when `release` is called: a transaction held open across an await. */
function gate(): { wait: Promise<void>; release: () => void } {
  let release = (): void => {};
  const wait = new Promise<void>((r) => (release = r));
  return { wait, release };
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const STORES: Array<[string, () => Store]> = [
  ['SqliteStore(:memory:)', () => new SqliteStore(':memory:')],
  [
    'SqliteStore(file)',
    () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'cella-store-'));
      dirs.push(dir);
      return new SqliteStore(path.join(dir, 'cella.db'));
    },
  ],
  ['MemoryStore', () => new MemoryStore()],
];

for (const [name, open] of STORES) {
  describe(name, () => {
    const each = (title: string, body: (s: Store) => Promise<void>): void => {
      test(title, { timeout: 10_000 }, async () => {
        const s = open();
        try {
          await body(s);
        } finally {
          await s.close();
        }
      });
    };

    each('a VM reads back as written, as a copy; a taken id is refused and changes nothing', async (s) => {
      const a = vm('a', 10);
      await s.insertVm(a);
      const got = await s.getVm('a');
      assert.deepEqual(got, a);
      got?.spec.ingressNetworkConnectors.push('changed');
      assert.deepEqual((await s.getVm('a'))?.spec, a.spec, 'a record read is a copy, not the stored row');
      await assert.rejects(s.insertVm({ ...a, imageName: 'other' }), internal);
      assert.equal((await s.getVm('a'))?.imageName, 'img');
      assert.equal(await s.getVm('nope'), undefined);
    });

    each('VMs list in creation order (id breaks ties), page by (createdAt, id), filter by image; live ones leave out TERMINATED', async (s) => {
      for (const [id, at] of [
        ['c', 20],
        ['b', 10],
        ['a', 20],
        ['d', 30],
      ] as const)
        await s.insertVm(vm(id, at, id === 'd' ? { imageVersion: '2.0' } : {}));
      assert.deepEqual(ids(await s.listVms({ limit: 10 })), ['b', 'a', 'c', 'd']);
      assert.deepEqual(ids(await s.listVms({ limit: 2 })), ['b', 'a']);
      assert.deepEqual(ids(await s.listVms({ limit: 2, after: { createdAt: 20, id: 'a' } })), ['c', 'd']);
      assert.deepEqual(ids(await s.listVms({ limit: 2, after: { createdAt: 30, id: 'd' } })), []);
      assert.deepEqual(ids(await s.listVms({ limit: 10, imageName: 'img', imageVersion: '2.0' })), ['d']);
      assert.deepEqual(ids(await s.listVms({ limit: 10, imageName: 'other' })), []);
      await s.writeState('a', 1, 'TERMINATED', 2, null, {});
      assert.deepEqual(ids(await s.liveVms()), ['b', 'c', 'd']);
    });

    each('writeState writes only from the generation it names, and returns the row as written', async (s) => {
      await s.insertVm(vm('a', 10, { idleDeadline: 5 }));
      const next = await s.writeState('a', 1, 'RUNNING', 2, 'why', { runningMs: 7, storageByteMs: 1.5, idleDeadline: undefined });
      assert.deepEqual(next, { ...vm('a', 10, { idleDeadline: 5 }), state: 'RUNNING', generation: 2, stateReason: 'why', runningMs: 7, storageByteMs: 1.5 });
      assert.deepEqual(await s.getVm('a'), next);
      assert.equal(await s.writeState('a', 1, 'SUSPENDING', 2, null, {}), undefined, 'a stale generation writes nothing');
      assert.equal(await s.writeState('nope', 1, 'RUNNING', 2, null, {}), undefined);
      assert.deepEqual(await s.getVm('a'), next);
      const own = await s.writeState('a', 2, 'SUSPENDING', 3, 'reason', { stateReason: 'from the patch' });
      assert.equal(own?.stateReason, 'from the patch', "the patch's stateReason is written after the reason");
    });

    each('patchVm writes only at the generation it names; an empty patch reads', async (s) => {
      await s.insertVm(vm('a', 10));
      const next = await s.patchVm('a', 1, { pid: 42, pidStartTime: '99', slot: 3, stateReason: null });
      assert.deepEqual(next, vm('a', 10, { pid: 42, pidStartTime: '99', slot: 3 }));
      assert.equal(await s.patchVm('a', 2, { pid: 1 }), undefined);
      assert.equal((await s.getVm('a'))?.pid, 42);
      assert.deepEqual(await s.patchVm('a', 1, {}), next);
      assert.equal(await s.patchVm('a', 2, {}), undefined);
    });

    each('a clientToken is taken once per scope', async (s) => {
      await s.putIdempotent('RunMicrovm', 't1', 'h1', 'mvm-1');
      assert.deepEqual(await s.findIdempotent('RunMicrovm', 't1'), { hash: 'h1', resourceId: 'mvm-1' });
      await assert.rejects(s.putIdempotent('RunMicrovm', 't1', 'h2', 'mvm-2'), internal);
      assert.deepEqual(await s.findIdempotent('RunMicrovm', 't1'), { hash: 'h1', resourceId: 'mvm-1' });
      await s.putIdempotent('CreateMicrovmImage', 't1', 'h3', 'b-1');
      assert.equal(await s.findIdempotent('RunMicrovm', 't2'), undefined);
    });

    each('tokens: put, get, revoked by VM with a count', async (s) => {
      const t = { jti: 'j1', vmId: 'a', kind: 'http' as const, ports: '[]', expiresAt: 9, createdAt: 8 };
      await s.putToken(t);
      await s.putToken({ ...t, jti: 'j2', kind: 'shell' });
      await s.putToken({ ...t, jti: 'j3', vmId: 'b' });
      await assert.rejects(s.putToken(t), internal);
      assert.deepEqual(await s.getToken('j1'), t);
      assert.equal(await s.deleteTokensOf('a'), 2);
      assert.equal(await s.getToken('j2'), undefined);
      assert.equal((await s.getToken('j3'))?.vmId, 'b');
      assert.equal(await s.deleteTokensOf('a'), 0);
    });

    each('images, versions and builds: upserts change only what may change; order, paging; deletes cascade', async (s) => {
      for (const n of ['b', 'a', 'c']) await s.putImage(image(n));
      await s.putImage(image('a', { arn: 'arn:new', state: 'CREATED', tags: {}, createdAt: 999, updatedAt: 5 }));
      assert.deepEqual(await s.getImage('a'), image('a', { arn: 'arn:new', state: 'CREATED', updatedAt: 5 }), 'createdAt and tags are kept');
      assert.deepEqual(
        (await s.listImages()).map((i) => i.name),
        ['a', 'b', 'c'],
      );
      assert.deepEqual(
        (await s.listImages({ after: 'a', limit: 1 })).map((i) => i.name),
        ['b'],
      );
      assert.deepEqual(
        (await s.listImages({ after: 'c' })).map((i) => i.name),
        [],
      );
      for (const major of [2, 1]) await s.putVersion(version('a', major));
      await s.putVersion(version('b', 1));
      const runtime = { command: ['/app'], environmentVariables: { A: '1' }, workingDirectory: '/', port: 8080, memoryMiB: 256, vcpus: 1 };
      await s.putVersion(
        version('a', 1, {
          state: 'SUCCESSFUL',
          status: 'INACTIVE',
          runtime,
          stateReason: 'r',
          updatedAt: 3,
          dir: '/moved',
          major: 7,
          request: { baseImageArn: 'x', codeArtifact: { uri: 'y' } },
        }),
      );
      assert.deepEqual(
        await s.getVersion('a', '1.0'),
        version('a', 1, { state: 'SUCCESSFUL', status: 'INACTIVE', runtime, stateReason: 'r', updatedAt: 3 }),
        'dir, major, request are kept',
      );
      assert.deepEqual(
        (await s.listVersions('a')).map((v) => v.version),
        ['1.0', '2.0'],
      );
      await s.putBuild(build('x2', 'a', '2.0', 30));
      await s.putBuild(build('x1', 'a', '1.0', 10));
      await s.putBuild(build('y1', 'b', '1.0', 20));
      const failed: Pick<BuildRecord, 'state' | 'stateReason' | 'message' | 'snapshotBuild' | 'updatedAt'> = {
        state: 'FAILED',
        stateReason: 'ARCHIVE_INVALID',
        message: 'm',
        snapshotBuild: { codeInstallSizeInBytes: 5 },
        updatedAt: 4,
      };
      await s.putBuild({ ...build('x1', 'a', '1.0', 999), ...failed });
      assert.deepEqual(await s.getBuild('x1'), { ...build('x1', 'a', '1.0', 10), ...failed }, 'the outcome is written, createdAt is kept');
      assert.deepEqual(
        (await s.listBuilds('a')).map((b) => b.buildId),
        ['x1', 'x2'],
      );
      assert.deepEqual(
        (await s.listBuilds('a', '2.0')).map((b) => b.buildId),
        ['x2'],
      );
      await s.deleteVersion('a', '2.0');
      assert.deepEqual(
        (await s.listVersions('a')).map((v) => v.version),
        ['1.0'],
      );
      assert.deepEqual(
        (await s.listBuilds('a')).map((b) => b.buildId),
        ['x1'],
      );
      await s.deleteImage('a');
      assert.equal(await s.getImage('a'), undefined);
      assert.deepEqual(await s.listVersions('a'), []);
      assert.equal(await s.getBuild('x1'), undefined);
      assert.equal((await s.getBuild('y1'))?.imageName, 'b', "another image's builds stay");
    });

    each('connectors by name; a taken name is refused; delete', async (s) => {
      const c = (n: string): ConnectorRecord => ({
        name: n,
        arn: `arn:${n}`,
        description: n === 'b' ? 'B' : null,
        cidrs: ['10.0.0.0/8'],
        domains: ['*.example.com'],
        tags: n === 'b' ? { team: 'b' } : {},
        createdAt: 1,
      });
      await s.putConnector(c('b'));
      await s.putConnector(c('a'));
      await assert.rejects(s.putConnector(c('a')), internal);
      assert.deepEqual(await s.getConnector('b'), c('b'));
      assert.deepEqual(
        (await s.listConnectors()).map((x) => x.name),
        ['a', 'b'],
      );
      await s.deleteConnector('a');
      await s.deleteConnector('a');
      assert.deepEqual(
        (await s.listConnectors()).map((x) => x.name),
        ['b'],
      );
    });

    each('tags of images and connectors: replaced whole by setTags, kept by puts, gone with their resource', async (s) => {
      await s.putImage(image('a'));
      await s.putConnector({ name: 'c', arn: 'arn:c', description: null, cidrs: [], domains: ['x.org'], tags: { k: 'v' }, createdAt: 1 });
      assert.equal(await s.setTags('microvm-image', 'a', { x: '1', y: '' }), true);
      assert.deepEqual((await s.getImage('a'))?.tags, { x: '1', y: '' });
      await s.putImage({ ...image('a'), state: 'CREATED', tags: { stale: 'read before' } });
      assert.deepEqual((await s.getImage('a'))?.tags, { x: '1', y: '' }, 'a put of the image keeps its tags');
      assert.equal(await s.setTags('network-connector', 'c', {}), true);
      assert.deepEqual((await s.getConnector('c'))?.tags, {});
      assert.deepEqual((await s.getImage('a'))?.tags, { x: '1', y: '' }, 'only the named resource changes');
      assert.equal(await s.setTags('microvm-image', 'nope', { x: '1' }), false);
      assert.equal(await s.setTags('network-connector', 'a', { x: '1' }), false, 'an image is no connector');
      assert.equal(await s.getImage('nope'), undefined);
      await s.deleteImage('a');
      await s.putImage(image('a', { tags: {} }));
      assert.deepEqual((await s.getImage('a'))?.tags, {}, 'an image made again starts with its own tags');
      await assert.rejects(
        s.tx(async (tx) => {
          await tx.setTags('microvm-image', 'a', { t: '1' });
          throw new Error('undo');
        }),
      );
      assert.deepEqual((await s.getImage('a'))?.tags, {}, 'rolled back with its transaction');
    });

    each('E2B sandboxes: by id, a put again replaces only the user; live ones are those whose VM is not TERMINATED', async (s) => {
      const sbx = (vmId: string, createdAt: number): E2bSandboxRecord => ({
        vmId,
        templateId: 'base',
        metadata: { k: 'v' },
        envVars: { A: '1' },
        user: 'user',
        autoResume: vmId === 'b',
        allowInternetAccess: vmId !== 'c',
        publicTraffic: vmId !== 'b',
        createdAt,
      });
      await s.insertVm(vm('b', 2));
      await s.insertVm(vm('a', 1));
      await s.insertVm(vm('c', 3, { state: 'TERMINATED' }));
      for (const [id, at] of [
        ['b', 2],
        ['a', 1],
        ['c', 3],
        ['orphan', 4],
      ] as const)
        await s.putE2bSandbox(sbx(id, at));
      await s.putE2bSandbox({ ...sbx('a', 9), user: 'root', metadata: {} });
      assert.deepEqual(await s.getE2bSandbox('a'), { ...sbx('a', 1), user: 'root' });
      assert.deepEqual(await s.getE2bSandbox('b'), sbx('b', 2));
      assert.deepEqual(await s.getE2bSandbox('c'), sbx('c', 3), 'a terminated sandbox is still recorded');
      assert.equal(await s.getE2bSandbox('x'), undefined);
      assert.deepEqual(
        (await s.liveE2bSandboxes()).map((x) => x.vmId),
        ['a', 'b'],
      );
    });
    each('API key hashes and secrets (an upsert, a copy each way)', async (s) => {
      assert.deepEqual(await s.apiKeyHashes(), []);
      await s.addApiKeyHash('h2');
      await s.addApiKeyHash('h1');
      await assert.rejects(s.addApiKeyHash('h1'), internal);
      assert.deepEqual((await s.apiKeyHashes()).sort(), ['h1', 'h2']);
      const v = Buffer.from('one');
      await s.putSecret('k', v);
      v.write('two');
      assert.equal((await s.getSecret('k'))?.toString(), 'one');
      await s.putSecret('k', Buffer.from('three'));
      assert.equal((await s.getSecret('k'))?.toString(), 'three');
      assert.equal(await s.getSecret('none'), undefined);
    });

    each('access keys: a taken id is refused, oldest first, delete says whether there was one', async (s) => {
      const k = (id: string, createdAt: number): { id: string; sealedSecret: Buffer; createdAt: number } => ({
        id,
        sealedSecret: Buffer.from(`sealed-${id}`),
        createdAt,
      });
      await s.putAccessKey(k('B', 2));
      await s.putAccessKey(k('C', 1));
      await s.putAccessKey(k('A', 2));
      await assert.rejects(s.putAccessKey(k('A', 3)), internal);
      assert.deepEqual(await s.getAccessKey('A'), k('A', 2));
      assert.equal(await s.getAccessKey('Z'), undefined);
      assert.deepEqual(
        (await s.listAccessKeys()).map((x) => x.id),
        ['C', 'A', 'B'],
      );
      assert.equal(await s.deleteAccessKey('A'), true);
      assert.equal(await s.deleteAccessKey('A'), false);
      assert.deepEqual(
        (await s.listAccessKeys()).map((x) => x.id),
        ['C', 'B'],
      );
    });

    each('a transaction commits all of its writes, or on a throw none, and passes the throw on', async (s) => {
      assert.equal(
        await s.tx(async (tx) => {
          await tx.insertVm(vm('a', 1));
          await tx.putIdempotent('RunMicrovm', 't', 'h', 'a');
          return 'done';
        }),
        'done',
      );
      const boom = new Error('boom');
      await assert.rejects(
        s.tx(async (tx) => {
          await tx.insertVm(vm('b', 2));
          await tx.putImage(image('i'));
          await tx.writeState('a', 1, 'RUNNING', 2, null, {});
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await s.getVm('b'), undefined);
      assert.equal(await s.getImage('i'), undefined);
      assert.equal((await s.getVm('a'))?.state, 'PENDING');
      assert.deepEqual(await s.findIdempotent('RunMicrovm', 't'), { hash: 'h', resourceId: 'a' });
      // A duplicate inside rolls the whole transaction back too.
      await assert.rejects(
        s.tx(async (tx) => {
          await tx.insertVm(vm('c', 3));
          await tx.putIdempotent('RunMicrovm', 't', 'h', 'c');
        }),
        internal,
      );
      assert.equal(await s.getVm('c'), undefined);
    });

    each('a nested transaction is a savepoint: its throw undoes only its writes', async (s) => {
      await s.tx(async (tx) => {
        await tx.insertVm(vm('outer', 1));
        await assert.rejects(
          tx.tx(async (inner) => {
            await inner.insertVm(vm('inner', 2));
            throw new Error('inner');
          }),
        );
        assert.equal(await tx.getVm('inner'), undefined);
        await tx.tx(async (inner) => inner.insertVm(vm('kept', 3)));
      });
      assert.deepEqual(ids(await s.liveVms()), ['outer', 'kept']);
    });

    each('a call from outside never sees or joins a transaction under way: it waits for its end', async (s) => {
      await s.insertVm(vm('a', 1));
      const held = gate();
      const entered = gate();
      const txDone = s.tx(async (tx) => {
        await tx.writeState('a', 1, 'RUNNING', 2, null, {});
        await tx.insertVm(vm('b', 2));
        entered.release();
        await held.wait;
        throw new Error('rolled back');
      });
      await entered.wait;
      const order: string[] = [];
      const read = s.getVm('a').then((r) => (order.push('read'), r));
      const write = s.insertVm(vm('c', 3)).then(() => order.push('write'));
      const second = s.tx(async (tx) => (await tx.getVm('b')) ?? 'no b').then((r) => (order.push('tx'), r));
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(order, [], 'nothing from outside ran while the transaction was open');
      held.release();
      await assert.rejects(txDone);
      assert.equal((await read)?.state, 'PENDING', 'the read saw the row as committed, not half-way');
      await write;
      assert.equal(await second, 'no b');
      assert.deepEqual(order, ['read', 'write', 'tx'], 'the waiting calls ran in the order they were made');
      assert.deepEqual(ids(await s.liveVms()), ['a', 'c'], 'the write from outside was not rolled back with the transaction');
    });

    each('a transaction handle is refused once its transaction has ended', async (s) => {
      let kept: Tx | undefined;
      await s.tx(async (tx) => {
        kept = tx;
      });
      assert.ok(kept);
      await assert.rejects(kept.getVm('a'), internal);
      await assert.rejects(
        kept.tx(async () => {}),
        internal,
      );
    });

    each('a closed store refuses calls', async (s) => {
      await s.close();
      await assert.rejects(s.getVm('a'));
    });
  });
}

test(
  'SQLite: each write is committed, for another connection too, before its promise resolves; a transaction not before its end',
  { timeout: 10_000 },
  async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cella-store-'));
    const file = path.join(dir, 'cella.db');
    const s = new SqliteStore(file);
    const other = new SqliteStore(file);
    try {
      await s.insertVm(vm('a', 1));
      assert.equal((await other.getVm('a'))?.id, 'a');
      const held = gate();
      const entered = gate();
      const done = s.tx(async (tx) => {
        await tx.insertVm(vm('b', 2));
        entered.release();
        await held.wait;
      });
      await entered.wait;
      assert.equal(await other.getVm('b'), undefined, 'not visible before COMMIT');
      held.release();
      await done;
      assert.equal((await other.getVm('b'))?.id, 'b');
    } finally {
      await s.close();
      await other.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  'SQLite: a database from before the contract ARNs opens with every stored ARN in the default region and account, which it keeps',
  { timeout: 10_000 },
  async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cella-store-'));
    const file = path.join(dir, 'cella.db');
    const OLD_IMAGE = 'arn:cella:lambda:local:000000000000:microvm-image:demo';
    const OLD_BASE = 'arn:cella:lambda:local:aws:microvm-image:busybox';
    const oldConnector = (n: string): string => `arn:aws:lambda:local:aws:network-connector:aws-network-connector:${n}`;
    const OLD_CUSTOMER = 'arn:aws:lambda:local:000000000000:network-connector:pypi';
    const NEW = 'arn:aws:lambda:us-east-1:';
    // Schema version 4, as the cellad before the contract's ARNs left it.
    const db = new Database(file);
    migrate(db, 4);
    const insert = <R>(t: Table<R>, rec: R): void => {
      const row = encodeRow(t, rec);
      db.prepare(
        `INSERT INTO ${t.name} (${Object.keys(row).join(', ')}) VALUES (${Object.keys(row)
          .map(() => '?')
          .join(', ')})`,
      ).run(...Object.values(row));
    };
    insert(IMAGES, image('demo', { arn: OLD_IMAGE }));
    insert(
      VERSIONS,
      version('demo', 1, {
        request: { baseImageArn: OLD_BASE, codeArtifact: { uri: 'file:///a.zip' }, egressNetworkConnectors: [OLD_CUSTOMER] },
        runtime: {
          command: ['/app'],
          environmentVariables: {},
          workingDirectory: '/',
          port: 8080,
          memoryMiB: 256,
          vcpus: 1,
          egressNetworkConnectors: [OLD_CUSTOMER],
        },
      }),
    );
    const spec = {
      ...vm('a', 1).spec,
      ingressNetworkConnectors: [oldConnector('HTTP_INGRESS')],
      egressNetworkConnectors: [oldConnector('INTERNET_EGRESS'), OLD_CUSTOMER],
    };
    insert(VMS, vm('a', 1, { imageArn: OLD_IMAGE, spec }));
    // Its connectors had no tags column yet.
    db.prepare(`INSERT INTO network_connectors (name, arn, cidrs, domains, created_at) VALUES ('pypi', ?, '[]', '["pypi.org"]', 1)`).run(OLD_CUSTOMER);
    db.close();
    const s = new SqliteStore(file);
    try {
      assert.equal((await s.getImage('demo'))?.arn, `${NEW}000000000000:microvm-image:demo`);
      const v = await s.getVersion('demo', '1.0');
      assert.equal(v?.request.baseImageArn, `${NEW}aws:microvm-image:busybox`);
      assert.deepEqual(v?.request.egressNetworkConnectors, [`${NEW}000000000000:network-connector:pypi`]);
      assert.deepEqual(v?.runtime?.egressNetworkConnectors, [`${NEW}000000000000:network-connector:pypi`]);
      const a = await s.getVm('a');
      assert.equal(a?.imageArn, `${NEW}000000000000:microvm-image:demo`);
      assert.deepEqual(a?.spec.ingressNetworkConnectors, [`${NEW}aws:network-connector:aws-network-connector:HTTP_INGRESS`]);
      assert.deepEqual(a?.spec.egressNetworkConnectors, [
        `${NEW}aws:network-connector:aws-network-connector:INTERNET_EGRESS`,
        `${NEW}000000000000:network-connector:pypi`,
      ]);
      assert.equal((await s.getConnector('pypi'))?.arn, `${NEW}000000000000:network-connector:pypi`);
      assert.deepEqual((await s.getConnector('pypi'))?.tags, {});
      assert.equal((await s.getSecret('arn-home'))?.toString(), 'us-east-1:000000000000');
    } finally {
      await s.close();
    }
    // A new database holds no ARN yet: its first start chooses the region and account.
    const fresh = new SqliteStore(':memory:');
    assert.equal(await fresh.getSecret('arn-home'), undefined);
    await fresh.close();
    rmSync(dir, { recursive: true, force: true });
  },
);
