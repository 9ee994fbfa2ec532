/**
 * The warm pool (ADR 0002): per launched image, clones restored in advance,
 * run once through the paths a launch uses (agent, TCP), then paused. Under
 * TCG this moves the first-execution translation cost off the launch path. A
 * warm clone is a 'warm' entry of the host state (host.ts); a launch takes it
 * from there (clone.ts). It has never served the app. An image may add
 * its own warm-up (setWarmUp): what its first use runs, so that a clone's
 * QEMU has translated it before a launch takes the clone.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { AgentClient } from '../agent/index.js';
import { restoreClone } from './clone.js';
import { vmDir, type EngineCore, type Restored, type WarmVm } from './core.js';
import { dispose, identify, poke } from './helpers.js';
import { openSnapshot } from './snapshot.js';

/**
 * Runs in each new warm clone of an image, after the launch paths and before
 * the clone is paused into the pool. It must leave nothing the VM's user
 * could see; a failure discards the clone.
 */
export type WarmUp = (agent: AgentClient) => Promise<void>;

/**
 * How long the refill of an image with a warm-up waits after a launch took
 * its clone. The restore and the warm-up take about a second of CPU under
 * TCG, which on a small host is the CPU the new VM needs for its first steps
 * (bench:e2b, 2 cores: create to first command 131 ms with the refill
 * delayed, 540 ms without).
 */
export const WARM_UP_REFILL_DELAY_MS = 1000;

/**
 * How long the refill of any other image waits after a launch: a new QEMU's
 * start is about 80 ms of CPU that the launched VM's first answer would
 * otherwise share (bench:engine's warm launch, 2 cores under TCG: 49–79 ms
 * to the first answer with the refill 300 ms later, 137–150 ms at once).
 * A second launch within it would have found the pool empty anyway: a refill
 * takes longer than this to be ready.
 */
export const REFILL_DELAY_MS = 300;

