/**
 * SigV4 verification of `Authorization: AWS4-HMAC-SHA256 ...` requests, as
 * AWS checks them: the header's parts, `x-amz-date` within 15 minutes of
 * the server's clock, a credential scope of the server's region and the
 * `lambda` signing name, a known access key, the payload hash of the body
 * actually received, then the signature itself, recomputed with
 * @smithy/signature-v4 (the AWS SDK's own signer) over a request rebuilt
 * from the signed headers, and compared in constant time. A signature is
 * served once (./replay.ts).
 *
 * Presigned (query-string) requests are refused: no AWS SDK call of this
 * API presigns.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { HttpRequest } from '@smithy/core/protocols';
import { Hash } from '@smithy/core/serde';
import { SignatureV4 } from '@smithy/signature-v4';
import { CellaError } from '../contract/index.js';
import { ReplayGuard } from './replay.js';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
/** The signing name the AWS SDK's Lambda MicroVMs client signs with. */
export const SIGNING_SERVICE = 'lambda';
/** How far `x-amz-date` may be from the server's clock, either way (AWS's limit). */
export const MAX_SKEW_MS = 15 * 60_000;
/** Signatures remembered for replay protection at most (about 150 bytes each). */
const MAX_REMEMBERED = 100_000;

const Sha256 = Hash.bind(null, 'sha256');
const AMZ_DATE = /^(\d{8})T\d{6}Z$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** What a verifier needs of a request: the target as sent, the headers as received, the whole body. */
export interface SignedRequest {
  method: string;
  /** Path and query, as on the request line. */
  target: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface SigV4Options {
  /** The secret of an access key id, or undefined if the id is unknown (or revoked). */
  secretOf: (accessKeyId: string) => Promise<string | undefined>;
  /** The only region a credential scope may name. */
  region: string;
  now?: () => number;
}

interface Parsed {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

/** Whether a request carries SigV4 (in its Authorization header, or presigned in its query). */
export function isSigV4(authorization: string | undefined, target: string): boolean {
  return authorization?.startsWith(`${SIGV4_ALGORITHM} `) === true || /[?&]x-amz-(signature|algorithm)=/i.test(target);
}

export class SigV4Verifier {
  private readonly replay = new ReplayGuard(MAX_SKEW_MS, MAX_REMEMBERED);
  private readonly now: () => number;

  constructor(private readonly opts: SigV4Options) {
    this.now = opts.now ?? Date.now;
  }

  /** Checks a signed request; returns its access key id, or throws the contract's error. */
  async verify(req: SignedRequest): Promise<string> {
    const authorization = header(req.headers, 'authorization');
    if (!authorization?.startsWith(`${SIGV4_ALGORITHM} `)) {
      throw new CellaError('SIGNATURE_MALFORMED', 'query-string (presigned) SigV4 is not supported: sign the Authorization header');
    }
    const p = parseAuthorization(authorization);
    const amzDate = header(req.headers, 'x-amz-date');
    const day = amzDate && AMZ_DATE.exec(amzDate)?.[1];
    if (!amzDate || !day) throw new CellaError('SIGNATURE_MALFORMED', 'a SigV4 request needs an x-amz-date header (YYYYMMDDTHHMMSSZ)');
    for (const required of ['host', 'x-amz-date']) {
      if (!p.signedHeaders.includes(required)) throw new CellaError('SIGNATURE_MALFORMED', `SignedHeaders must include ${required}`);
    }
    for (const h of p.signedHeaders) {
      if (req.headers[h] === undefined) throw new CellaError('SIGNATURE_MALFORMED', `signed header ${h} is not in the request`);
    }
    const signedAt = parseAmzDate(amzDate);
    this.checkSkew(amzDate, signedAt);
    if (p.date !== day) throw new CellaError('SIGNATURE_INVALID', `the credential scope's date ${p.date} is not the date of x-amz-date ${amzDate}`);
    if (p.service !== SIGNING_SERVICE)
      throw new CellaError('SIGNATURE_INVALID', `Credential should be scoped to correct service: '${SIGNING_SERVICE}', not '${p.service}'`);
    if (p.region !== this.opts.region) {
      throw new CellaError(
        'SIGNATURE_INVALID',
        `Credential should be scoped to a valid region: this server is ${this.opts.region}, not ${p.region} (set the SDK's region, or cella server --region)`,
      );
    }
    const secret = await this.opts.secretOf(p.accessKeyId);
    if (secret === undefined)
      throw new CellaError('UNKNOWN_ACCESS_KEY', `The security token included in the request is invalid: access key ${p.accessKeyId} is not known`);
    const payloadHash = createHash('sha256').update(req.body).digest('hex');
    const declared = header(req.headers, 'x-amz-content-sha256');
    if (declared !== undefined && declared !== payloadHash) {
      throw new CellaError('SIGNATURE_INVALID', 'x-amz-content-sha256 is not the SHA-256 of the body received');
    }
    const expected = await expectedSignature(req, p, secret, new Date(signedAt));
    const given = Buffer.from(p.signature, 'hex');
    if (!timingSafeEqual(expected, given)) {
      throw new CellaError(
        'SIGNATURE_INVALID',
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
      );
    }
    const claim = this.replay.claim(p.signature, signedAt, this.now());
    if (claim === 'replayed') throw new CellaError('SIGNATURE_REPLAYED', 'this signed request was already served: sign each request anew');
    if (claim === 'forgotten')
      throw new CellaError(
        'REQUEST_EXPIRED',
        `the request was signed at ${amzDate}, before what this server still remembers for replay protection: sign it again`,
      );
    return p.accessKeyId;
  }

