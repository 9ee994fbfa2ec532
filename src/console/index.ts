/**
 * The web console's static files under /console/: the bundle `npm run build`
 * wrote to dist/web/console, read once at start-up (no path ever reaches the
 * file system), served with a strict Content-Security-Policy. The console
 * talks to the public API with the caller's key; this serves files only.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONSOLE_PATH = '/console/';

/** No inline script or style; the API on this origin; shells on the endpoints (wss). */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self' wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
};

/** src/console and dist/console both sit two levels below the package root. */
export const DEFAULT_CONSOLE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'web', 'console');

export function isConsolePath(url: string | undefined): boolean {
  const p = (url ?? '').split('?')[0];
  return p === '/console' || (p ?? '').startsWith(CONSOLE_PATH);
}

/** A request handler for /console/*; answers 404 for a file the bundle does not have. */
export function consoleHandler(dir: string = DEFAULT_CONSOLE_DIR): (req: IncomingMessage, res: ServerResponse) => void {
  const files = new Map<string, Buffer>();
  if (existsSync(dir)) for (const name of readdirSync(dir)) files.set(name, readFileSync(path.join(dir, name)));
  return (req, res) => {
    const p = (req.url ?? '').split('?')[0] ?? '';
    if (p === '/console') {
      res.writeHead(301, { location: CONSOLE_PATH });
      return void res.end();
    }
    const name = p.slice(CONSOLE_PATH.length) || 'index.html';
    const body = files.get(name);
    const headers = {
      'content-security-policy': CONSOLE_CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, allow: 'GET, HEAD', 'content-type': 'text/plain' });
      return void res.end('method not allowed\n');
    }
    if (!body) {
      res.writeHead(404, { ...headers, 'content-type': 'text/plain' });
      return void res.end(files.size ? 'not found\n' : 'the console is not built: run `npm run build`\n');
    }
    // index.html names the bundle by hash-free names, so it and they are revalidated, never stale.
    res.writeHead(200, {
      ...headers,
      'content-type': TYPES[path.extname(name)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      'content-length': body.length,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}
