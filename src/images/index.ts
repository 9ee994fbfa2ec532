/**
 * Images, their versions and builds (the contract's sections 2–4). Create
 * and Update record a new version and queue its build on the build queue
 * (./builds.ts), which runs builds one at a time in the background; their
 * outcome is written through the state tables (./states.ts).
 */
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { validateArtifactUri, type S3Settings } from '../archive/index.js';
import {
  type Arns,
  CellaError,
  type CreateImageRequest,
  type ImageRequestConfig,
  type ImageState,
  type UpdateImageRequest,
  type VersionState,
} from '../contract/index.js';
import type { Connectors } from '../connectors/index.js';
import type { Engine } from '../engine/index.js';
import type { RunnableImage } from '../lifecycle/index.js';
import type { BuildRecord, ImageRecord, ImageVersionRecord, Store, Tx } from '../store/index.js';
import { listBases, type BaseInfo } from '../setup/index.js';
import type { BuildEngine, BuildSettings } from './build-spec.js';
import { BuildQueue } from './builds.js';
import type { PruneResult } from './cache.js';
import { DEFAULT_IMAGE_QUOTAS, quotaExceeded, setImageState, startVersion, type ImageQuotas, type StartedVersion } from './records.js';
import { IMAGE_NEXT, RUNNABLE_IMAGE_STATES } from './states.js';
import { storeUpload, type Upload } from './upload.js';

export { DEFAULT_LAYER_CACHE_BYTES, type PruneResult } from './cache.js';
export { DEFAULT_IMAGE_QUOTAS, type ImageQuotas, type StartedVersion } from './records.js';
export { demoContext, demoZip } from './context.js';
export { CODE_INTERPRETER_PORT, E2B_BASE, managedImages, type ManagedImage } from './templates.js';

/** Managed bases have one version each: the one setup built. */
export const MANAGED_VERSION = '1';

/** The image's latest versions, as GetMicrovmImage and ListMicrovmImages show them. */
export interface LatestVersions {
  latestActiveImageVersion?: string;
  latestFailedImageVersion?: string;
}

/** What Images needs of the engine: builds, the guest's bases, and letting go of a deleted snapshot's warm clones. */
export type ImagesEngine = BuildEngine & Pick<Engine, 'guest' | 'forgetImage'>;

export interface ImagesOptions {
  store: Store;
  /** Defaults: DEFAULT_IMAGE_QUOTAS. */
  quotas?: Partial<ImageQuotas>;
  engine: ImagesEngine;
  connectors: Connectors;
  dataDir: string;
  /** The server's ARNs: images are named under its region and account. */
  arns: Arns;
  s3?: S3Settings;
  insecureRegistries?: string[];
  log?: (line: string) => void;
}

export class Images {
  private readonly store: Store;
  private readonly engine: ImagesEngine;
  private readonly dataDir: string;
  private readonly connectors: Connectors;
  private readonly arns: Arns;
  private readonly quotas: ImageQuotas;
  private readonly builds: BuildQueue;

  constructor(opts: ImagesOptions) {
    this.store = opts.store;
    this.engine = opts.engine;
    this.dataDir = opts.dataDir;
    this.connectors = opts.connectors;
    this.quotas = { ...DEFAULT_IMAGE_QUOTAS, ...opts.quotas };
    this.arns = opts.arns;
    const settings: BuildSettings = {
      dataDir: opts.dataDir,
      arns: opts.arns,
      // Resolved when the build runs: a connector deleted meanwhile fails the build, it never widens it.
      resolveEgress: async (arns) => (await opts.connectors.resolve([], arns, undefined)).policy,
      guest: opts.engine.guest,
      ...(opts.s3 ? { s3: opts.s3 } : {}),
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    };
    this.builds = new BuildQueue({ store: opts.store, engine: opts.engine, settings, log: opts.log ?? (() => {}) });
  }

  /** Short and fixed-length: a template's unix sockets live below it. */
  private imageRoot(name: string): string {
    return path.join(this.dataDir, 'images', `i-${createHash('sha256').update(name).digest('hex').slice(0, 12)}`);
  }

  buildLog(buildId: string): string {
    return this.builds.buildLog(buildId);
  }

