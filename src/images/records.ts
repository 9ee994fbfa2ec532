/**
 * The image, version and build records: a new version and its build within
 * the quotas, a build's outcome, and the writers of state. Each writer writes
 * back a record read in the same transaction `tx` (what it does not change
 * stays as it is) and checks the change against the tables in ./states.ts.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { CellaError, type ImageRequestConfig, type ImageState } from '../contract/index.js';
import type { BuildRecord, ImageRecord, ImageVersionRecord, Store, Tx } from '../store/index.js';
import { BUILD_NEXT, check, IMAGE_NEXT, VERSION_NEXT } from './states.js';

/** The contract's image quotas (per account; Cella has one). */
export interface ImageQuotas {
  images: number;
  versionsPerImage: number;
  /** Builds queued or running at once. */
  concurrentBuilds: number;
}
export const DEFAULT_IMAGE_QUOTAS: ImageQuotas = { images: 100, versionsPerImage: 50, concurrentBuilds: 5 };

export interface StartedVersion {
  image: ImageRecord;
  version: ImageVersionRecord;
  build: BuildRecord;
}

/** Records a new version and its build, within the quotas on versions and builds. */
export async function startVersion(
  tx: Tx,
  image: ImageRecord,
  request: ImageRequestConfig,
  now: number,
  quotas: ImageQuotas,
  root: string,
): Promise<StartedVersion> {
  const versions = await tx.listVersions(image.name);
  if (versions.length >= quotas.versionsPerImage) {
    throw quotaExceeded(
      'microvm-image-versions',
      `image ${image.name} has ${versions.length} versions; the quota is ${quotas.versionsPerImage}`,
      image.name,
      'MicrovmImage',
    );
  }
  let building = 0;
  for (const img of await tx.listImages())
    building += (await tx.listVersions(img.name)).filter((v) => v.state === 'PENDING' || v.state === 'IN_PROGRESS').length;
  if (building >= quotas.concurrentBuilds) {
    throw quotaExceeded(
      'concurrent-image-builds',
      `${building} builds are queued or running; the quota is ${quotas.concurrentBuilds}`,
      image.name,
      'MicrovmImage',
    );
  }
  const major = Math.max(0, ...versions.map((v) => v.major)) + 1;
  const version: ImageVersionRecord = {
    imageName: image.name,
    version: `${major}.0`,
    major,
    state: 'PENDING',
    status: 'ACTIVE',
    stateReason: null,
    request,
    runtime: null,
    dir: path.join(root, `v${major}`),
    createdAt: now,
    updatedAt: null,
  };
  const build: BuildRecord = {
    buildId: randomUUID(),
    imageName: image.name,
    version: version.version,
    state: 'PENDING',
    stateReason: null,
    message: null,
    snapshotBuild: null,
    createdAt: now,
    updatedAt: null,
  };
  await tx.putVersion(version);
  await tx.putBuild(build);
  return { image, version, build };
}

export async function finishBuild(
  store: Store,
  buildId: string,
  r:
    | { ok: true; runtime: NonNullable<ImageVersionRecord['runtime']>; snapshotBuild: BuildRecord['snapshotBuild'] }
    | { ok: false; reason: NonNullable<BuildRecord['stateReason']>; message: string; snapshotBuild: BuildRecord['snapshotBuild'] },
): Promise<void> {
  const failedVersionDir = await store.tx(async (tx) => {
    const b = await tx.getBuild(buildId);
    const v = b && (await tx.getVersion(b.imageName, b.version));
    const img = b && (await tx.getImage(b.imageName));
    if (!b || !v || !img) return undefined;
    const now = Date.now();
    if (r.ok) {
      await setBuild(tx, b, { state: 'SUCCESSFUL', snapshotBuild: r.snapshotBuild }, now);
      await setVersion(tx, v, { state: 'SUCCESSFUL', runtime: r.runtime }, now);
    } else {
      await setBuild(tx, b, { state: 'FAILED', stateReason: r.reason, message: r.message, snapshotBuild: r.snapshotBuild }, now);
      await setVersion(tx, v, { state: 'FAILED', stateReason: r.reason }, now);
    }
    if (img.state === 'CREATING' || img.state === 'UPDATING') {
      const done = img.state === 'CREATING' ? (r.ok ? 'CREATED' : 'CREATE_FAILED') : r.ok ? 'UPDATED' : 'UPDATE_FAILED';
      await setImageState(tx, img, done, now);
    }
    return r.ok ? undefined : v.dir;
  });
  // A failed version keeps its record and log, not its half-written files.
  if (failedVersionDir) rmSync(failedVersionDir, { recursive: true, force: true });
}

export async function setImageState(tx: Tx, img: ImageRecord, to: ImageState, now: number): Promise<ImageRecord> {
  check(IMAGE_NEXT, `image ${img.name}`, img.state, to);
  const next = { ...img, state: to, updatedAt: now };
  await tx.putImage(next);
  return next;
}

export async function setVersion(
  tx: Tx,
  v: ImageVersionRecord,
  patch: Partial<Pick<ImageVersionRecord, 'state' | 'stateReason' | 'runtime'>>,
  now = Date.now(),
): Promise<void> {
  if (patch.state) check(VERSION_NEXT, `version ${v.imageName} ${v.version}`, v.state, patch.state);
  await tx.putVersion({ ...v, ...patch, updatedAt: now });
}

export async function setBuild(
  tx: Tx,
  b: BuildRecord,
  patch: Partial<Pick<BuildRecord, 'state' | 'stateReason' | 'message' | 'snapshotBuild'>>,
  now = Date.now(),
): Promise<void> {
  if (patch.state) check(BUILD_NEXT, `build ${b.buildId}`, b.state, patch.state);
  await tx.putBuild({ ...b, ...patch, updatedAt: now });
}

/** ServiceQuotaExceededException with the contract's fields; `quotaCode` says which quota. */
export function quotaExceeded(quotaCode: string, message: string, resourceId: string, resourceType: string): CellaError {
  return new CellaError('QUOTA_EXCEEDED', message, { details: { resourceId, resourceType, serviceCode: 'cella', quotaCode } });
}
