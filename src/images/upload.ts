/** UploadCodeArtifact: a zip streamed to the server's artifact store. */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { zipEntryCount } from '../archive/index.js';
import { CellaError } from '../contract/index.js';

export interface Upload {
  uri: string;
  sizeInBytes: number;
  sha256: string;
}

/**
 * Streams an uploaded zip into `dir`; it is named by its content, so the
 * same upload twice is one file. Refuses more than `maxBytes`, an empty
 * body and a zip with no files; what it refuses leaves nothing behind.
 */
export async function storeUpload(dir: string, req: IncomingMessage, maxBytes: number): Promise<Upload> {
  mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.upload-${randomUUID()}`);
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) {
        done(new CellaError('PAYLOAD_TOO_LARGE', `the upload exceeds ${maxBytes} bytes`));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(req, meter, createWriteStream(tmp));
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  const empty =
    bytes === 0
      ? 'the upload is empty: send the zip as the request body'
      : (await zipEntryCount(tmp)) === 0
        ? 'the uploaded zip has no files in it'
        : undefined;
  if (empty) {
    rmSync(tmp, { force: true });
    throw new CellaError('INVALID_ARGUMENT', empty);
  }
  const sha256 = hash.digest('hex');
  const file = path.join(dir, `${sha256}.zip`);
  if (existsSync(file)) rmSync(tmp, { force: true });
  else renameSync(tmp, file);
  return { uri: `file://${file}`, sizeInBytes: bytes, sha256 };
}