  /** Whether a build is queued or running (its log may still grow). */
  isBuilding(buildId: string): boolean {
    return this.builds.isBuilding(buildId);
  }

  // ---------- reads ----------

  // Reads take the transaction they belong to, if any (`db`).

  async require(identifier: string, db: Tx = this.store): Promise<ImageRecord> {
    const name = this.arns.imageName(identifier);
    const img = await db.getImage(name);
    if (!img) throw new CellaError('NOT_FOUND', `image ${identifier} not found`, { details: { resourceId: identifier, resourceType: 'MicrovmImage' } });
    return img;
  }

  async requireVersion(identifier: string, version: string, db: Tx = this.store): Promise<ImageVersionRecord> {
    const img = await this.require(identifier, db);
    const v = await db.getVersion(img.name, version);
    if (!v) {
      throw new CellaError('NOT_FOUND', `image ${img.name} has no version ${version}`, {
        details: { resourceId: version, resourceType: 'MicrovmImageVersion' },
      });
    }
    return v;
  }

  async requireBuild(identifier: string, version: string, buildId: string): Promise<BuildRecord> {
    const v = await this.requireVersion(identifier, version);
    const b = await this.store.getBuild(buildId);
    if (!b || b.imageName !== v.imageName || b.version !== v.version) {
      throw new CellaError('NOT_FOUND', `build ${buildId} of ${v.imageName} ${version} not found`, {
        details: { resourceId: buildId, resourceType: 'MicrovmImageBuild' },
      });
    }
    return b;
  }

  /** The newest version with the given state (and status). */
  async latest(name: string, state: VersionState, status?: 'ACTIVE', db: Tx = this.store): Promise<ImageVersionRecord | undefined> {
    return (await db.listVersions(name)).filter((v) => v.state === state && (!status || v.status === status)).pop();
  }

  /**
   * The contract's latestActiveImageVersion (the version a RunMicrovm
   * without imageVersion launches) and latestFailedImageVersion (the newest
   * whose build failed). Derived from the versions when read, so a version
   * made INACTIVE or deleted since is never shown.
   */
  async latestVersions(name: string, db: Tx = this.store): Promise<LatestVersions> {
    const all = await db.listVersions(name);
    const active = all.filter((v) => v.state === 'SUCCESSFUL' && v.status === 'ACTIVE').pop();
    const failed = all.filter((v) => v.state === 'FAILED').pop();
    return { ...(active ? { latestActiveImageVersion: active.version } : {}), ...(failed ? { latestFailedImageVersion: failed.version } : {}) };
  }

  /**
   * What RunMicrovm launches: the pinned version, or the latest SUCCESSFUL
   * ACTIVE one, of an image the contract lets run (CREATED or UPDATED; a
   * build under way or a failed last build stops runs, as in the contract).
   */
  async runnable(identifier: string, version?: string, db: Tx = this.store): Promise<RunnableImage> {
    const img = await this.require(identifier, db);
    if (!RUNNABLE_IMAGE_STATES.includes(img.state)) {
      throw new CellaError('NOT_FOUND', `image ${img.name} is ${img.state}; only a ${RUNNABLE_IMAGE_STATES.join(' or ')} image runs`, {
        details: { resourceId: identifier, resourceType: 'MicrovmImage' },
      });
    }
    const v = version === undefined ? await this.latest(img.name, 'SUCCESSFUL', 'ACTIVE', db) : await db.getVersion(img.name, version);
    if (!v || v.state !== 'SUCCESSFUL' || v.status !== 'ACTIVE' || !v.runtime) {
      const why = !v
        ? version === undefined
          ? `image ${img.name} has none`
          : `image ${img.name} has no version ${version}`
        : `version ${v.version} is ${v.state}/${v.status}`;
      throw new CellaError('NOT_FOUND', `No active version found: ${why}`, {
        details: { resourceId: version ?? img.name, resourceType: 'MicrovmImageVersion' },
      });
    }
    return this.runnableOf(img, v);
  }

  /** The lifecycle's view of a version that VMs run from, whatever its status now. */
  async lookup(name: string, version: string): Promise<RunnableImage | undefined> {
    const img = await this.store.getImage(name);
    const v = await this.store.getVersion(name, version);
    return img && v?.runtime ? this.runnableOf(img, v) : undefined;
  }

