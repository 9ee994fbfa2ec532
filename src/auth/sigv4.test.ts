import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import { HttpRequest } from '@smithy/core/protocols';
import { Hash } from '@smithy/core/serde';
import { SignatureV4 } from '@smithy/signature-v4';
import { isCellaError, type ErrorCode } from '../contract/index.js';
import { MAX_SKEW_MS, SigV4Verifier, type SignedRequest } from './sigv4.js';

const ID = 'CELLATESTKEY00000001';
const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
const NOW = Date.UTC(2025, 8, 9, 12, 0, 0);
const HOST = '127.0.0.1:7470';

interface Req {
  method?: string;
  target?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Signed with: */
  id?: string;
  secret?: string;
  region?: string;
  service?: string;
  at?: number;
  /** Headers the signer skips by default but should sign. */
  signable?: string[];
}

/** A request as the AWS SDK's signer signs it, then as the server receives it (lowercase headers, the target as sent). */
async function signed(r: Req = {}): Promise<SignedRequest> {
  const target = r.target ?? '/2025-09-09/microvms';
  const q = target.indexOf('?');
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(q < 0 ? '' : target.slice(q + 1))) {
    const had = query[k];
    query[k] = had === undefined ? v : [...(Array.isArray(had) ? had : [had]), v];
  }
  const body = r.body ?? '';
  const signer = new SignatureV4({
    credentials: { accessKeyId: r.id ?? ID, secretAccessKey: r.secret ?? SECRET },
    region: r.region ?? 'us-east-1',
    service: r.service ?? 'lambda',
    sha256: Hash.bind(null, 'sha256'),
  });
  const req = new HttpRequest({
    method: r.method ?? 'GET',
    protocol: 'http:',
    hostname: '127.0.0.1',
    port: 7470,
    path: q < 0 ? target : target.slice(0, q),
    query,
    headers: { host: HOST, ...(body ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}), ...r.headers },
    body,
  });
  const out = await signer.sign(req, { signingDate: new Date(r.at ?? NOW), ...(r.signable ? { signableHeaders: new Set(r.signable) } : {}) });
  const headers: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(out.headers)) headers[k.toLowerCase()] = v;
  return { method: out.method, target, headers, body: Buffer.from(body) };
}

function verifier(opts: { now?: () => number; region?: string } = {}): SigV4Verifier {
  return new SigV4Verifier({ secretOf: async (id) => (id === ID ? SECRET : undefined), region: opts.region ?? 'us-east-1', now: opts.now ?? (() => NOW) });
}

async function refused(v: SigV4Verifier, req: SignedRequest, code: ErrorCode): Promise<string> {
  let message = '';
  await assert.rejects(v.verify(req), (err: unknown) => {
    assert.ok(isCellaError(err, code), `expected ${code}, got ${String(err)}`);
    message = (err as Error).message;
    return true;
  });
  return message;
}

