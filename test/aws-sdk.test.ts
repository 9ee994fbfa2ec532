/**
 * The official AWS SDK (`@aws-sdk/client-lambda-microvms`) against a real
 * cellad on port 0, unchanged but for its endpoint and credentials (an
 * access key; the SDK signs every request with SigV4): all 24
 * operations, each List through the SDK's own paginator, and a typed
 * exception of every error class Cella raises on the way. Timestamps come
 * back as Dates, statuses and shapes as the SDK's model reads them. Two
 * MicroVMs at most, one after the other.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  AccessDeniedException,
  ConflictException,
  CreateMicrovmAuthTokenCommand,
  CreateMicrovmImageCommand,
  CreateMicrovmShellAuthTokenCommand,
  DeleteMicrovmImageCommand,
  DeleteMicrovmImageVersionCommand,
  GetMicrovmCommand,
  GetMicrovmImageBuildCommand,
  type GetMicrovmImageBuildCommandOutput,
  GetMicrovmImageCommand,
  GetMicrovmImageVersionCommand,
  LambdaMicrovmsClient,
  LambdaMicrovmsServiceException,
  ListTagsCommand,
  type MicrovmState,
  paginateListManagedMicrovmImages,
  paginateListManagedMicrovmImageVersions,
  paginateListMicrovmImageBuilds,
  paginateListMicrovmImages,
  paginateListMicrovmImageVersions,
  paginateListMicrovms,
  ResourceNotFoundException,
  ResumeMicrovmCommand,
  RunMicrovmCommand,
  ServiceQuotaExceededException,
  SuspendMicrovmCommand,
  TagResourceCommand,
  TerminateMicrovmCommand,
  ThrottlingException,
  UntagResourceCommand,
  UpdateMicrovmImageCommand,
  UpdateMicrovmImageVersionCommand,
  ValidationException,
} from '@aws-sdk/client-lambda-microvms';
import { Arns } from '../src/contract/index.js';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, demoArtifact, shutdown, upload } from './control-helpers.js';
import { tempDataDir } from './helpers.js';

const ARNS = new Arns();
const ROLE = 'arn:aws:iam::000000000000:role/cella-sdk';
/** The demo image's memory tier: the quota below has room for one such MicroVM, not two. */
const MEMORY_MIB = 256;

/** The access key the server is started with (as CELLA_ACCESS_KEY_ID / CELLA_SECRET_ACCESS_KEY would give it). */
const KEY = { accessKeyId: 'CELLASDKTEST0000', secretAccessKey: 'cella-sdk-test-secret-0123456789abcdef' };

/** The SDK as a user points it at Cella: endpoint, region, credentials; it signs with SigV4. */
function sdk(url: string, credentials: typeof KEY = KEY): LambdaMicrovmsClient {
  return new LambdaMicrovmsClient({ endpoint: url, region: ARNS.region, credentials, maxAttempts: 1 });
}

/** A client whose requests lose their Authorization header after signing: a caller with no credentials at all. */
function anonymous(url: string): LambdaMicrovmsClient {
  const client = sdk(url);
  client.middlewareStack.add(
    (next) => async (args) => {
      delete (args.request as { headers: Record<string, string> }).headers.authorization;
      return next(args);
    },
    { step: 'finalizeRequest', priority: 'low', name: 'dropAuthorization' },
  );
  return client;
}

/** Every page of a paginator, as the SDK yields them. */
async function pages<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const p of it) out.push(p);
  return out;
}

