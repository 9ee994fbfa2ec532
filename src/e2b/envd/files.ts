/**
 * envd's `/files`: GET downloads a file, POST uploads one or more
 * (multipart/form-data, or application/octet-stream with an optional gzip
 * Content-Encoding), as the SDK's files.read/write call them. Errors are
 * envd's JSON `{code, message}` with its statuses (404, 400, 401, 507).
 */
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import busboy from 'busboy';
import { Code, ConnectError } from '@connectrpc/connect';
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

async function download(sb: Sandbox, url: URL, res: EnvdResponse): Promise<void> {
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
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-disposition': `inline; filename=${JSON.stringify(path.posix.basename(p))}`,
    'content-length': size,
  });
  stream.on('error', () => res.destroy());
  stream.pipe(res as NodeJS.WritableStream);
}

async function writeOne(sb: Sandbox, u: UserInfo, dest: string, data: AsyncIterable<Uint8Array>): Promise<{ path: string; name: string; type: 'file' }> {
  const p = userPath(dest, u);
  await sb.agent.fs.write(p, data, { uid: u.uid, gid: u.gid });
  return { path: p, name: path.posix.basename(p), type: 'file' };
}

async function upload(sb: Sandbox, url: URL, req: EnvdRequest, res: EnvdResponse): Promise<void> {
  const u = await user(sb, url);
  const dest = url.searchParams.get('path') || undefined;
  const type = req.headers['content-type'] ?? '';
  const gzip = /gzip/i.test(String(req.headers['content-encoding'] ?? ''));
  const body: Readable = gzip ? (req as Readable).pipe(createGunzip()) : (req);
  if (type.startsWith('multipart/form-data')) {
    const written: { path: string; name: string; type: 'file' }[] = [];
    let chain = Promise.resolve();
    let failed: Error | undefined;
    await new Promise<void>((resolve, reject) => {
      const bb = busboy({ headers: req.headers, limits: { files: 1000 } });
      bb.on('file', (_field, file, info) => {
        chain = chain.then(async () => {
          if (failed) return void file.resume();
          const target = dest ?? info.filename;
          if (!target) throw new HttpError(400, 'a file part needs a filename when ?path is absent');
          written.push(await writeOne(sb, u, target, file));
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
  send(res, 200, [await writeOne(sb, u, dest, body)]);
}

export async function serveFiles(sb: Sandbox, url: URL, req: EnvdRequest, res: EnvdResponse): Promise<void> {
  try {
    if (req.method === 'GET') await download(sb, url, res);
    else if (req.method === 'POST') await upload(sb, url, req, res);
    else throw new HttpError(405, `${req.method ?? ''} /files is not allowed`);
  } catch (err) {
    const h = err instanceof ConnectError || !(err instanceof HttpError) ? httpErrorOf(err) : err;
    if (res.headersSent) return void res.destroy();
    send(res, h.status, { code: h.status, message: h.message });
  }
}