  /** AWS's wording: the AWS SDK recognises "Signature expired" and retries with its clock corrected. */
  private checkSkew(amzDate: string, signedAt: number): void {
    const now = this.now();
    if (signedAt < now - MAX_SKEW_MS) {
      throw new CellaError(
        'REQUEST_EXPIRED',
        `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(now - MAX_SKEW_MS)} (${formatAmzDate(now)} - 15 min.)`,
      );
    }
    if (signedAt > now + MAX_SKEW_MS) {
      throw new CellaError(
        'REQUEST_EXPIRED',
        `Signature not yet current: ${amzDate} is still later than ${formatAmzDate(now + MAX_SKEW_MS)} (${formatAmzDate(now)} + 15 min.)`,
      );
    }
  }
}

/** `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=<hex>`. */
export function parseAuthorization(value: string): Parsed {
  const parts = new Map<string, string>();
  for (const item of value.slice(SIGV4_ALGORITHM.length + 1).split(',')) {
    const eq = item.indexOf('=');
    if (eq > 0) parts.set(item.slice(0, eq).trim(), item.slice(eq + 1).trim());
  }
  const credential = parts.get('Credential');
  const signedHeaders = parts.get('SignedHeaders');
  const signature = parts.get('Signature');
  const missing = [credential ? '' : 'Credential', signedHeaders ? '' : 'SignedHeaders', signature ? '' : 'Signature'].filter(Boolean);
  if (missing.length) throw new CellaError('SIGNATURE_MALFORMED', `the Authorization header lacks ${missing.join(', ')}`);
  const scope = (credential as string).split('/');
  if (scope.length !== 5 || scope.some((s) => s === '') || scope[4] !== 'aws4_request' || !/^\d{8}$/.test(scope[1] as string)) {
    throw new CellaError('SIGNATURE_MALFORMED', 'Credential must be <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request');
  }
  if (!HEX64.test(signature as string)) throw new CellaError('SIGNATURE_MALFORMED', 'Signature must be 64 lowercase hex digits');
  const names = (signedHeaders as string).split(';');
  if (names.some((n) => n === '' || n !== n.toLowerCase()))
    throw new CellaError('SIGNATURE_MALFORMED', 'SignedHeaders must be lowercase header names separated by ;');
  const [accessKeyId, date, region, service] = scope as [string, string, string, string, string];
  return { accessKeyId, date, region, service, signedHeaders: names, signature: signature as string };
}

/** The signature the client should have sent: the request rebuilt with only its signed headers, signed with the key's secret. */
async function expectedSignature(req: SignedRequest, p: Parsed, secret: string, signingDate: Date): Promise<Buffer> {
  const q = req.target.indexOf('?');
  const path = q < 0 ? req.target : req.target.slice(0, q);
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(q < 0 ? '' : req.target.slice(q + 1))) {
    const had = query[k];
    query[k] = had === undefined ? v : [...(Array.isArray(had) ? had : [had]), v];
  }
  const headers: Record<string, string> = {};
  for (const h of p.signedHeaders) headers[h] = header(req.headers, h) as string;
  const signer = new SignatureV4({
    credentials: { accessKeyId: p.accessKeyId, secretAccessKey: secret },
    region: p.region,
    service: p.service,
    sha256: Sha256,
    applyChecksum: false,
  });
  const signed = await signer.sign(
    new HttpRequest({ method: req.method, protocol: 'http:', hostname: headers.host ?? '', path, query, headers, body: req.body }),
    {
      signingDate,
      signableHeaders: new Set(p.signedHeaders),
    },
  );
  const m = /Signature=([0-9a-f]{64})$/.exec(String(signed.headers.authorization));
  return Buffer.from(m?.[1] ?? '', 'hex');
}

/** One header's value; repeated ones joined with commas, as SigV4's canonical form has them. */
function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** Milliseconds since the epoch; a date that does not exist (month 13, 25:00) is malformed. */
function parseAmzDate(s: string): number {
  const ms = Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), +s.slice(9, 11), +s.slice(11, 13), +s.slice(13, 15));
  if (Number.isNaN(ms) || formatAmzDate(ms) !== s) throw new CellaError('SIGNATURE_MALFORMED', `x-amz-date ${s} is not a valid time`);
  return ms;
}

export function formatAmzDate(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}
