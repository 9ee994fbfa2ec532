/**
 * SigV4 against a real cellad on port 0, signed by the official AWS SDK
 * (@aws-sdk/client-lambda-microvms) and by its signer for raw requests.
 * No VM is booted: the operations used fail or list before any launch.
 * Each refused request is checked to have changed nothing.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  AccessDeniedException,
  GetMicrovmCommand,
  LambdaMicrovmsClient,
  LambdaMicrovmsServiceException,
  ListMicrovmsCommand,
  ResourceNotFoundException,
  RunMicrovmCommand,
} from '@aws-sdk/client-lambda-microvms';
import { Hash } from '@smithy/core/serde';
import { HttpRequest } from '@smithy/core/protocols';
import { SignatureV4 } from '@smithy/signature-v4';
import { startServer, type CellaServer } from '../src/server/index.js';
import { API_KEY, V, api } from './control-helpers.js';
import { type ApiAnswer, sendAsIs } from './fixtures/raw-http.js';
import { tempDataDir } from './helpers.js';

type Pair = { accessKeyId: string; secretAccessKey: string };
type Tamper = (req: { headers: Record<string, string>; body?: unknown }) => void;

describe('SigV4 with the AWS SDK (no VM)', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let key: Pair;

  const start = (): Promise<CellaServer> =>
    startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: false, apiRateScale: 0, log: () => {} });

  before(async () => {
    delete process.env.CELLA_ACCESS_KEY_ID;
    delete process.env.CELLA_SECRET_ACCESS_KEY;
    dir = tempDataDir('sigv4');
    server = await start();
    assert.ok(server.newAccessKey, 'the first start makes an access key');
    key = server.newAccessKey;
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The SDK as a user configures it; `tamper` edits the request after it was signed. */
  const sdk = (opts: { credentials?: Pair; region?: string; clockOffsetMs?: number; maxAttempts?: number; tamper?: Tamper } = {}): LambdaMicrovmsClient => {
    const c = new LambdaMicrovmsClient({
      endpoint: server.url,
      region: opts.region ?? 'us-east-1',
      credentials: opts.credentials ?? key,
      maxAttempts: opts.maxAttempts ?? 1,
      ...(opts.clockOffsetMs !== undefined ? { systemClockOffset: opts.clockOffsetMs } : {}),
    });
    const tamper = opts.tamper;
    if (tamper) {
      c.middlewareStack.add(
        (next) => async (args) => {
          tamper((args as { request: { headers: Record<string, string>; body?: unknown } }).request);
          return next(args);
        },
        // Low in finalizeRequest: after the signer.
        { step: 'finalizeRequest', priority: 'low', name: 'tamperAfterSigning' },
      );
    }
    return c;
  };

  /** What the SDK throws for a call: its name, status and the Cella code in the body. */
  const thrown = async (p: Promise<unknown>): Promise<LambdaMicrovmsServiceException & { code?: string }> => {
    try {
      await p;
    } catch (err) {
      assert.ok(err instanceof LambdaMicrovmsServiceException, `an SDK service exception, not ${String(err)}`);
      return err;
    }
    return assert.fail('the call succeeded');
  };

  const expectRefused = async (p: Promise<unknown>, name: string, status: number, code: string): Promise<LambdaMicrovmsServiceException> => {
    const e = await thrown(p);
    assert.equal(e.name, name, e.message);
    assert.equal(e.$metadata.httpStatusCode, status);
    assert.equal(e.code, code);
    return e;
  };

  const vmCount = async (): Promise<number> => (await server.store.listVms({ limit: 1000 })).length;
  const keyCount = async (): Promise<number> => (await server.store.listAccessKeys()).length;

  /** A raw request signed with the SDK's signer, and sent as signed unless edited in between. */
  const signRaw = async (
    method: string,
    path: string,
    body = '',
    opts: { credentials?: Pair; at?: Date } = {},
  ): Promise<{ method: string; path: string; headers: Record<string, string>; body: string }> => {
    const signer = new SignatureV4({ credentials: opts.credentials ?? key, region: 'us-east-1', service: 'lambda', sha256: Hash.bind(null, 'sha256') });
    const host = `127.0.0.1:${server.port}`;
    const headers: Record<string, string> = {
      host,
      ...(body ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}),
    };
    const signed = await signer.sign(
      new HttpRequest({ method, protocol: 'http:', hostname: '127.0.0.1', port: server.port, path, headers, body }),
      opts.at ? { signingDate: opts.at } : {},
    );
    return { method, path, headers: signed.headers, body };
  };
  const send = (r: { method: string; path: string; headers: Record<string, string>; body: string }): Promise<ApiAnswer> =>
    sendAsIs(server.port, { method: r.method, path: r.path, headers: r.headers, ...(r.body ? { body: r.body } : {}) });

  test('the SDK, signing with the first-start key, lists MicroVMs and gets typed errors (ResourceNotFoundException)', { timeout: 30_000 }, async () => {
    const c = sdk();
    const list = await c.send(new ListMicrovmsCommand({}));
    assert.equal(list.$metadata.httpStatusCode, 200);
    assert.deepEqual(list.items, []);
    const e = await thrown(c.send(new GetMicrovmCommand({ microvmIdentifier: 'mvm-unknown' })));
    assert.ok(e instanceof ResourceNotFoundException);
    assert.equal(e.$metadata.httpStatusCode, 404);
    assert.equal(e.resourceId, 'mvm-unknown');
  });

  test('the Bearer API key keeps working beside SigV4', { timeout: 30_000 }, async () => {
    const r = await api(server.url, 'GET', `${V}/microvms`);
    assert.equal(r.status, 200);
  });

  test('wrong secret: InvalidSignatureException 403 (SIGNATURE_INVALID); RunMicrovm makes no VM', { timeout: 30_000 }, async () => {
    const c = sdk({ credentials: { accessKeyId: key.accessKeyId, secretAccessKey: 'not-the-secret-0000000000000000000000000' } });
    await expectRefused(c.send(new ListMicrovmsCommand({})), 'InvalidSignatureException', 403, 'SIGNATURE_INVALID');
    await expectRefused(c.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'InvalidSignatureException', 403, 'SIGNATURE_INVALID');
    assert.equal(await vmCount(), 0);
  });

  test('unknown access key id: UnrecognizedClientException 403 (UNKNOWN_ACCESS_KEY)', { timeout: 30_000 }, async () => {
    const c = sdk({ credentials: { accessKeyId: 'CELLAAAAAAAAAAAAAAAA', secretAccessKey: key.secretAccessKey } });
    await expectRefused(c.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'UnrecognizedClientException', 403, 'UNKNOWN_ACCESS_KEY');
    assert.equal(await vmCount(), 0);
  });

  test(
    'a clock an hour off: InvalidSignatureException "Signature expired" (REQUEST_EXPIRED); with retries the SDK corrects its clock from Date and succeeds',
    { timeout: 30_000 },
    async () => {
      for (const offset of [-3_600_000, 3_600_000]) {
        const e = await expectRefused(
          sdk({ clockOffsetMs: offset }).send(new RunMicrovmCommand({ imageIdentifier: 'nope' })),
          'InvalidSignatureException',
          403,
          'REQUEST_EXPIRED',
        );
        assert.match(e.message, offset < 0 ? /^Signature expired: / : /^Signature not yet current: /);
      }
      assert.equal(await vmCount(), 0);
      const r = await sdk({ clockOffsetMs: -3_600_000, maxAttempts: 3 }).send(new ListMicrovmsCommand({}));
      assert.equal(r.$metadata.httpStatusCode, 200);
      assert.equal(r.$metadata.attempts, 2);
    },
  );

  test('a tampered body or signed header: InvalidSignatureException (SIGNATURE_INVALID), and nothing is made', { timeout: 30_000 }, async () => {
    const body = sdk({
      tamper: (req) => {
        // Same length, so content-length (signed too) still holds: only the signature can tell.
        req.body = String(req.body).replace('"nope"', '"nop2"');
      },
    });
    await expectRefused(body.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'InvalidSignatureException', 403, 'SIGNATURE_INVALID');
    const header = sdk({ tamper: (req) => (req.headers['amz-sdk-invocation-id'] = 'another') });
    await expectRefused(header.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'InvalidSignatureException', 403, 'SIGNATURE_INVALID');
    assert.equal(await vmCount(), 0);
    // A Cella operation that would make something: a tampered CreateAccessKey makes no key.
    const before = await keyCount();
    const r = await signRaw('POST', '/cella/v1/access-keys', '{}');
    r.headers.host = `localhost:${server.port}`;
    const a = await send(r);
    assert.equal(a.status, 403);
    assert.equal(a.body.code, 'SIGNATURE_INVALID');
    assert.equal(await keyCount(), before);
  });

  test(
    'no signature: AccessDeniedException 401 (UNAUTHENTICATED); a signature cut off: IncompleteSignatureException 400 (SIGNATURE_MALFORMED)',
    { timeout: 30_000 },
    async () => {
      const none = sdk({ tamper: (req) => delete req.headers.authorization });
      const e = await expectRefused(none.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'AccessDeniedException', 401, 'UNAUTHENTICATED');
      assert.ok(e instanceof AccessDeniedException, 'the modeled class');
      const cut = sdk({ tamper: (req) => (req.headers.authorization = String(req.headers.authorization).replace(/, Signature=\w+/, '')) });
      await expectRefused(cut.send(new RunMicrovmCommand({ imageIdentifier: 'nope' })), 'IncompleteSignatureException', 400, 'SIGNATURE_MALFORMED');
      assert.equal(await vmCount(), 0);
    },
  );

  test('the same signed request sent twice: served once, then InvalidSignatureException (SIGNATURE_REPLAYED)', { timeout: 30_000 }, async () => {
    const before = await keyCount();
    const r = await signRaw('POST', '/cella/v1/access-keys', '{}');
    const first = await send(r);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await send(r);
    assert.equal(again.status, 403);
    assert.equal(again.type, 'InvalidSignatureException');
    assert.equal(again.body.code, 'SIGNATURE_REPLAYED');
    assert.equal(await keyCount(), before + 1);
  });

  test('presigned (query-string) requests and SigV4 uploads are refused with SIGNATURE_MALFORMED', { timeout: 30_000 }, async () => {
    const presigned = await send({ method: 'GET', path: `${V}/microvms?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00`, headers: {}, body: '' });
    assert.equal(presigned.status, 400);
    assert.equal(presigned.body.code, 'SIGNATURE_MALFORMED');
    const upload = await signRaw('POST', '/cella/v1/code-artifacts', 'PK');
    const a = await send(upload);
    assert.equal(a.status, 400);
    assert.equal(a.body.code, 'SIGNATURE_MALFORMED');
  });

  test('access keys: create (Bearer), sign with it, revoke; the revoked key is UnrecognizedClientException', { timeout: 30_000 }, async () => {
    const made = await api<Pair & { createdAt: string }>(server.url, 'POST', '/cella/v1/access-keys');
    assert.equal(made.status, 200);
    assert.match(made.body.accessKeyId, /^CELLA[A-Z2-7]{16}$/);
    const listed = await api<{ items: Array<{ accessKeyId: string; secretAccessKey?: string }> }>(server.url, 'GET', '/cella/v1/access-keys');
    assert.ok(listed.body.items.some((k) => k.accessKeyId === made.body.accessKeyId));
    assert.ok(
      listed.body.items.every((k) => k.secretAccessKey === undefined),
      'secrets are never listed',
    );
    const c = sdk({ credentials: { accessKeyId: made.body.accessKeyId, secretAccessKey: made.body.secretAccessKey } });
    assert.equal((await c.send(new ListMicrovmsCommand({}))).$metadata.httpStatusCode, 200);
    assert.equal((await api(server.url, 'DELETE', `/cella/v1/access-keys/${made.body.accessKeyId}`)).status, 200);
    await expectRefused(c.send(new ListMicrovmsCommand({})), 'UnrecognizedClientException', 403, 'UNKNOWN_ACCESS_KEY');
    const again = await api<{ code: string }>(server.url, 'DELETE', `/cella/v1/access-keys/${made.body.accessKeyId}`);
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 'NOT_FOUND');
  });

  test('a credential scope of another region than the server is refused; GetServerInfo names the region', { timeout: 30_000 }, async () => {
    await expectRefused(sdk({ region: 'eu-west-1' }).send(new ListMicrovmsCommand({})), 'InvalidSignatureException', 403, 'SIGNATURE_INVALID');
    const info = await api<{ region: string }>(server.url, 'GET', '/cella/v1/info');
    assert.equal(info.body.region, 'us-east-1');
  });

  test('after a restart the stored key still verifies (its secret was sealed in the store) and no new key is made', { timeout: 60_000 }, async () => {
    await server.close();
    server = await start();
    assert.equal(server.newAccessKey, undefined);
    assert.equal((await sdk().send(new ListMicrovmsCommand({}))).$metadata.httpStatusCode, 200);
  });
});
