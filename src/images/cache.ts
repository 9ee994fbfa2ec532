/**
 * The build cache has limits (issue 11): layers (qcow2 files, each on its
 * parent) are pruned least recently used first (a layer's marker is touched
 * when a build uses it) once their total passes a bound. A pruned parent
 * makes its children misses (layers.ts: layerDone checks the whole chain),
 * never corrupt. Base disks are not pruned: there is one per base, and
 * every first layer is backed by one.
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';

export function cacheDirs(dataDir: string): { layers: string; bases: string; blobs: string } {
  const root = path.join(dataDir, 'cache');
  return { layers: path.join(root, 'layers'), bases: path.join(root, 'bases'), blobs: path.join(root, 'oci-blobs') };
}

export interface PruneResult {
  removed: number;
  freedBytes: number;
  keptBytes: number;
}

/** Default bound on the layer cache. */
export const DEFAULT_LAYER_CACHE_BYTES = 10 * 1024 ** 3;

/** Removes the least recently used layers of `dir` until what is left holds at most `maxBytes`. */
export function pruneLayers(dir: string, maxBytes: number): PruneResult {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return { removed: 0, freedBytes: 0, keptBytes: 0 };
  }
  const layers = names
    .filter((n) => n.endsWith('.qcow2'))
    .map((n) => {
      const key = n.slice(0, -'.qcow2'.length);
      const file = path.join(dir, n);
      const used = statOrUndefined(path.join(dir, `${key}.json`))?.mtimeMs ?? 0;
      return { key, file, bytes: statOrUndefined(file)?.blocks ?? 0, used };
    })
    .map((l) => ({ ...l, bytes: l.bytes * 512 }))
    .sort((a, b) => a.used - b.used);
  let total = layers.reduce((sum, l) => sum + l.bytes, 0);
  let removed = 0;
  let freedBytes = 0;
  for (const l of layers) {
    if (total <= maxBytes) break;
    rmSync(path.join(dir, `${l.key}.json`), { force: true });
    rmSync(l.file, { force: true });
    total -= l.bytes;
    freedBytes += l.bytes;
    removed++;
  }
  return { removed, freedBytes, keptBytes: total };
}

function statOrUndefined(file: string): { mtimeMs: number; blocks: number } | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}
