/**
 * The Store: every read and write of durable state. A write is durable
 * before it returns.
 */
import { CellaError, type VmState } from '../contract/index.js';
import type { TokenRecord } from './access.js';
import type { ConnectorRecord } from './connectors.js';
import type { BuildRecord, ImageRecord, ImageVersionRecord } from './images.js';
import type { VmPage, VmPatch, VmRecord } from './vms.js';

export interface Store {
  close(): void;
  /** Runs `fn` atomically. */
  tx<T>(fn: () => T): T;

  insertVm(vm: VmRecord): void;
  getVm(id: string): VmRecord | undefined;
  /** Ordered by creation, oldest first. */
  listVms(page: VmPage): VmRecord[];
  /** Every VM not TERMINATED, oldest first. */
  liveVms(): VmRecord[];
  /**
   * Writes state and generation (and the patch) if the row is still at
   * `fromGeneration`; returns the row as written, or undefined if the VM
   * moved on (or is gone). Only the lifecycle's transition() calls this.
   */
  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): VmRecord | undefined;
  /** Writes fields that are not state (deadlines, pid) if the generation still matches; returns the row as written, or undefined. */
  patchVm(id: string, generation: number, patch: VmPatch): VmRecord | undefined;

  findIdempotent(scope: string, clientToken: string): { hash: string; resourceId: string } | undefined;
  /** Rejects if the (scope, clientToken) pair is already taken. */
  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): void;
  putToken(t: TokenRecord): void;
  getToken(jti: string): TokenRecord | undefined;
  /** Returns how many were deleted. */
  deleteTokensOf(vmId: string): number;

  /** Inserts, or replaces an image's arn, state, tags and updatedAt. */
  putImage(img: ImageRecord): void;
  getImage(name: string): ImageRecord | undefined;
  /** By name; `after` is the last name of the previous page. */
  listImages(opts?: { after?: string; limit?: number }): ImageRecord[];
  /** The image with its versions and builds. */
  deleteImage(name: string): void;
  /** Inserts, or replaces a version's state, status, stateReason, runtime and updatedAt. */
  putVersion(v: ImageVersionRecord): void;
  getVersion(imageName: string, version: string): ImageVersionRecord | undefined;
  /** Oldest (lowest major) first. */
  listVersions(imageName: string): ImageVersionRecord[];
  /** The version with its builds. */
  deleteVersion(imageName: string, version: string): void;
  /** Inserts, or replaces a build's state, stateReason, message, snapshotBuild and updatedAt. */
  putBuild(b: BuildRecord): void;
  getBuild(buildId: string): BuildRecord | undefined;
  /** Oldest first; every version's when `version` is omitted. */
  listBuilds(imageName: string, version?: string): BuildRecord[];

  /** Rejects if the name is taken. */
  putConnector(c: ConnectorRecord): void;
  getConnector(name: string): ConnectorRecord | undefined;
  /** By name. */
  listConnectors(): ConnectorRecord[];
  deleteConnector(name: string): void;

  apiKeyHashes(): string[];
  addApiKeyHash(hash: string): void;
  getSecret(name: string): Buffer | undefined;
  /** Inserts or replaces. */
  putSecret(name: string, value: Buffer): void;
}

/** What every Store rejects an insert of a taken key with (a write race the caller did not guard). */
export function duplicateKey(table: string): CellaError {
  return new CellaError('INTERNAL', `${table}: a row with this key already exists`);
}
