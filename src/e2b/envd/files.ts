/**
 * envd's `/files`: GET downloads a file (gzip when the client accepts it;
 * an empty file is `Content-Length: 0`, which the SDK checks), POST uploads
 * one or more (multipart/form-data, or application/octet-stream with an
 * optional gzip Content-Encoding) with `X-Metadata-<key>` headers kept as
 * the file's metadata, as the SDK's files.read/write call them. Errors are
 * envd's JSON `{code, message}` with its statuses (404, 400, 401, 406, 507).
 */
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import busboy from 'busboy';
import { Code, ConnectError } from '@connectrpc/connect';
import { isCellaError } from '../../contract/index.js';
import type { UserInfo } from '../../agent/index.js';
import { resolveUser, toConnectError, userPath, type EnvdRequest, type EnvdResponse, type Sandbox } from './context.js';

const STATUS: Partial<Record<Code, number>> = {
  [Code.NotFound]: 404,
  [Code.InvalidArgument]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.AlreadyExists]: 409,
  [Code.ResourceExhausted]: 507,
  [Code.Unimplemented]: 501,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: EnvdResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function httpErrorOf(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const c = toConnectError(err);
  return new HttpError(STATUS[c.code] ?? 500, c.rawMessage);
}

async function user(sb: Sandbox, url: URL): Promise<UserInfo> {
  return resolveUser(sb, url.searchParams.get('username') || undefined);
}

/** The q of each coding an Accept-Encoding header names (RFC 9110 §12.5.3). */
function acceptedCodings(header: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const part of header.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    if (!name) continue;
    const q = params.map((x) => /^\s*q=([\d.]+)\s*$/.exec(x)?.[1]).find((x) => x !== undefined);
    out.set(name, q === undefined ? 1 : Number(q));
  }
  return out;
}

/** gzip when the client takes it, identity when it does not refuse it; otherwise 406, as envd. */
export function responseEncoding(header: string | undefined): 'gzip' | 'identity' {
  if (!header?.trim()) return 'identity';
  const codings = acceptedCodings(header);
  const star = codings.get('*');
  if ((codings.get('gzip') ?? star ?? 0) > 0) return 'gzip';
  if ((codings.get('identity') ?? star ?? 1) > 0) return 'identity';
  throw new HttpError(406, `none of the encodings accepted (${header}) is served: gzip or identity`);
}

/** `X-Metadata-<key>: value` headers as the file's metadata (keys in lower case, as Node gives header names). */
export function metadataOf(headers: EnvdRequest['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (k.startsWith('x-metadata-') && k.length > 11 && v !== undefined) out[k.slice(11)] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

async function download(sb: Sandbox, url: URL, req: EnvdRequest, res: EnvdResponse): Promise<void> {
  const encoding = responseEncoding(req.headers['accept-encoding']);
  const u = await user(sb, url);
  const raw = url.searchParams.get('path');
  if (!raw) throw new HttpError(400, 'path is required');
  const p = userPath(raw, u);
  const e = await sb.agent.fs.stat(p).catch((err: unknown) => {
    const h = httpErrorOf(err);
    throw h.status === 404 ? new HttpError(404, `path '${p}' does not exist`) : h;
  });
  if ((e.targetType ?? e.type) === 'directory') throw new HttpError(400, `path '${p}' is a directory`);
  const { size, stream } = await sb.agent.fs.read(p);
  const headers = { 'content-type': 'application/octet-stream', 'content-disposition': `inline; filename=${JSON.stringify(path.posix.basename(p))}` };
  stream.on('error', () => res.destroy());
  // An empty file stays identity: its Content-Length: 0 is how the SDK knows it is empty.
  if (encoding === 'gzip' && size > 0) {
    res.writeHead(200, { ...headers, 'content-encoding': 'gzip', vary: 'Accept-Encoding' });
    stream.pipe(createGzip()).pipe(res as NodeJS.WritableStream);
  } else {
    res.writeHead(200, { ...headers, 'content-length': size });
    stream.pipe(res as NodeJS.WritableStream);
  }
}

interface Written {
  path: string;
  name: string;
  type: 'file';
  metadata?: Record<string, string>;
}

/**
 * Writes `data` to `dest`. A write the guest refuses part way (a full disk)
 * stops reading `data`: the stream is left undestroyed and drained, so that
 * busboy or the request goes on to its end and the error is answered (a
 * destroyed part stalls busboy, and a destroyed request its socket). The part
 * written before the disk filled is removed, so the failed upload leaves the
 * space as it found it (E2B's envd leaves it).
 */
async function writeOne(sb: Sandbox, u: UserInfo, dest: string, data: Readable, metadata: Record<string, string>): Promise<Written> {
  const p = userPath(dest, u);
  const e = await sb.agent.fs.write(p, data.iterator({ destroyOnReturn: false }), { uid: u.uid, gid: u.gid, metadata }).catch(async (err: unknown) => {
    data.resume();
    if (isCellaError(err, 'GUEST_DISK_FULL')) await sb.agent.fs.remove(p).catch(() => {});
    throw err;
  });
  return { path: p, name: path.posix.basename(p), type: 'file', ...(Object.keys(e.metadata).length > 0 && { metadata: e.metadata }) };
}

async function upload(sb: Sandbox, url: URL, req: EnvdRequest, res: EnvdResponse): Promise<void> {
  const u = await user(sb, url);
  const dest = url.searchParams.get('path') || undefined;
  const type = req.headers['content-type'] ?? '';
  const coding = String(req.headers['content-encoding'] ?? 'identity')
    .trim()
    .toLowerCase();
  if (coding !== 'gzip' && coding !== 'identity') throw new HttpError(400, `Content-Encoding ${coding} is not supported: gzip or identity`);
  const gzip = coding === 'gzip';
  const metadata = metadataOf(req.headers);
  const body: Readable = gzip ? (req as Readable).pipe(createGunzip()) : req;
  if (type.startsWith('multipart/form-data')) {
    const written: Written[] = [];
    let chain = Promise.resolve();
    let failed: Error | undefined;
    await new Promise<void>((resolve, reject) => {
      const bb = busboy({ headers: req.headers, limits: { files: 1000 } });
      bb.on('file', (_field, file, info) => {
        chain = chain.then(async () => {
          if (failed) return void file.resume();
          const target = dest ?? info.filename;
          if (!target) throw new HttpError(400, 'a file part needs a filename when ?path is absent');
          written.push(await writeOne(sb, u, target, file, metadata));
        });
        chain.catch((err: unknown) => {
          failed ??= err instanceof Error ? err : new Error(String(err));
          file.resume();
        });
      });
      bb.once('close', () => resolve());
      bb.once('error', reject);
      body.once('error', reject);
      body.pipe(bb);
    });
    await chain.catch(() => {});
    if (failed) throw failed;
    return send(res, 200, written);
  }
  if (!dest) throw new HttpError(400, 'path is required for an octet-stream upload');
  send(res, 200, [await writeOne(sb, u, dest, body, metadata)]);
}

export async function serveFiles(sb: Sandbox, url: URL, req: EnvdRequest, res: EnvdResponse): Promise<void> {
  try {
    if (req.method === 'GET') await download(sb, url, req, res);
    else if (req.method === 'POST') await upload(sb, url, req, res);
    else throw new HttpError(405, `${req.method ?? ''} /files is not allowed`);
  } catch (err) {
    const h = err instanceof ConnectError || !(err instanceof HttpError) ? httpErrorOf(err) : err;
    if (res.headersSent) return void res.destroy();
    send(res, h.status, { code: h.status, message: h.message });
  }
}
