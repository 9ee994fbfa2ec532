import { cpSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { CellaServer } from '../src/server/index.js';
import { baseTree, loadGuestArtifacts } from '../src/setup/index.js';

export const API_KEY = 'test-key-0123456789';

/** A root filesystem folder holding the busybox base and the demo app, as `cella image register` takes it. */
export function stageDemoRootfs(dir: string): string {
  const g = loadGuestArtifacts();
  const root = path.join(dir, 'rootfs');
  mkdirSync(root, { recursive: true });
  cpSync(baseTree(g, 'busybox'), root, { recursive: true, verbatimSymlinks: true });
  cpSync(g.demoApp, path.join(root, 'usr/bin/cella-demo'));
  return root;
}

export const ALL_HOOKS = { port: 8080, microvmHooks: { run: 'ENABLED', resume: 'ENABLED', suspend: 'ENABLED', terminate: 'ENABLED' } } as const;

export interface Reply<T = unknown> {
  status: number;
  type: string | null;
  body: T;
  text: string;
}

/** One API call; `raw` sends a string body as is. */
export async function api<T = Record<string, unknown>>(
  base: string,
  method: string,
  p: string,
  body?: unknown,
  opts: { raw?: boolean; key?: string | null } = {},
): Promise<Reply<T>> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (opts.key !== null) headers.authorization = `Bearer ${opts.key ?? API_KEY}`;
  const r = await fetch(base + p, {
    method,
    headers,
    ...(body === undefined ? {} : { body: opts.raw ? (body as string) : JSON.stringify(body) }),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // a text body
  }
  return { status: r.status, type: r.headers.get('x-amzn-errortype'), body: parsed as T, text };
}

export const V = '/2025-09-09';

export interface MicrovmBody {
  microvmId: string;
  state: string;
  stateReason?: string;
  terminatedAt?: string;
  endpoint: string;
}

/** Polls GetMicrovm until the state is one of `states` (a bound on waiting, not a timing assertion). */
export async function waitState(base: string, id: string, states: string[], ms = 60_000): Promise<MicrovmBody> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api<MicrovmBody>(base, 'GET', `${V}/microvms/${id}`);
    if (r.status !== 200) throw new Error(`GetMicrovm ${id}: ${r.status} ${r.text}`);
    if (states.includes(r.body.state)) return r.body;
    if (Date.now() > end) throw new Error(`MicroVM ${id} stayed ${r.body.state}, expected ${states.join('|')}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

export async function waitImage(base: string, name: string, ms = 120_000): Promise<Record<string, unknown>> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api(base, 'GET', `/cella/v1/images/${name}`);
    if (r.body.state !== 'CREATING') return r.body;
    if (Date.now() > end) throw new Error(`image ${name} still CREATING`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** Ends a test or benchmark server: cellad's own close() leaves VMs running for the next start, so they are terminated first. */
export async function shutdown(server: CellaServer): Promise<void> {
  for (const v of server.store.liveVms()) await server.lifecycle.terminate(v.id).catch(() => {});
  await server.lifecycle.settle();
  await server.close();
}
