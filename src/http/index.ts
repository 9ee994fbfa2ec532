/**
 * What every JSON API on the API port (the contract's, the E2B facade's)
 * does with a request body and an answer: read the body within a limit,
 * parse it as JSON, check it against its schema, and write a JSON answer.
 * Each failure is a CellaError with the code its API renders.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TypeCheck } from '@sinclair/typebox/compiler';
import type { Static, TSchema } from '@sinclair/typebox';
import { CellaError } from '../contract/index.js';

/**
 * The whole body, or PAYLOAD_TOO_LARGE once it declares or sends more than
 * `maxBytes`; what the client goes on sending is read and dropped, so it
 * gets the answer rather than a reset.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBytes) {
      req.resume();
      reject(new CellaError('PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds ${maxBytes}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.removeAllListeners('data');
        req.resume();
        reject(new CellaError('PAYLOAD_TOO_LARGE', `request body exceeds ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** An empty body is `{}`: an operation whose members are all optional may be sent none. */
export function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new CellaError('MALFORMED_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** `value` as its schema's type, or INVALID_ARGUMENT naming the first member at fault (`where`: body, query). */
export function validate<T extends TSchema>(check: TypeCheck<T>, value: unknown, where: string): Static<T> {
  if (check.Check(value)) return value;
  const first = check.Errors(value).First();
  const at = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : where;
  throw new CellaError('INVALID_ARGUMENT', `${where === 'body' ? '' : `${where} `}${at || where}: ${first?.message ?? 'invalid value'}`);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value));
}