  private runnableOf(img: ImageRecord, v: ImageVersionRecord): RunnableImage {
    return { name: img.name, arn: img.arn, version: v.version, dir: path.join(v.dir, 'snapshot'), config: v.runtime as NonNullable<typeof v.runtime> };
  }

  managed(): BaseInfo[] {
    return listBases(this.engine.guest.dir);
  }

  // ---------- writes ----------

  /**
   * Checks the request; records the image, version 1.0 and its build, in
   * one transaction (nested in `db` if that is one); the caller queues the
   * build once it has committed (enqueue).
   */
  create(req: CreateImageRequest, db: Tx = this.store): Promise<StartedVersion> {
    return db.tx(async (tx) => {
      if (await tx.getImage(req.name)) {
        throw new CellaError('INVALID_ARGUMENT', `image ${req.name} already exists`, { details: { resourceId: req.name, resourceType: 'MicrovmImage' } });
      }
      const request = await this.checkConfig(req, tx);
      const count = (await tx.listImages()).length;
      if (count >= this.quotas.images)
        throw quotaExceeded('microvm-images', `there are ${count} images; the quota is ${this.quotas.images}`, req.name, 'MicrovmImage');
      const now = Date.now();
      const image: ImageRecord = { name: req.name, arn: this.arns.image(req.name), state: 'CREATING', tags: req.tags ?? {}, createdAt: now, updatedAt: null };
      await tx.putImage(image);
      return startVersion(tx, image, request, now, this.quotas, this.imageRoot(image.name));
    });
  }

  /** A new version from a new request (PUT semantics: nothing is inherited from the last one); one transaction, as create. */
  update(identifier: string, req: UpdateImageRequest, db: Tx = this.store): Promise<StartedVersion> {
    return db.tx(async (tx) => {
      const img = await this.require(identifier, tx);
      if (!IMAGE_NEXT[img.state].includes('UPDATING')) {
        throw new CellaError('INVALID_STATE', `image ${img.name} is ${img.state}`, { details: { resourceId: img.name, resourceType: 'MicrovmImage' } });
      }
      const request = await this.checkConfig(req, tx);
      const now = Date.now();
      const image = await setImageState(tx, img, 'UPDATING', now);
      return startVersion(tx, image, request, now, this.quotas, this.imageRoot(image.name));
    });
  }

  private async checkConfig(req: CreateImageRequest | UpdateImageRequest, db: Tx): Promise<ImageRequestConfig> {
    validateArtifactUri(req.codeArtifact.uri);
    await this.connectors.resolve([], req.egressNetworkConnectors, undefined, db);
    const base = this.arns.managedImageName(req.baseImageArn, 'baseImageArn');
    const names = this.managed().map((b) => b.name);
    if (!base || !names.includes(base)) {
      throw new CellaError(
        'INVALID_ARGUMENT',
        `baseImageArn ${req.baseImageArn} is not a managed base image; use one of: ${names.map((n) => this.arns.managedImage(n)).join(', ')}`,
      );
    }
    if (req.baseImageVersion !== undefined && req.baseImageVersion.replace(/\.0$/, '') !== MANAGED_VERSION) {
      throw new CellaError('INVALID_ARGUMENT', `baseImageVersion ${req.baseImageVersion} does not exist for ${base} (it has ${MANAGED_VERSION})`);
    }
    if (req.hooks?.microvmHooks && Object.entries(req.hooks.microvmHooks).some(([k, v]) => !k.endsWith('Seconds') && v === 'ENABLED')) {
      if (req.hooks.microvmImageHooks?.ready !== 'ENABLED') {
        throw new CellaError(
          'INVALID_ARGUMENT',
          'runtime hooks (run, resume, suspend, terminate) need the ready hook enabled too (hooks.microvmImageHooks.ready)',
        );
      }
    }
    const { clientToken: _t, ...config } = req as CreateImageRequest;
    const { name: _n, tags: _g, ...request } = config;
    return request;
  }

