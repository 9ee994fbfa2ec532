import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { BuildFailure, CellaError, type BuildFailureReason } from '../contract/index.js';

/** Where `s3://` artifacts are read from (`cella server --s3-endpoint ...`). */
export interface S3Settings {
  endpoint: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Bucket in the path rather than the host name; default true, as self-hosted S3 servers expect. */
  forcePathStyle?: boolean;
}

export const DEFAULT_MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;

type ArtifactLocation = { scheme: 'file'; path: string } | { scheme: 's3'; bucket: string; key: string };

const S3_URI = /^s3:\/\/([^/]+)\/(.+)$/;
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const URI_SHAPES = 's3://bucket/key or file:///absolute/path.zip';

/** Throws INVALID_ARGUMENT unless `uri` is a code artifact URI Cella can fetch; for request validation. */
export function validateArtifactUri(uri: string): void {
  parseArtifactUri(uri);
}

function parseArtifactUri(uri: string): ArtifactLocation {
  const bad = (why: string) => new CellaError('INVALID_ARGUMENT', `invalid code artifact URI ${JSON.stringify(uri)}: ${why}`);
  if (uri.startsWith('file:')) {
    if (!uri.startsWith('file:///')) throw bad('a file URI names an absolute path, file:///path/to/code.zip');
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      throw bad('it is not a valid URL');
    }
    if (url.search !== '' || url.hash !== '') throw bad('a file URI has no query or fragment');
    try {
      return { scheme: 'file', path: fileURLToPath(url) };
    } catch (err) {
      throw bad((err as Error).message);
    }
  }
  if (uri.startsWith('s3:')) {
    const match = S3_URI.exec(uri);
    if (!match) throw bad('an S3 URI is s3://bucket/key');
    const [, bucket = '', key = ''] = match;
    if (!BUCKET_NAME.test(bucket)) throw bad(`${JSON.stringify(bucket)} is not a valid bucket name`);
    return { scheme: 's3', bucket, key };
  }
  throw bad(`expected ${URI_SHAPES}`);
}

/**
 * Copies the code artifact at `uri` to `destFile`, streaming and hashing it,
 * and refusing one over `maxBytes`. Failures are BuildFailures with the
 * contract's reasons; a malformed URI is INVALID_ARGUMENT.
 */
export async function fetchArtifact(
  uri: string,
  destFile: string,
  opts: { s3?: S3Settings; maxBytes?: number } = {},
): Promise<{ bytes: number; sha256: string }> {
  const location = parseArtifactUri(uri);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_ARTIFACT_BYTES;
  const tooLarge = () => new BuildFailure('ARCHIVE_INVALID', `the code artifact ${uri} is larger than ${maxBytes} bytes`);
  if (location.scheme === 'file') {
    return save(await openFile(uri, location.path, maxBytes, tooLarge), destFile, maxBytes, tooLarge);
  }
  if (!opts.s3) throw new BuildFailure('S3_ACCESS_DENIED', 'no S3 endpoint is configured (cella server --s3-endpoint ...)');
  const client = s3Client(opts.s3);
  try {
    return await save(await openS3Object(client, uri, location, maxBytes, tooLarge), destFile, maxBytes, tooLarge);
  } finally {
    client.destroy();
  }
}

async function openFile(uri: string, file: string, maxBytes: number, tooLarge: () => BuildFailure): Promise<Readable> {
  const info = await stat(file).catch(() => null);
  if (info === null) throw new BuildFailure('ARCHIVE_INVALID', `the code artifact ${uri} does not exist`);
  if (!info.isFile()) throw new BuildFailure('ARCHIVE_INVALID', `the code artifact ${uri} is not a regular file`);
  if (info.size > maxBytes) throw tooLarge();
  return createReadStream(file);
}

function s3Client(settings: S3Settings): S3Client {
  const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = settings;
  return new S3Client({
    endpoint,
    region: region ?? 'us-east-1',
    forcePathStyle: forcePathStyle ?? true,
    // Without keys the SDK's default chain applies (environment, profile, instance role).
    ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey } } : {}),
  });
}

async function openS3Object(
  client: S3Client,
  uri: string,
  location: { bucket: string; key: string },
  maxBytes: number,
  tooLarge: () => BuildFailure,
): Promise<Readable> {
  let body: unknown;
  let length: number | undefined;
  try {
    ({ Body: body, ContentLength: length } = await client.send(new GetObjectCommand({ Bucket: location.bucket, Key: location.key })));
  } catch (err) {
    throw s3Failure(uri, err);
  }
  // On Node the SDK's body is an IncomingMessage.
  if (!(body instanceof Readable)) throw new BuildFailure('S3_INVALID_OBJECT', `the S3 object ${uri} has no readable body`);
  if (length !== undefined && length > maxBytes) {
    body.destroy();
    throw tooLarge();
  }
  return body;
}

/** S3 error names, as the SDK reports them, to the contract's build failure reasons. */
const S3_REASONS: Record<string, BuildFailureReason> = {
  NoSuchKey: 'S3_NO_SUCH_KEY',
  NoSuchBucket: 'S3_NO_SUCH_BUCKET',
  AccessDenied: 'S3_ACCESS_DENIED',
  InvalidAccessKeyId: 'S3_ACCESS_DENIED',
  SignatureDoesNotMatch: 'S3_ACCESS_DENIED',
  // No credentials anywhere in the SDK's default chain.
  CredentialsProviderError: 'S3_ACCESS_DENIED',
  InvalidObjectState: 'S3_INVALID_OBJECT',
  // The bucket lives in another region than the one configured.
  PermanentRedirect: 'S3_CROSS_REGION_ACCESS_DENIED',
  AuthorizationHeaderMalformed: 'S3_CROSS_REGION_ACCESS_DENIED',
};

function s3Failure(uri: string, err: unknown): BuildFailure {
  const { name, message } = err as Error;
  const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
  const reason = S3_REASONS[name] ?? (status === 403 ? 'S3_ACCESS_DENIED' : 'INTERNAL_PLATFORM_ERROR');
  return new BuildFailure(reason, `fetching ${uri} from S3: ${name}: ${message}`);
}

/** Writes the stream to `destFile` (removed again on failure), counting and hashing what passes. */
async function save(source: Readable, destFile: string, maxBytes: number, tooLarge: () => BuildFailure): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      if (bytes > maxBytes) return callback(tooLarge());
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(source, meter, createWriteStream(destFile));
  } catch (err) {
    await rm(destFile, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new BuildFailure('DISK_STORAGE_FULL', `saving the code artifact: ${(err as Error).message}`);
    }
    throw err;
  }
  return { bytes, sha256: hash.digest('hex') };
}