describe('SigV4 verification', () => {
  test('a request signed by the AWS SDK signer is accepted and names its access key', async () => {
    assert.equal(await verifier().verify(await signed()), ID);
  });

  test('canonical request: bodies, queries with repeated and encoded values, encoded path segments, folded header whitespace, headers the signer would skip', async () => {
    const v = verifier();
    const cases: Req[] = [
      { method: 'POST', body: '{"imageIdentifier":"demo","idlePolicy":{"maxIdleDurationSeconds":60}}' },
      { target: '/2025-09-09/microvms?maxResults=5&imageIdentifier=a%20b&nextToken=x%2By%3D' },
      { target: '/2025-09-09/microvm-images?b=2&a=1&a=0' },
      { target: '/2025-09-09/microvm-images/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Amicrovm-image%3Ademo' },
      { headers: { 'x-custom': '  two   spaces\tand tab  ' } },
      { headers: { 'x-amz-content-sha256': createHash('sha256').update('').digest('hex') } },
      { method: 'DELETE', target: '/2025-09-09/microvms/mvm-1' },
    ];
    for (const c of cases) assert.equal(await v.verify(await signed(c)), ID, JSON.stringify(c));
    // The SDK never signs user-agent; a client that signs it anyway is verified with it.
    const skipped = await signed({ target: '/2025-09-09/microvms/mvm-ua', headers: { 'user-agent': 'curl/8' } });
    assert.doesNotMatch(String(skipped.headers.authorization), /user-agent/);
    assert.equal(await v.verify(skipped), ID);
    const ua = await signed({ headers: { 'user-agent': 'curl/8' }, signable: ['user-agent'] });
    assert.match(String(ua.headers.authorization), /SignedHeaders=[^,]*user-agent/);
    assert.equal(await v.verify(ua), ID);
    ua.headers['user-agent'] = 'curl/9';
    await refused(verifier(), ua, 'SIGNATURE_INVALID');
  });

  test('agrees with a signature computed by hand from the SigV4 specification (not by the library under test)', async () => {
    const amzDate = '20250909T120000Z';
    const body = '{"a":1}';
    const headers = { host: HOST, 'x-amz-date': amzDate, 'content-type': 'application/json' };
    const names = Object.keys(headers).sort();
    const hex = (s: string): string => createHash('sha256').update(s).digest('hex');
    const canonical = [
      'POST',
      '/2025-09-09/microvms',
      'maxResults=5',
      ...names.map((n) => `${n}:${headers[n as keyof typeof headers]}`),
      '',
      names.join(';'),
      hex(body),
    ].join('\n');
    const scope = `20250909/us-east-1/lambda/aws4_request`;
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(canonical)].join('\n');
    const hmac = (k: Buffer | string, d: string): Buffer => createHmac('sha256', k).update(d).digest();
    const key = hmac(hmac(hmac(hmac(`AWS4${SECRET}`, '20250909'), 'us-east-1'), 'lambda'), 'aws4_request');
    const signature = hmac(key, toSign).toString('hex');
    const req: SignedRequest = {
      method: 'POST',
      target: '/2025-09-09/microvms?maxResults=5',
      headers: { ...headers, authorization: `AWS4-HMAC-SHA256 Credential=${ID}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}` },
      body: Buffer.from(body),
    };
    assert.equal(await verifier().verify(req), ID);
  });

  test('a signed header, the path, the query or the method changed after signing: SIGNATURE_INVALID', async () => {
    const v = verifier();
    const tamper: Array<(r: SignedRequest) => void> = [
      (r) => (r.headers['content-type'] = 'text/plain'),
      (r) => (r.headers.host = 'evil.example:7470'),
      (r) => (r.target = '/2025-09-09/microvms/mvm-2'),
      (r) => (r.target = '/2025-09-09/microvms?maxResults=6'),
      (r) => (r.method = 'DELETE'),
    ];
    for (const t of tamper) {
      const r = await signed({ method: 'POST', target: '/2025-09-09/microvms?maxResults=5', body: '{"imageIdentifier":"demo"}' });
      t(r);
      await refused(v, r, 'SIGNATURE_INVALID');
    }
  });

  test('a header that was not signed may change or be added', async () => {
    const r = await signed();
    r.headers['user-agent'] = 'changed';
    r.headers['x-extra'] = '1';
    assert.equal(await verifier().verify(r), ID);
  });

  test('the body changed after signing: SIGNATURE_INVALID, with or without x-amz-content-sha256', async () => {
    const v = verifier();
    const plain = await signed({ method: 'POST', body: '{"imageIdentifier":"demo"}' });
    plain.body = Buffer.from('{"imageIdentifier":"evil"}');
    await refused(v, plain, 'SIGNATURE_INVALID');
    const declared = await signed({
      method: 'POST',
      body: '{"imageIdentifier":"demo"}',
      headers: { 'x-amz-content-sha256': createHash('sha256').update('{"imageIdentifier":"demo"}').digest('hex') },
    });
    declared.body = Buffer.from('{"imageIdentifier":"evil"}');
    await refused(v, declared, 'SIGNATURE_INVALID');
    const unsigned = await signed({ method: 'POST', body: '{}', headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } });
    await refused(v, unsigned, 'SIGNATURE_INVALID');
  });

  test('the wrong secret: SIGNATURE_INVALID; an unknown access key id: UNKNOWN_ACCESS_KEY', async () => {
    await refused(verifier(), await signed({ secret: 'not-the-secret' }), 'SIGNATURE_INVALID');
    await refused(verifier(), await signed({ id: 'CELLAUNKNOWNKEY00001' }), 'UNKNOWN_ACCESS_KEY');
  });

  test('x-amz-date more than 15 minutes off either way: REQUEST_EXPIRED in the words the AWS SDK retries on; just inside is accepted', async () => {
    const v = verifier();
    const past = await refused(v, await signed({ at: NOW - MAX_SKEW_MS - 1000 }), 'REQUEST_EXPIRED');
    assert.match(past, /^Signature expired: /);
    const future = await refused(v, await signed({ at: NOW + MAX_SKEW_MS + 1000 }), 'REQUEST_EXPIRED');
    assert.match(future, /^Signature not yet current: /);
    assert.equal(await v.verify(await signed({ at: NOW - MAX_SKEW_MS + 1000 })), ID);
    assert.equal(await v.verify(await signed({ at: NOW + MAX_SKEW_MS - 1000 })), ID);
  });

  test('the same signed request twice: the second is SIGNATURE_REPLAYED; a refused one is not remembered', async () => {
    const v = verifier();
    const r = await signed({ method: 'POST', body: '{}' });
    assert.equal(await v.verify(r), ID);
    await refused(v, r, 'SIGNATURE_REPLAYED');
    const bad = await signed({ at: NOW + 1000 });
    const good = { ...bad, headers: { ...bad.headers } };
    bad.headers.host = 'evil';
    await refused(v, bad, 'SIGNATURE_INVALID');
    assert.equal(await v.verify(good), ID);
  });

  test('a credential scope of another region, service or day: SIGNATURE_INVALID', async () => {
    await refused(verifier(), await signed({ region: 'eu-west-1' }), 'SIGNATURE_INVALID');
    await refused(verifier(), await signed({ service: 's3' }), 'SIGNATURE_INVALID');
    assert.equal(await verifier({ region: 'eu-west-1' }).verify(await signed({ region: 'eu-west-1' })), ID);
    const r = await signed();
    r.headers.authorization = String(r.headers.authorization).replace('/20250909/', '/20250908/');
    await refused(verifier(), r, 'SIGNATURE_INVALID');
  });

  test('malformed or incomplete: SIGNATURE_MALFORMED', async () => {
    const v = verifier();
    const base = await signed();
    const auth = String(base.headers.authorization);
    const variants: Array<Partial<SignedRequest> & { auth?: string; drop?: string }> = [
      { auth: auth.replace(/, Signature=[0-9a-f]+/, '') },
      { auth: auth.replace(/SignedHeaders=[^,]+, /, '') },
      { auth: auth.replace(/Credential=[^,]+, /, '') },
      { auth: auth.replace(/Signature=[0-9a-f]+/, 'Signature=xyz') },
      { auth: auth.replace('/aws4_request', '/aws5_request') },
      { auth: auth.replace(/Credential=\w+\//, 'Credential=') },
      { auth: auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=x-amz-date') },
      { auth: auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=host') },
      { auth: auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=Host;x-amz-date') },
      { auth: auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=host;x-amz-date;x-missing') },
      { auth: 'AWS4-HMAC-SHA256 ' },
      { drop: 'x-amz-date' },
      { headers: { ...base.headers, 'x-amz-date': '20251399T250000Z' } },
      { headers: { ...base.headers, 'x-amz-date': 'yesterday' } },
      { target: '/2025-09-09/microvms?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00', auth: '' },
    ];
    for (const [i, x] of variants.entries()) {
      const r: SignedRequest = { ...base, ...x, headers: { ...(x.headers ?? base.headers) } };
      if (x.auth !== undefined) r.headers.authorization = x.auth || undefined;
      if (x.drop) delete r.headers[x.drop];
      await refused(v, r, 'SIGNATURE_MALFORMED').catch((err: Error) => assert.fail(`variant ${i}: ${err.message}`));
    }
  });
});