/** The error a promise rejects with, which must be of class `cls` (the SDK's typed exception). */
async function raised<E extends LambdaMicrovmsServiceException>(p: Promise<unknown>, cls: abstract new (...args: never[]) => E): Promise<E> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${(err as Error).name}: ${(err as Error).message}`);
    return err;
  }
  throw new Error(`expected ${cls.name}, but the call succeeded`);
}

/** A Date within the last hour: a timestamp the SDK parsed from the wire. */
function recent(d: Date | undefined, what: string): void {
  assert.ok(d instanceof Date && !Number.isNaN(d.getTime()), `${what} is a Date`);
  assert.ok(Math.abs(Date.now() - d.getTime()) < 3_600_000, `${what} ${d.toISOString()} is recent`);
}

describe('the AWS SDK against cella server', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let c: LambdaMicrovmsClient;
  let uri: string;
  const image = ARNS.image('sdk-demo');
  let buildId: string;
  let vmA: string;

  const waitBuild = async (imageIdentifier: string, imageVersion: string, id: string): Promise<GetMicrovmImageBuildCommandOutput> => {
    const end = Date.now() + 600_000;
    for (;;) {
      const b = await c.send(new GetMicrovmImageBuildCommand({ imageIdentifier, imageVersion, buildId: id }));
      if (b.buildState === 'SUCCESSFUL' || b.buildState === 'FAILED') return b;
      if (Date.now() > end) throw new Error(`build ${id} still ${b.buildState}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  const waitVm = async (id: string, states: MicrovmState[]): Promise<MicrovmState> => {
    const end = Date.now() + 120_000;
    for (;;) {
      const vm = await c.send(new GetMicrovmCommand({ microvmIdentifier: id }));
      if (vm.state && states.includes(vm.state)) return vm.state;
      if (Date.now() > end) throw new Error(`MicroVM ${id} stayed ${vm.state}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  before(async () => {
    dir = tempDataDir('aws-sdk');
    // apiRateScale 1: the contract's own rates, so one burst meets ThrottlingException. maxMemoryMiB: room for one MicroVM.
    server = await startServer({
      dataDir: dir,
      port: 0,
      proxyPort: 0,
      apiKey: API_KEY,
      accessKey: KEY,
      demoImage: false,
      apiRateScale: 1,
      maxMemoryMiB: MEMORY_MIB + 64,
      log: () => {},
    });
    c = sdk(server.url);
    uri = await upload(server.url, await demoArtifact());
  });
  after(async () => {
    c?.destroy();
    if (server) await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('ListManagedMicrovmImages and ListManagedMicrovmImageVersions page through the bases with the SDK paginators', { timeout: 60_000 }, async () => {
    const got = await pages(paginateListManagedMicrovmImages({ client: c, pageSize: 1 }, {}));
    assert.ok(got.length >= 3, `one base per page: ${got.length} pages`);
    const arns = got.flatMap((p) => p.items ?? []).map((i) => i.imageArn);
    for (const name of ['busybox', 'debian-12', 'debian-12-python']) assert.ok(arns.includes(ARNS.managedImage(name)), name);
    for (const p of got) for (const i of p.items ?? []) assert.ok(i.createdAt instanceof Date && !Number.isNaN(i.createdAt.getTime()));
    const versions = await pages(paginateListManagedMicrovmImageVersions({ client: c, pageSize: 1 }, { imageIdentifier: ARNS.managedImage('busybox') }));
    const items = versions.flatMap((p) => p.items ?? []);
    assert.equal(items.length, 1);
    assert.equal(items[0]?.status, 'AVAILABLE');
    assert.ok(items[0]?.createdAt instanceof Date);
  });

  test('CreateMicrovmImage (201) builds version 1.0; GetMicrovmImage, GetMicrovmImageBuild answer with Dates', { timeout: 900_000 }, async () => {
    const created = await c.send(
      new CreateMicrovmImageCommand({
        name: 'sdk-demo',
        baseImageArn: ARNS.managedImage('busybox'),
        buildRoleArn: ROLE,
        codeArtifact: { uri },
        resources: [{ minimumMemoryInMiB: MEMORY_MIB }],
        description: 'the demo app, built through the SDK',
        tags: { team: 'sdk', stage: 'test' },
      }),
    );
    assert.equal(created.$metadata.httpStatusCode, 201);
    assert.equal(created.imageArn, image);
    assert.equal(created.imageVersion, '1.0');
    assert.equal(created.state, 'CREATING');
    assert.equal(created.codeArtifact?.uri, uri);
    assert.deepEqual(created.tags, { team: 'sdk', stage: 'test' });
    recent(created.createdAt, 'createdAt');
    const builds = await pages(paginateListMicrovmImageBuilds({ client: c, pageSize: 1 }, { imageIdentifier: image, imageVersion: '1.0' }));
    buildId = builds.flatMap((p) => p.items ?? [])[0]?.buildId as string;
    assert.ok(buildId);
    const b = await waitBuild(image, '1.0', buildId);
    assert.equal(b.buildState, 'SUCCESSFUL', b.stateReason);
    recent(b.createdAt, 'build createdAt');
    assert.ok((b.snapshotBuild?.memorySnapshotSizeInBytes ?? 0) > 0, 'snapshotBuild sizes');
    const img = await c.send(new GetMicrovmImageCommand({ imageIdentifier: image }));
    assert.equal(img.name, 'sdk-demo');
    assert.equal(img.state, 'CREATED');
    recent(img.createdAt, 'image createdAt');
    recent(img.updatedAt, 'image updatedAt');
    assert.deepEqual(img.tags, { team: 'sdk', stage: 'test' });
    assert.equal(img.latestActiveImageVersion, '1.0');
  });

  test(
    'TagResource (204), UntagResource (204), ListTags: tags given at creation are there; limits and unknown ARNs are typed errors',
    { timeout: 60_000 },
    async () => {
      assert.deepEqual((await c.send(new ListTagsCommand({ Resource: image }))).Tags, { team: 'sdk', stage: 'test' });
      const tagged = await c.send(new TagResourceCommand({ Resource: image, Tags: { stage: 'prod', owner: 'me' } }));
      assert.equal(tagged.$metadata.httpStatusCode, 204);
      assert.deepEqual((await c.send(new ListTagsCommand({ Resource: image }))).Tags, { team: 'sdk', stage: 'prod', owner: 'me' });
      const untagged = await c.send(new UntagResourceCommand({ Resource: image, TagKeys: ['team', 'owner', 'never-there'] }));
      assert.equal(untagged.$metadata.httpStatusCode, 204);
      assert.deepEqual((await c.send(new ListTagsCommand({ Resource: image }))).Tags, { stage: 'prod' });
      assert.deepEqual((await c.send(new GetMicrovmImageCommand({ imageIdentifier: image }))).tags, { stage: 'prod' });

      const bad: Array<() => Promise<unknown>> = [
        () => c.send(new TagResourceCommand({ Resource: image, Tags: { 'aws:reserved': 'x' } })),
        () => c.send(new TagResourceCommand({ Resource: image, Tags: { ['k'.repeat(129)]: 'x' } })),
        () => c.send(new TagResourceCommand({ Resource: image, Tags: { k: 'v'.repeat(257) } })),
        () => c.send(new TagResourceCommand({ Resource: image, Tags: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, 'v'])) })),
        () => c.send(new TagResourceCommand({ Resource: new Arns('eu-west-1').image('sdk-demo'), Tags: { a: 'b' } })),
        () => c.send(new TagResourceCommand({ Resource: new Arns('us-east-1', '123456789012').image('sdk-demo'), Tags: { a: 'b' } })),
        () => c.send(new ListTagsCommand({ Resource: 'arn:aws:lambda:us-east-1:000000000000:microvm:mvm-1' })),
        () => c.send(new UntagResourceCommand({ Resource: image, TagKeys: ['aws:x'] })),
      ];
      for (const call of bad) await raised(call(), ValidationException);
      assert.deepEqual((await c.send(new ListTagsCommand({ Resource: image }))).Tags, { stage: 'prod' }, 'nothing changed');
      const missing = await raised(c.send(new ListTagsCommand({ Resource: ARNS.image('nope') })), ResourceNotFoundException);
      assert.equal(missing.resourceId, ARNS.image('nope'));
      assert.equal(missing.resourceType, 'MicrovmImage');
    },
  );

  test('RunMicrovm, GetMicrovm, both token operations; a second MicroVM is over the memory quota', { timeout: 300_000 }, async () => {
    const run = await c.send(
      new RunMicrovmCommand({
        imageIdentifier: image,
        ingressNetworkConnectors: [ARNS.managedConnector('HTTP_INGRESS'), ARNS.managedConnector('SHELL_INGRESS')],
        idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 600, autoResumeEnabled: true },
        maximumDurationInSeconds: 3600,
      }),
    );
    vmA = run.microvmId as string;
    assert.equal(run.state, 'PENDING');
    assert.equal(run.imageArn, image);
    assert.equal(run.imageVersion, '1.0');
    recent(run.startedAt, 'startedAt');
    assert.equal(await waitVm(vmA, ['RUNNING', 'TERMINATED']), 'RUNNING');
    const vm = await c.send(new GetMicrovmCommand({ microvmIdentifier: vmA }));
    assert.deepEqual(vm.idlePolicy, { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 600, autoResumeEnabled: true });
    assert.equal(vm.maximumDurationInSeconds, 3600);
    assert.deepEqual(vm.egressNetworkConnectors, [ARNS.managedConnector('INTERNET_EGRESS')]);
    assert.equal(vm.terminatedAt, undefined);

    const quota = await raised(c.send(new RunMicrovmCommand({ imageIdentifier: image })), ServiceQuotaExceededException);
    assert.ok(quota.quotaCode, 'quotaCode');
    assert.ok(quota.serviceCode, 'serviceCode');

    const http = await c.send(
      new CreateMicrovmAuthTokenCommand({
        microvmIdentifier: vmA,
        expirationInMinutes: 5,
        allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9001 } }],
      }),
    );
    assert.ok(http.authToken?.['X-aws-proxy-auth'], 'an endpoint token');
    const shell = await c.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: vmA, expirationInMinutes: 5 }));
    assert.ok(shell.authToken?.['X-aws-proxy-auth'], 'a shell token');
  });

  test('SuspendMicrovm, ResumeMicrovm, TerminateMicrovm; acting on a TERMINATED MicroVM is a ConflictException', { timeout: 300_000 }, async () => {
    assert.equal((await c.send(new SuspendMicrovmCommand({ microvmIdentifier: vmA }))).$metadata.httpStatusCode, 200);
    assert.equal(await waitVm(vmA, ['SUSPENDED']), 'SUSPENDED');
    await c.send(new ResumeMicrovmCommand({ microvmIdentifier: vmA }));
    assert.equal((await c.send(new GetMicrovmCommand({ microvmIdentifier: vmA }))).state, 'RUNNING');
    await c.send(new TerminateMicrovmCommand({ microvmIdentifier: vmA }));
    assert.equal(await waitVm(vmA, ['TERMINATED']), 'TERMINATED');
    recent((await c.send(new GetMicrovmCommand({ microvmIdentifier: vmA }))).terminatedAt, 'terminatedAt');
    await c.send(new TerminateMicrovmCommand({ microvmIdentifier: vmA }));
    const conflict = await raised(c.send(new SuspendMicrovmCommand({ microvmIdentifier: vmA })), ConflictException);
    assert.equal(conflict.resourceId, vmA);
  });

  test('ListMicrovms pages through both MicroVMs with the paginator, and filters by image', { timeout: 300_000 }, async () => {
    const b = (await c.send(new RunMicrovmCommand({ imageIdentifier: image, ingressNetworkConnectors: [ARNS.managedConnector('NO_INGRESS')] })))
      .microvmId as string;
    await c.send(new TerminateMicrovmCommand({ microvmIdentifier: b }));
    const got = await pages(paginateListMicrovms({ client: c, pageSize: 1 }, { imageIdentifier: image }));
    const items = got.flatMap((p) => p.items ?? []);
    assert.deepEqual(
      items.map((i) => i.microvmId),
      [vmA, b],
    );
    assert.ok(got.length >= 2, 'one MicroVM per page');
    for (const i of items) recent(i.startedAt, `${i.microvmId} startedAt`);
    await waitVm(b, ['TERMINATED']);
  });

  test(
    'UpdateMicrovmImage, the versions (List, Get, UpdateVersion, DeleteVersion) and a second image for ListMicrovmImages and DeleteMicrovmImage',
    { timeout: 120_000 },
    async () => {
      // Last of the image calls: a failed update leaves the image UPDATE_FAILED, which runs no MicroVM.
      // A code artifact that does not exist: the build fails at once, with no builder VM.
      const missing = 'file:///nonexistent/cella-sdk-test.zip';
      const updated = await c.send(
        new UpdateMicrovmImageCommand({
          imageIdentifier: image,
          baseImageArn: ARNS.managedImage('busybox'),
          buildRoleArn: ROLE,
          codeArtifact: { uri: missing },
        }),
      );
      assert.equal(updated.$metadata.httpStatusCode, 200);
      assert.equal(updated.imageVersion, '2.0');
      recent(updated.updatedAt, 'updatedAt');
      const b2 = (await pages(paginateListMicrovmImageBuilds({ client: c, pageSize: 1 }, { imageIdentifier: image, imageVersion: '2.0' }))).flatMap(
        (p) => p.items ?? [],
      );
      assert.equal(b2.length, 1);
      assert.equal((await waitBuild(image, '2.0', b2[0]?.buildId as string)).buildState, 'FAILED');

      const versions = await pages(paginateListMicrovmImageVersions({ client: c, pageSize: 1 }, { imageIdentifier: image }));
      assert.deepEqual(
        versions.flatMap((p) => p.items ?? []).map((v) => [v.imageVersion, v.state]),
        [
          ['1.0', 'SUCCESSFUL'],
          ['2.0', 'FAILED'],
        ],
      );
      assert.ok(versions.length >= 2, 'one version per page');
      const failed = await c.send(new GetMicrovmImageCommand({ imageIdentifier: image }));
      assert.deepEqual([failed.state, failed.latestActiveImageVersion, failed.latestFailedImageVersion], ['UPDATE_FAILED', '1.0', '2.0']);
      const v1 = await c.send(new GetMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: '1.0' }));
      assert.equal(v1.status, 'ACTIVE');
      assert.equal(v1.baseImageArn, ARNS.managedImage('busybox'));
      assert.deepEqual(v1.resources, [{ minimumMemoryInMiB: MEMORY_MIB }]);
      recent(v1.createdAt, 'version createdAt');
      const inactive = await c.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: '2.0', status: 'INACTIVE' }));
      assert.equal(inactive.status, 'INACTIVE');
      const deleted = await c.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: '2.0' }));
      assert.equal(deleted.imageVersion, '2.0');
      await raised(c.send(new GetMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: '2.0' })), ResourceNotFoundException);

      const other = await c.send(
        new CreateMicrovmImageCommand({ name: 'sdk-broken', baseImageArn: ARNS.managedImage('busybox'), buildRoleArn: ROLE, codeArtifact: { uri: missing } }),
      );
      const ob = (await pages(paginateListMicrovmImageBuilds({ client: c }, { imageIdentifier: other.imageArn, imageVersion: '1.0' }))).flatMap(
        (p) => p.items ?? [],
      );
      assert.equal((await waitBuild(other.imageArn as string, '1.0', ob[0]?.buildId as string)).buildState, 'FAILED');
      const listed = await pages(paginateListMicrovmImages({ client: c, pageSize: 1 }, {}));
      assert.deepEqual(
        listed.flatMap((p) => p.items ?? []).map((i) => i.name),
        ['sdk-broken', 'sdk-demo'],
      );
      assert.ok(listed.length >= 2, 'one image per page');
      for (const i of listed.flatMap((p) => p.items ?? [])) recent(i.createdAt, `${i.name} createdAt`);
      const gone = await c.send(new DeleteMicrovmImageCommand({ imageIdentifier: other.imageArn }));
      assert.equal(gone.imageIdentifier, other.imageArn);
      await raised(c.send(new GetMicrovmImageCommand({ imageIdentifier: 'sdk-broken' })), ResourceNotFoundException);
    },
  );

  test(
    'typed errors: ResourceNotFound with its fields, Validation, AccessDenied, an unknown key, Throttling with retryAfterSeconds',
    { timeout: 60_000 },
    async () => {
      const nf = await raised(c.send(new GetMicrovmCommand({ microvmIdentifier: 'mvm-nope' })), ResourceNotFoundException);
      assert.equal(nf.resourceId, 'mvm-nope');
      assert.equal(nf.resourceType, 'Microvm');
      assert.equal(nf.$metadata.httpStatusCode, 404);
      assert.ok(nf.message.includes('mvm-nope'));
      await raised(c.send(new RunMicrovmCommand({ imageIdentifier: new Arns('eu-west-1').image('sdk-demo') })), ValidationException);
      await raised(c.send(new RunMicrovmCommand({ imageIdentifier: image, maximumDurationInSeconds: 0 })), ValidationException);
      const nobody = anonymous(server.url);
      // An access key the server does not know: AWS's UnrecognizedClientException, which this SDK has no class of.
      const stranger = sdk(server.url, { accessKeyId: 'CELLAUNKNOWN0000', secretAccessKey: KEY.secretAccessKey });
      try {
        assert.equal((await raised(nobody.send(new GetMicrovmImageCommand({ imageIdentifier: image })), AccessDeniedException)).$metadata.httpStatusCode, 401);
        const unknown = await raised(stranger.send(new GetMicrovmImageCommand({ imageIdentifier: image })), LambdaMicrovmsServiceException);
        assert.deepEqual([unknown.name, unknown.$metadata.httpStatusCode], ['UnrecognizedClientException', 403]);
      } finally {
        nobody.destroy();
        stranger.destroy();
      }
      // The contract's SuspendMicrovm rate is 2 per second: a burst of refused suspends meets it.
      let throttled: ThrottlingException | undefined;
      for (let i = 0; i < 10 && !throttled; i++) {
        try {
          await c.send(new SuspendMicrovmCommand({ microvmIdentifier: vmA }));
        } catch (err) {
          if (err instanceof ThrottlingException) throttled = err;
          else assert.ok(err instanceof ConflictException, (err as Error).name);
        }
      }
      assert.ok(throttled, 'a ThrottlingException within the burst');
      assert.ok((throttled.retryAfterSeconds ?? 0) >= 1, `retryAfterSeconds ${throttled.retryAfterSeconds}`);
    },
  );
});