  /** Starts a recorded build (after the transaction that recorded it committed). */
  enqueue(started: StartedVersion): Promise<void> {
    return this.builds.enqueue(started);
  }

  /** One transaction: the version is written back as it was read, so nothing written between is lost. */
  setStatus(identifier: string, version: string, status: 'ACTIVE' | 'INACTIVE'): Promise<ImageVersionRecord> {
    return this.store.tx(async (tx) => {
      const v = await this.requireVersion(identifier, version, tx);
      if (v.status === status) return v;
      if (v.state === 'DELETING' || v.state === 'DELETED') {
        throw new CellaError('INVALID_STATE', `version ${version} is ${v.state}`, { details: { resourceId: version, resourceType: 'MicrovmImageVersion' } });
      }
      const next = { ...v, status, updatedAt: Date.now() };
      await tx.putVersion(next);
      return next;
    });
  }

  /** Idempotent; refuses the last version, one that is building, and one that live VMs use. */
  async deleteVersion(
    identifier: string,
    version: string,
    inUse: (name: string, version: string) => Promise<boolean>,
  ): Promise<{ name: string; state: VersionState }> {
    const img = await this.store.getImage(this.arns.imageName(identifier));
    const v = img && (await this.store.getVersion(img.name, version));
    if (!img || !v) return { name: img?.name ?? identifier, state: 'DELETED' };
    const details = { resourceId: version, resourceType: 'MicrovmImageVersion' };
    if ((await this.store.listVersions(img.name)).length === 1)
      throw new CellaError('INVALID_STATE', `version ${version} is the last version of ${img.name}; delete the image instead`, { details });
    if (v.state === 'PENDING' || v.state === 'IN_PROGRESS') throw new CellaError('INVALID_STATE', `version ${version} is still being built`, { details });
    if (await inUse(img.name, version)) throw new CellaError('INVALID_STATE', `version ${version} has live MicroVMs`, { details });
    await this.engine.forgetImage(path.join(v.dir, 'snapshot'));
    await this.store.deleteVersion(img.name, version);
    rmSync(v.dir, { recursive: true, force: true });
    return { name: img.name, state: 'DELETED' };
  }

  /**
   * Idempotent; refuses while a build runs or live VMs use any version. The
   * checks and DELETING are one transaction (`inUse` reads in it): a
   * RunMicrovm either committed its VM before them or finds the image DELETING.
   */
  async delete(identifier: string, inUse: (db: Tx, name: string) => Promise<boolean>): Promise<{ state: ImageState }> {
    const name = this.arns.imageName(identifier);
    const deleting = await this.store.tx(async (tx) => {
      const img = await tx.getImage(name);
      if (!img) return false;
      const details = { resourceId: name, resourceType: 'MicrovmImage' };
      if (img.state === 'CREATING' || img.state === 'UPDATING')
        throw new CellaError('INVALID_STATE', `image ${name} is ${img.state}: a build is running`, { details });
      if (await inUse(tx, name)) throw new CellaError('INVALID_STATE', `image ${name} has live MicroVMs`, { details });
      await setImageState(tx, img, 'DELETING', Date.now());
      return true;
    });
    if (!deleting) return { state: 'DELETED' };
    for (const v of await this.store.listVersions(name)) await this.engine.forgetImage(path.join(v.dir, 'snapshot'));
    await this.store.deleteImage(name);
    rmSync(this.imageRoot(name), { recursive: true, force: true });
    return { state: 'DELETED' };
  }

  /** Streams an uploaded zip to the server's artifact store (./upload.ts). */
  upload(req: IncomingMessage, maxBytes: number): Promise<Upload> {
    return storeUpload(path.join(this.dataDir, 'artifacts'), req, maxBytes);
  }

  /** After a restart: queued builds run again; a running one failed midway (./builds.ts). */
  recover(): Promise<void> {
    return this.builds.recover();
  }

  /** Prunes the layer cache down to `maxBytes` (least recently used first), between builds. */
  pruneCache(maxBytes: number): Promise<PruneResult> {
    return this.builds.pruneCache(maxBytes);
  }

  /** Stops starting builds (the queued ones run at the next start); resolves once the running one has ended. */
  close(): Promise<void> {
    return this.builds.close();
  }
}