export class WarmPool {
  /** Fills in progress, per image directory. */
  private readonly warming = new Map<string, Promise<void>>();
  /** Warm-ups, per image directory. */
  private readonly warmUps = new Map<string, WarmUp>();
  /** Clones kept for images that set their own number with their warm-up, per image directory. */
  private readonly depths = new Map<string, number>();
  /** Refills waiting (REFILL_DELAY_MS or WARM_UP_REFILL_DELAY_MS), per image directory. */
  private readonly delayed = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly core: EngineCore,
    /** Warm clones kept per launched image (EngineOptions.warmClones; 0: none). */
    readonly target: number,
  ) {}

  /** Fills the pool of `image` to `count` (default: its own number, else `target`) and waits until it is ready. */
  async prewarm(image: string, count?: number): Promise<void> {
    const imageDir = path.resolve(image);
    count ??= this.depthOf(imageDir);
    for (;;) {
      const running = this.warming.get(imageDir);
      if (running) {
        await running.catch(() => {});
        continue;
      }
      if (this.core.closing || this.core.hosts.warm(imageDir).length >= count) return;
      const job = this.fill(imageDir, count);
      this.warming.set(imageDir, job);
      try {
        await job;
      } finally {
        this.warming.delete(imageDir);
      }
    }
  }

  /**
   * Sets (or, undefined, removes) what each new warm clone of `image` runs
   * before it is paused, and how many clones it keeps (`clones`, default
   * `target`; none while `target` is 0); clones already pooled keep what they ran.
   */
  setWarmUp(image: string, warmUp: WarmUp | undefined, clones?: number): void {
    const imageDir = path.resolve(image);
    if (warmUp) this.warmUps.set(imageDir, warmUp);
    else this.warmUps.delete(imageDir);
    if (warmUp && clones !== undefined) this.depths.set(imageDir, clones);
    else this.depths.delete(imageDir);
  }

  private depthOf(imageDir: string): number {
    return this.target === 0 ? 0 : (this.depths.get(imageDir) ?? this.target);
  }

  /** Tops the pool of `image` up in the background, after a pause (a launch just took a clone). */
  refill(image: string): void {
    const imageDir = path.resolve(image);
    if (this.target === 0 || this.core.closing || this.warming.has(imageDir) || this.delayed.has(imageDir)) return;
    const timer = setTimeout(
      () => {
        this.delayed.delete(imageDir);
        void this.prewarm(imageDir).catch((err: Error) => this.core.log(`warm pool for ${imageDir}: ${err.message}`));
      },
      this.warmUps.has(imageDir) ? WARM_UP_REFILL_DELAY_MS : REFILL_DELAY_MS,
    );
    timer.unref();
    this.delayed.set(imageDir, timer);
  }

  /** Drops the delayed refill of `imageDir` (of every image when absent). */
  private undelay(imageDir?: string): void {
    for (const [dir, timer] of this.delayed)
      if (imageDir === undefined || dir === imageDir) {
        clearTimeout(timer);
        this.delayed.delete(dir);
      }
  }

  /** Stops the warm clones of `image` (its snapshot is about to be deleted), after a fill in progress. */
  async forget(image: string): Promise<void> {
    const imageDir = path.resolve(image);
    this.warmUps.delete(imageDir);
    this.depths.delete(imageDir);
    this.undelay(imageDir);
    await this.warming.get(imageDir)?.catch(() => {});
    await Promise.all(this.take(imageDir).map((w) => this.discard(w)));
  }

  /** Waits for the fills in progress; once the engine is closing, each stops after its current clone. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.warming.values()]);
  }

  /** Stops every warm clone. */
  async discardAll(): Promise<void> {
    this.undelay();
    await Promise.all(this.take().map((w) => this.discard(w)));
  }

  private async fill(imageDir: string, count: number): Promise<void> {
    while (!this.core.closing && this.core.hosts.warm(imageDir).length < count) await this.makeWarm(imageDir);
  }

  /** Adds one warm clone to the pool of `imageDir`. */
  private async makeWarm(imageDir: string): Promise<void> {
    const { core } = this;
    const snap = openSnapshot(imageDir, core.fingerprint);
    const name = `.warm-${randomUUID().slice(0, 8)}`;
    const dir = vmDir(core, name);
    mkdirSync(dir);
    core.hosts.begin(name, 'restoring');
    let r: Restored | undefined;
    try {
      // It never served the app: nothing to log until a launch says where.
      r = await restoreClone(core, name, dir, imageDir, snap, null);
      try {
        await r.qmp.execute('cont');
        await identify(r, name);
        await r.agent.ping();
        // A connection to a closed port: the guest kernel's TCP path runs, the app sees nothing.
        await poke(r.net.hostAddress, 1);
        await this.warmUps.get(imageDir)?.(r.agent);
        await r.qmp.execute('stop');
      } catch (err) {
        await dispose(r);
        throw err;
      }
      const w: WarmVm = { ...r, detach: () => {} };
      const { qemu } = r;
      const onExit = (): void => {
        if (core.hosts.exited(name, qemu)) void this.discard(w);
      };
      qemu.once('exit', onExit);
      w.detach = () => qemu.removeListener('exit', onExit);
      core.hosts.write(name, { state: 'warm', qemu, imageDir, warm: w });
    } catch (err) {
      if (r) await core.networks.release(r.net).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      throw err;
    } finally {
      core.hosts.settle(name);
    }
  }

  /** Takes the warm clones of `imageDir` (of every image when absent) out of the host state, to discard them. */
  private take(imageDir?: string): WarmVm[] {
    return this.core.hosts.warm(imageDir).map(({ name, warm }) => {
      this.core.hosts.write(name, undefined);
      return warm;
    });
  }

  private async discard(w: WarmVm): Promise<void> {
    w.detach();
    await dispose(w);
    await this.core.networks.release(w.net).catch(() => {});
    rmSync(w.dir, { recursive: true, force: true });
  }
}
