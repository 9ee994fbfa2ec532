/**
 * The MicroVM operations over HTTP, on the control-plane harness (no VM):
 * validation, idempotency, the memory quota, endpoint and shell tokens,
 * throttling. What needs a guest (hooks, logs, RAM and disk kept) stays in
 * test/control.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Arns } from '../../src/contract/index.js';

const managedConnectorArn = (name: string): string => new Arns().managedConnector(name);
import { Images } from '../../src/images/index.js';
import type { RunnableImage } from '../../src/lifecycle/index.js';
import { V, startHarness, type Harness } from '../fixtures/harness.js';
import type { MicrovmBody } from '../fixtures/api.js';

const QUOTA_MIB = 1024;

describe('MicroVM operations (no VM)', { concurrency: false }, () => {
  let h: Harness;

  before(async () => {
    h = await startHarness({ maxMemoryMiB: QUOTA_MIB });
  });
  after(async () => {
    await h.close();
  });

  const run = async (body: Record<string, unknown> = {}): Promise<MicrovmBody> => {
    const r = await h.api<MicrovmBody>('POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.state, 'PENDING');
    return r.body;
  };
  const terminate = async (id: string): Promise<MicrovmBody> => {
    assert.equal((await h.api('DELETE', `${V}/microvms/${id}`)).status, 200);
    return h.waitState(id, ['TERMINATED']);
  };
  const count = async (): Promise<number> => (await h.api<{ items: unknown[] }>('GET', `${V}/microvms`)).body.items.length;
  const terminateAll = async (): Promise<void> => {
    for (const v of await h.store.liveVms()) await terminate(v.id);
  };

  test('every validation rule answers its error and changes nothing', { timeout: 30_000 }, async () => {
    const n = await count();
    const live = (await h.store.liveVms()).length;
    const cases: Array<[string, string, unknown, number, string, boolean?]> = [
      ['POST', `${V}/microvms`, '{"imageIdentifier": "demo",', 400, 'MALFORMED_JSON', true],
      ['POST', `${V}/microvms`, '[1,2]', 400, 'INVALID_ARGUMENT', true],
      ['POST', `${V}/microvms`, {}, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', surprise: 1 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: '' }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 0 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 28801 }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', maximumDurationInSeconds: 1.5 }, 400, 'INVALID_ARGUMENT'],
      [
        'POST',
        `${V}/microvms`,
        { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 0, suspendedDurationSeconds: 0, autoResumeEnabled: true } },
        400,
        'INVALID_ARGUMENT',
      ],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 60, autoResumeEnabled: true } }, 400, 'INVALID_ARGUMENT'],
      [
        'POST',
        `${V}/microvms`,
        { imageIdentifier: 'demo', idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: -1, autoResumeEnabled: true } },
        400,
        'INVALID_ARGUMENT',
      ],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', runHookPayload: 'x'.repeat(4097) }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', runHookPayload: 'é'.repeat(2049) }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', logging: { disabled: {}, cloudWatch: {} } }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', executionRoleArn: 'role' }, 400, 'INVALID_ARGUMENT'],
      ['POST', `${V}/microvms`, { imageIdentifier: 'demo', ingressNetworkConnectors: ['HTTP_INGRESS'] }, 400, 'INVALID_ARGUMENT'],
      [
        'POST',
        `${V}/microvms`,
        { imageIdentifier: 'demo', egressNetworkConnectors: Array(11).fill('arn:aws:lambda:x:aws:network-connector:aws-network-connector:INTERNET_EGRESS') },
        400,
        'INVALID_ARGUMENT',
      ],
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
      ['POST', `${V}/microvms/mvm-nope/shell-auth-token`, { expirationInMinutes: 5 }, 404, 'NOT_FOUND'],
      ['GET', `${V}/microvms/${'x'.repeat(300)}`, undefined, 400, 'INVALID_ARGUMENT'],
      ['PUT', `${V}/microvms`, undefined, 405, 'METHOD_NOT_ALLOWED'],
      ['GET', `${V}/nothing-here`, undefined, 404, 'UNKNOWN_OPERATION'],
    ];
    for (const [method, p, body, status, code, raw] of cases) {
      const r = await h.api<{ code: string; message: string }>(method, p, body, { raw: raw ?? false });
      assert.equal(r.status, status, `${method} ${p.slice(0, 80)} ${String(JSON.stringify(body)).slice(0, 120)}: ${r.text.slice(0, 200)}`);
      assert.equal(r.body.code, code, `${method} ${p.slice(0, 80)}`);
      assert.ok(r.body.message.length > 0);
      assert.ok(r.type, 'error type header');
    }
    const nf = await h.api<{ resourceId: string; resourceType: string }>('GET', `${V}/microvms/mvm-nope`);
    assert.deepEqual([nf.body.resourceId, nf.body.resourceType, nf.type], ['mvm-nope', 'Microvm', 'ResourceNotFoundException']);
    assert.equal(await count(), n, 'no request above made a VM');
    assert.equal((await h.store.liveVms()).length, live);
    assert.equal(h.driver.launches, 0);
  });

  test('no key, a wrong key, and any key but the stored one are 401', { timeout: 30_000 }, async () => {
    for (const key of [null, 'wrong', `${h.apiKey}x`]) {
      const r = await h.api('GET', `${V}/microvms`, undefined, { key });
      assert.equal(r.status, 401, String(key));
      assert.equal(r.body.code, 'UNAUTHENTICATED');
    }
    assert.equal((await h.api('GET', '/openapi.json', undefined, { key: null })).status, 401);
    assert.equal((await h.api('GET', `${V}/microvms`)).status, 200);
  });

  test('operations outside the lifecycle table are 409 and change nothing; terminate is idempotent', { timeout: 30_000 }, async () => {
    const vm = await run();
    await h.waitState(vm.microvmId, ['RUNNING']);
    const resumeRunning = await h.api('POST', `${V}/microvms/${vm.microvmId}/resume`);
    assert.equal(resumeRunning.status, 409);
    assert.equal(resumeRunning.type, 'ConflictException');
    await terminate(vm.microvmId);
    assert.equal((await h.api('DELETE', `${V}/microvms/${vm.microvmId}`)).status, 200, 'terminate is idempotent');
    const generation = (await h.store.getVm(vm.microvmId))?.generation;
    assert.equal((await h.api('POST', `${V}/microvms/${vm.microvmId}/suspend`)).status, 409);
    assert.equal((await h.api('POST', `${V}/microvms/${vm.microvmId}/resume`)).status, 409);
    assert.equal((await h.store.getVm(vm.microvmId))?.generation, generation);
  });

  test('clientToken: the same request returns the same VM; different parameters are a conflict and create nothing', { timeout: 30_000 }, async () => {
    const launched = h.driver.launches;
    const first = await run({ clientToken: 'tok-1', maximumDurationInSeconds: 600 });
    const again = await h.api<MicrovmBody>('POST', `${V}/microvms`, { maximumDurationInSeconds: 600, imageIdentifier: 'demo', clientToken: 'tok-1' });
    assert.equal(again.status, 200);
    assert.equal(again.body.microvmId, first.microvmId);
    const n = await count();
    const other = await h.api('POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'tok-1', maximumDurationInSeconds: 601 });
    assert.equal(other.status, 409);
    assert.equal(other.body.code, 'IDEMPOTENCY_CONFLICT');
    assert.equal(await count(), n);
    await h.waitState(first.microvmId, ['RUNNING']);
    await terminate(first.microvmId);
    // Still the same VM, even once it has ended.
    const late = await h.api<MicrovmBody>('POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'tok-1', maximumDurationInSeconds: 600 });
    assert.equal(late.body.microvmId, first.microvmId);
    assert.equal(late.body.state, 'TERMINATED');
    assert.equal(h.driver.launches - launched, 1, 'one launch for the one VM the token made');
  });

  test('the memory quota refuses a run beyond it with ServiceQuotaExceeded, and frees with a terminate', { timeout: 30_000 }, async () => {
    await terminateAll();
    const vms: MicrovmBody[] = [];
    for (let used = 0; used + 256 <= QUOTA_MIB; used += 256) vms.push(await run());
    const n = await count();
    const over = await h.api<{ code: string; quotaCode: string }>('POST', `${V}/microvms`, { imageIdentifier: 'demo' });
    assert.equal(over.status, 402);
    assert.equal(over.type, 'ServiceQuotaExceededException');
    assert.equal(over.body.quotaCode, 'microvm-memory-mib');
    assert.equal(await count(), n, 'the refused run made nothing');
    const first = vms.shift() as MicrovmBody;
    await terminate(first.microvmId);
    vms.push(await run());
    await terminateAll();
  });

  test('endpoint tokens: minted for a live VM within the contract limits, refused for a terminated one', { timeout: 30_000 }, async () => {
    const vm = await run();
    const ok = await h.api<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${vm.microvmId}/auth-token`, {
      expirationInMinutes: 5,
      allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }],
    });
    assert.equal(ok.status, 200, ok.text);
    assert.ok((ok.body.authToken['X-aws-proxy-auth'] ?? '').length > 100);
    const bad: unknown[] = [
      { expirationInMinutes: 61, allowedPorts: [{ port: 8080 }] },
      { expirationInMinutes: 0, allowedPorts: [{ port: 8080 }] },
      { expirationInMinutes: 5, allowedPorts: [] },
      { expirationInMinutes: 5, allowedPorts: [{ port: 70000 }] },
      { expirationInMinutes: 5, allowedPorts: [{ port: 80, allPorts: {} }] },
      { expirationInMinutes: 5, allowedPorts: [{ range: { startPort: 10, endPort: 5 } }] },
      { allowedPorts: [{ port: 8080 }] },
    ];
    for (const body of bad) {
      const r = await h.api('POST', `${V}/microvms/${vm.microvmId}/auth-token`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.code, 'INVALID_ARGUMENT', JSON.stringify(body));
    }
    const shell = await h.api('POST', `${V}/microvms/${vm.microvmId}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(shell.status, 400, 'no SHELL_INGRESS connector');
    assert.equal(shell.body.code, 'INVALID_ARGUMENT');
    await h.waitState(vm.microvmId, ['RUNNING']);
    await terminate(vm.microvmId);
    const late = await h.api('POST', `${V}/microvms/${vm.microvmId}/auth-token`, { expirationInMinutes: 5, allowedPorts: [{ allPorts: {} }] });
    assert.equal(late.status, 409);
    assert.equal(late.body.code, 'INVALID_STATE');
  });

  test('shell tokens need SHELL_INGRESS (or ALL_INGRESS); a NO_INGRESS VM gets no endpoint token', { timeout: 30_000 }, async () => {
    const shelled = await run({ ingressNetworkConnectors: [managedConnectorArn('SHELL_INGRESS')] });
    const shell = await h.api<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${shelled.microvmId}/shell-auth-token`, { expirationInMinutes: 5 });
    assert.equal(shell.status, 200, shell.text);
    assert.ok((shell.body.authToken['X-aws-proxy-auth'] ?? '').length > 100);
    assert.equal((await h.api('POST', `${V}/microvms/${shelled.microvmId}/shell-auth-token`, { expirationInMinutes: 61 })).status, 400);
    const all = await run({ ingressNetworkConnectors: [managedConnectorArn('ALL_INGRESS')] });
    assert.equal((await h.api('POST', `${V}/microvms/${all.microvmId}/shell-auth-token`, { expirationInMinutes: 5 })).status, 200);
    const closed = await run({ ingressNetworkConnectors: [managedConnectorArn('NO_INGRESS')] });
    const none = await h.api('POST', `${V}/microvms/${closed.microvmId}/auth-token`, { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] });
    assert.equal(none.status, 400);
    assert.equal(none.body.code, 'INVALID_ARGUMENT');
    await terminateAll();
  });
});

test('each caller is throttled per operation with ThrottlingException and Retry-After', { timeout: 30_000 }, async () => {
  const h = await startHarness({ apiRateScale: 1 });
  try {
    // SuspendMicrovm: the contract's own 2/s, a burst of 2 (at the default scale of 10, a loaded host spread
    // the 40 calls over more than the second it takes to refill a burst of 20, and none was throttled).
    const replies = await Promise.all(
      Array.from({ length: 40 }, () => fetch(`${h.url}${V}/microvms/mvm-nope/suspend`, { method: 'POST', headers: { authorization: `Bearer ${h.apiKey}` } })),
    );
    const statuses = replies.map((r) => r.status);
    const throttled = replies.filter((r) => r.status === 429);
    assert.ok(throttled.length > 0, `some of 40 concurrent calls were throttled: ${statuses.join(',')}`);
    assert.deepEqual(
      [...new Set(statuses)].sort((x, y) => x - y),
      [404, 429],
    );
    const first = throttled[0] as Response;
    assert.equal(first.headers.get('x-amzn-errortype'), 'ThrottlingException');
    assert.ok(Number(first.headers.get('retry-after')) >= 1);
    assert.equal(((await first.json()) as { code: string }).code, 'THROTTLED');
    // Other operations have buckets of their own.
    assert.equal((await h.api('GET', `${V}/microvms/mvm-nope`)).status, 404);
  } finally {
    await h.close();
  }
});

/** Images whose lookups take a while, as over a network: two requests are both past their first look at the clientToken before either commits. */
class SlowImages extends Images {
  override async runnable(...args: Parameters<Images['runnable']>): Promise<RunnableImage> {
    await new Promise((r) => setTimeout(r, 20));
    return super.runnable(...args);
  }
}

test('two RunMicrovm requests with one clientToken at once make one VM, and both answer it', { timeout: 30_000 }, async () => {
  const h = await startHarness({ Images: SlowImages });
  try {
    h.driver.hold('launch');
    const run = (): Promise<{ status: number; body: { microvmId?: string } }> =>
      h.api('POST', `${V}/microvms`, { imageIdentifier: 'demo', clientToken: 'once' });
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(b.body.microvmId, a.body.microvmId);
    assert.equal((await h.store.liveVms()).length, 1);
    h.driver.release('launch');
  } finally {
    await h.close();
  }
});
