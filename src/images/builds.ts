/**
 * The build queue: builds run one at a time (each is CPU-bound and a
 * builder VM is large), in the background, each with its log; after a
 * restart the queued ones run again and one cut short fails. The layer
 * cache is pruned between builds, so a build never loses a layer it uses.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BuildFailure, DEFAULT_MEMORY_MIB } from '../contract/index.js';
import type { BuildRecord, Store } from '../store/index.js';
import { buildImage } from './build.js';
import type { BuildEngine, BuildSettings } from './build-spec.js';
import { cacheDirs, pruneLayers, type PruneResult } from './cache.js';
import { finishBuild, setBuild, setVersion, type StartedVersion } from './records.js';

export interface BuildQueueOptions {
  store: Store;
  engine: BuildEngine;
  settings: BuildSettings;
  log: (line: string) => void;
}

export class BuildQueue {
  private readonly store: Store;
  private readonly engine: BuildEngine;
  private readonly settings: BuildSettings;
  private readonly log: (line: string) => void;
  /** Builds run one after another on this chain. */
  private queue: Promise<void> = Promise.resolve();
  private readonly building = new Set<string>();
  private closed = false;

  constructor(opts: BuildQueueOptions) {
    this.store = opts.store;
    this.engine = opts.engine;
    this.settings = opts.settings;
    this.log = opts.log;
  }

  buildLog(buildId: string): string {
    return path.join(this.settings.dataDir, 'logs', 'builds', `${buildId}.log`);
  }

  /** Whether a build is queued or running (its log may still grow). */
  isBuilding(buildId: string): boolean {
    return this.building.has(buildId);
  }

  /** Starts a recorded build (after the transaction that recorded it committed). */
  enqueue(started: StartedVersion): Promise<void> {
    const { build } = started;
    this.building.add(build.buildId);
    mkdirSync(path.dirname(this.buildLog(build.buildId)), { recursive: true });
    appendFileSync(this.buildLog(build.buildId), `[cella] build ${build.buildId} of ${build.imageName} ${build.version} queued\n`);
    const job = this.queue.then(() => this.runBuild(build.buildId));
    this.queue = job.catch(() => {});
    return job;
  }

  private async runBuild(buildId: string): Promise<void> {
    const file = this.buildLog(buildId);
    const t0 = Date.now();
    const say = (line: string): void => appendFileSync(file, `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} ${line}\n`);
    try {
      const claimed = await this.store.tx(async (tx) => {
        const b0 = await tx.getBuild(buildId);
        const v0 = b0 && (await tx.getVersion(b0.imageName, b0.version));
        const img0 = b0 && (await tx.getImage(b0.imageName));
        // Deleted while queued: nothing to do. Closing: the next start runs it.
        if (!b0 || !v0 || !img0 || img0.state === 'DELETING' || this.closed) return undefined;
        await setBuild(tx, b0, { state: 'IN_PROGRESS' });
        await setVersion(tx, v0, { state: 'IN_PROGRESS' });
        return { v0, img0 };
      });
      if (!claimed) return;
      const { v0, img0 } = claimed;
      const memoryMiB = v0.request.resources?.[0]?.minimumMemoryInMiB ?? DEFAULT_MEMORY_MIB;
      let outcome;
      try {
        outcome = await buildImage(this.engine, this.settings, { buildId, imageArn: img0.arn, imageName: img0.name, version: v0, memoryMiB }, (l) => say(l));
      } catch (err) {
        const f = err instanceof BuildFailure ? err : new BuildFailure('INTERNAL_PLATFORM_ERROR', (err as Error).message);
        say(`[cella] build FAILED: ${f.reason}: ${f.message}`);
        this.log(`image ${img0.name} ${v0.version}: build failed: ${f.reason}: ${f.message}`);
        await finishBuild(this.store, buildId, {
          ok: false,
          reason: f.reason,
          message: f.message,
          snapshotBuild: (err as { snapshotBuild?: BuildRecord['snapshotBuild'] }).snapshotBuild ?? null,
        });
        return;
      }
      say(`[cella] build SUCCESSFUL in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${img0.name} ${v0.version} is ready to run`);
      await finishBuild(this.store, buildId, { ok: true, runtime: outcome.runtime, snapshotBuild: outcome.snapshotBuild });
    } finally {
      this.building.delete(buildId);
    }
  }

  /**
   * After a restart: builds that were queued or running will not finish by
   * themselves. Queued ones (PENDING) run again; a running one failed midway.
   */
  async recover(): Promise<void> {
    const layers = cacheDirs(this.settings.dataDir).layers;
    for (const img of await this.store.listImages()) {
      for (const v of await this.store.listVersions(img.name)) {
        for (const b of await this.store.listBuilds(img.name, v.version)) {
          if (b.state === 'IN_PROGRESS') {
            appendFileSync(this.buildLog(b.buildId), '[cella] build FAILED: INTERNAL_PLATFORM_ERROR: cellad restarted during the build\n');
            await finishBuild(this.store, b.buildId, {
              ok: false,
              reason: 'INTERNAL_PLATFORM_ERROR',
              message: 'cellad restarted during the build',
              snapshotBuild: null,
            });
          } else if (b.state === 'PENDING') {
            void this.enqueue({ image: img, version: v, build: b });
          }
        }
      }
    }
    // Half-written layers of an interrupted build have no marker; their files go.
    if (existsSync(layers)) {
      for (const f of readdirSync(layers)) {
        if (f.endsWith('.qcow2') && !existsSync(path.join(layers, f.replace(/\.qcow2$/, '.json')))) rmSync(path.join(layers, f), { force: true });
      }
    }
  }

  /**
   * Prunes the layer cache down to `maxBytes` (least recently used first),
   * between builds: a build never loses a layer it is using.
   */
  pruneCache(maxBytes: number): Promise<PruneResult> {
    const job = this.queue.then(() => pruneLayers(cacheDirs(this.settings.dataDir).layers, maxBytes));
    this.queue = job.then(
      (r) => {
        if (r.removed)
          this.log(`build cache: pruned ${r.removed} layers (${Math.round(r.freedBytes / 1048576)} MiB); ${Math.round(r.keptBytes / 1048576)} MiB kept`);
      },
      () => {},
    );
    return job;
  }

  /**
   * Stops starting builds: the queued ones stay PENDING and run at the next
   * start (recover). Resolves once the running one has ended.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
  }
}
