/**
 * envd on the host: one request handler serving every sandbox's envd API
 * (the Connect services over HTTP/2 or HTTP/1.1, /health, /envs, /files),
 * called by the proxy for `49983-<id>.<domain>` once the access token is
 * checked. It keeps each sandbox's process table and its open requests, so
 * a killed sandbox's streams can be torn down (the SDK then probes /health,
 * gets 502 and reports the sandbox killed).
 */
import { constants as h2 } from 'node:http2';
import { createContextValues } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { EnvdRequest, EnvdResponse, EnvdSandboxes, Sandbox } from './context.js';
import { serveFiles } from './files.js';
import { filesystemService } from './filesystem.js';
import { Filesystem } from './gen/filesystem_pb.js';
import { Process } from './gen/process_pb.js';
import { processService } from './process.js';
import { REQUEST, type RequestState } from './state.js';
import { ProcessTable } from './table.js';
import { PollWatchers } from './watch.js';

export interface EnvdHandler {
  /** Serves one envd request for sandbox `id` (its access token already checked). */
  handle(id: string, req: EnvdRequest, res: EnvdResponse): void;
  /** Aborts the sandbox's open requests (stream reset or socket destroyed); with `forget`, drops its processes and watchers (it was killed). */
  abort(id: string, opts?: { forget?: boolean }): void;
}

/** The body the SDK expects for a sandbox that is not there (its isRunning() reads 502 as false). */
export function sandboxNotFound(id: string): { status: number; body: string } {
  return { status: 502, body: JSON.stringify({ message: 'The sandbox was not found', sandboxId: id, code: 502 }) };
}

function json(res: EnvdResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function createEnvdHandler(sandboxes: EnvdSandboxes, log: (line: string) => void = () => {}): EnvdHandler {
  /** Each sandbox's processes and polling watchers: kept between requests, and across a pause. */
  const kept = new Map<string, { processes: ProcessTable; watchers: PollWatchers }>();
  const open = new Map<string, Set<{ req: EnvdRequest; res: EnvdResponse }>>();
  const states = new WeakMap<EnvdRequest, RequestState>();

  const adapter = connectNodeAdapter({
    routes: (router) => {
      router.service(Process, processService);
      router.service(Filesystem, filesystemService);
    },
    contextValues: (req) => createContextValues().set(REQUEST, states.get(req)),
    fallback: (req, res) => {
      const state = states.get(req);
      if (!state) return json(res, 500, { code: 500, message: 'no sandbox for this request' });
      void other(state.sandbox, req, res).catch((err: unknown) => {
        log(`envd ${req.method ?? ''} ${req.url ?? ''}: ${(err as Error).message}`);
        if (!res.headersSent) json(res, 500, { code: 500, message: (err as Error).message });
        else res.destroy();
      });
    },
  });

  /** What is not a Connect call: /health, /envs, /files. */
  async function other(sb: Sandbox, req: EnvdRequest, res: EnvdResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://envd');
    if (url.pathname === '/health' && req.method === 'GET') {
      res.writeHead(204);
      res.end();
    } else if (url.pathname === '/envs' && req.method === 'GET') {
      json(res, 200, { E2B_SANDBOX: 'true', E2B_SANDBOX_ID: sb.id, ...sb.defaults?.envVars });
    } else if (url.pathname === '/files') await serveFiles(sb, url, req, res);
    else json(res, 404, { code: 404, message: `no such envd endpoint: ${req.method ?? ''} ${url.pathname}` });
  }

  async function handle(id: string, req: EnvdRequest, res: EnvdResponse): Promise<void> {
    const agent = sandboxes.agent(id);
    if (!agent) {
      const nf = sandboxNotFound(id);
      return json(res, nf.status, nf.body);
    }
    const defaults = await sandboxes.defaults(id);
    let mine = kept.get(id);
    if (!mine) kept.set(id, (mine = { processes: new ProcessTable(), watchers: new PollWatchers() }));
    states.set(req, { sandbox: { id, agent, defaults }, ...mine });
    let set = open.get(id);
    if (!set) open.set(id, (set = new Set()));
    const entry = { req, res };
    set.add(entry);
    res.once('close', () => {
      set.delete(entry);
      if (!set.size && open.get(id) === set) open.delete(id);
    });
    adapter(req, res);
  }

  return {
    handle: (id, req, res) => {
      void handle(id, req, res).catch((err: unknown) => {
        log(`envd ${id}: ${(err as Error).message}`);
        if (!res.headersSent) json(res, 500, { code: 500, message: (err as Error).message });
        else res.destroy();
      });
    },
    abort: (id, opts = {}) => {
      for (const { req, res } of open.get(id) ?? []) {
        // Not a clean end: the SDK must see the transport fail ("terminated") to ask /health why.
        if ('stream' in res) res.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
        else req.socket.destroy();
      }
      open.delete(id);
      if (opts.forget) {
        kept.get(id)?.processes.clear();
        kept.get(id)?.watchers.clear();
        kept.delete(id);
      }
    },
  };
}
