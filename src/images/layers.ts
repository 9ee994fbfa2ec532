/**
 * The layer cache: one qcow2 per file-system step, each on its parent, keyed
 * by the chain of steps (and their inputs) that made it; a marker says it is done.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cacheKeyOf, type PlannedStep, type Step } from '../dockerfile/index.js';
import { BuildFailure } from '../contract/index.js';
import type { NetworkPolicy } from '../net/index.js';

export function changesFiles(step: Step): boolean {
  return step.kind === 'RUN' || step.kind === 'COPY' || step.kind === 'ADD' || step.kind === 'WORKDIR';
}

export function layerFile(layers: string, key: string): string {
  return path.join(layers, `${key}.qcow2`);
}

/**
 * A layer is reusable once its marker exists (written only after the builder
 * froze it) and so is every layer below it: each is a qcow2 on its parent,
 * and the cache's pruning (./cache.ts) may have taken a parent. A marker
 * that does not name its parent (older cellads wrote none) is not trusted.
 */
export function layerDone(layers: string, key: string): boolean {
  const marker = readMarker(layers, key);
  if (!marker || !existsSync(layerFile(layers, key)) || marker.parent === undefined) return false;
  return marker.parent === null || layerDone(layers, marker.parent);
}

/** Marks a layer as just used: the cache's pruning takes the least recently used first. */
export function touchLayer(layers: string, key: string): void {
  const now = new Date();
  try {
    utimesSync(path.join(layers, `${key}.json`), now, now);
  } catch {
    // gone meanwhile: the next build makes it again
  }
}

function readMarker(layers: string, key: string): { parent?: string | null } | undefined {
  try {
    return JSON.parse(readFileSync(path.join(layers, `${key}.json`), 'utf8')) as { parent?: string | null };
  } catch {
    return undefined;
  }
}

/** `parent`: the key of the layer it is a qcow2 on, null for a base disk. */
export function markDone(layers: string, key: string, step: PlannedStep, parent: string | null): void {
  writeFileSync(path.join(layers, `${key}.json`), JSON.stringify({ step: step.step.text, line: step.step.line, parent, createdAt: new Date().toISOString() }));
}

/**
 * Each step's key chains its parent's: the same step on a different base or
 * after a different step is a different layer. COPY/ADD keys include the
 * content of their sources; RUN keys the environment, directory, user and egress.
 */
export function stepKeys(baseKey: string, planned: PlannedStep[], ctx: string, network: NetworkPolicy): { keys: string[]; sources: Map<number, string[]> } {
  let prev = baseKey;
  const sources = new Map<number, string[]>();
  const keys = planned.map((p, i) => {
    const h = createHash('sha256').update(prev).update('\0').update(cacheKeyOf(p.step)).update('\0');
    h.update(JSON.stringify({ env: p.env, cwd: p.workingDir, user: p.user }));
    // What a RUN could reach is part of what it made: other egress, another layer.
    if (p.step.kind === 'RUN') h.update(JSON.stringify(network.egress));
    if (p.step.kind === 'COPY' || p.step.kind === 'ADD') {
      const files = p.step.sources.flatMap((src) => expandSources(ctx, src, p.step.line));
      for (const f of files) hashTree(h, ctx, f);
      sources.set(i, files);
    }
    prev = h.digest('hex');
    return prev;
  });
  return { keys, sources };
}

function hashTree(h: ReturnType<typeof createHash>, root: string, rel: string): void {
  const abs = path.join(root, rel);
  const st = lstatSync(abs);
  h.update(`${rel}\0${st.mode}\0`);
  if (st.isSymbolicLink()) h.update(readlinkSync(abs));
  else if (st.isFile()) h.update(readFileSync(abs));
  else if (st.isDirectory()) for (const child of readdirSync(abs).sort()) hashTree(h, root, path.join(rel, child));
}

/** COPY sources relative to the context, globs (`*`, `?`) expanded; never outside it. */
function expandSources(ctx: string, source: string, line: number): string[] {
  const rel = path.posix.normalize(source.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../'))
    throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${source} is outside the build context`);
  if (!/[*?[]/.test(rel)) {
    const clean = rel === '.' ? '' : rel.replace(/\/$/, '');
    if (!existsLink(path.join(ctx, clean))) {
      throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${source} does not exist in the code artifact`);
    }
    return [clean];
  }
  const parts = rel.split('/');
  let found = [''];
  for (const part of parts) {
    const re = globRegExp(part);
    found = found.flatMap((dir) => {
      const abs = path.join(ctx, dir);
      if (!isDir(abs)) return [];
      return readdirSync(abs)
        .sort()
        .filter((n) => re.test(n))
        .map((n) => (dir ? `${dir}/${n}` : n));
    });
  }
  if (found.length === 0) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: no file in the code artifact matches ${source}`);
  return found;
}

function globRegExp(part: string): RegExp {
  let re = '';
  for (const c of part) re += c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  return new RegExp(`^${re}$`);
}

function existsLink(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
