/**
 * The Store: every read and write of durable state, asynchronous so that a
 * network database (Postgres) can stand behind it without touching its
 * callers. A write is durable before its promise resolves.
 */
import { CellaError, type TaggableType, type VmState } from '../contract/index.js';
import type { AccessKeyRecord, TokenRecord } from './access.js';
import type { ConnectorRecord } from './connectors.js';
import type { E2bSandboxRecord } from './e2b.js';
import type { BuildRecord, ImageRecord, ImageVersionRecord } from './images.js';
import type { VmPage, VmPatch, VmRecord } from './vms.js';

/** What a transaction may do: every read and write, and transactions nested in it. */
export interface Tx {
  /**
   * Runs `fn` as one transaction: all of its writes or none (a throw rolls
   * them back), and no other caller's statement runs between its first and
   * its last. Inside `fn`, use only the `tx` it is given: a call on the
   * store it came from waits for the transaction to end, which waits for
   * `fn`. Keep `fn` to store calls and computation; it holds every other
   * caller back while it awaits. Nested in a transaction, `tx` is a
   * savepoint: its throw undoes only what it wrote.
   */
  tx<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;

  insertVm(vm: VmRecord): Promise<void>;
  getVm(id: string): Promise<VmRecord | undefined>;
  /** Ordered by creation, oldest first. */
  listVms(page: VmPage): Promise<VmRecord[]>;
  /** Every VM not TERMINATED, oldest first. */
  liveVms(): Promise<VmRecord[]>;
  /**
   * Writes state and generation (and the patch) if the row is still at
   * `fromGeneration`; returns the row as written, or undefined if the VM
   * moved on (or is gone). Only the lifecycle's transition() calls this.
   */
  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): Promise<VmRecord | undefined>;
  /** Writes fields that are not state (deadlines, pid) if the generation still matches; returns the row as written, or undefined. */
  patchVm(id: string, generation: number, patch: VmPatch): Promise<VmRecord | undefined>;

  findIdempotent(scope: string, clientToken: string): Promise<{ hash: string; resourceId: string } | undefined>;
  /** Rejects if the (scope, clientToken) pair is already taken. */
  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): Promise<void>;
  putToken(t: TokenRecord): Promise<void>;
  getToken(jti: string): Promise<TokenRecord | undefined>;
  /** Returns how many were deleted. */
  deleteTokensOf(vmId: string): Promise<number>;

  /** Inserts, or replaces an image's arn, state and updatedAt (never its tags: setTags). */
  putImage(img: ImageRecord): Promise<void>;
  getImage(name: string): Promise<ImageRecord | undefined>;
  /** By name; `after` is the last name of the previous page. */
  listImages(opts?: { after?: string; limit?: number }): Promise<ImageRecord[]>;
  /** The image with its versions and builds. */
  deleteImage(name: string): Promise<void>;
  /** Inserts, or replaces a version's state, status, stateReason, runtime and updatedAt. */
  putVersion(v: ImageVersionRecord): Promise<void>;
  getVersion(imageName: string, version: string): Promise<ImageVersionRecord | undefined>;
  /** Oldest (lowest major) first. */
  listVersions(imageName: string): Promise<ImageVersionRecord[]>;
  /** The version with its builds. */
  deleteVersion(imageName: string, version: string): Promise<void>;
  /** Inserts, or replaces a build's state, stateReason, message, snapshotBuild and updatedAt. */
  putBuild(b: BuildRecord): Promise<void>;
  getBuild(buildId: string): Promise<BuildRecord | undefined>;
  /** Oldest first; every version's when `version` is omitted. */
  listBuilds(imageName: string, version?: string): Promise<BuildRecord[]>;

  /** Rejects if the name is taken. */
  putConnector(c: ConnectorRecord): Promise<void>;
  getConnector(name: string): Promise<ConnectorRecord | undefined>;
  /** By name. */
  listConnectors(): Promise<ConnectorRecord[]>;
  deleteConnector(name: string): Promise<void>;

  /** Rejects if the id is taken. */
  putAccessKey(k: AccessKeyRecord): Promise<void>;
  getAccessKey(id: string): Promise<AccessKeyRecord | undefined>;
  /** Oldest first. */
  listAccessKeys(): Promise<AccessKeyRecord[]>;
  /** Returns whether there was one to delete. */
  deleteAccessKey(id: string): Promise<boolean>;

  /** Replaces the tags of an image or connector; false if there is none of that name. */
  setTags(type: TaggableType, name: string, tags: Record<string, string>): Promise<boolean>;

  /** Inserts, or replaces a sandbox's default user. */
  putE2bSandbox(s: E2bSandboxRecord): Promise<void>;
  getE2bSandbox(vmId: string): Promise<E2bSandboxRecord | undefined>;
  /** The sandboxes whose MicroVM is not TERMINATED, oldest first. */
  liveE2bSandboxes(): Promise<E2bSandboxRecord[]>;

  apiKeyHashes(): Promise<string[]>;
  addApiKeyHash(hash: string): Promise<void>;
  getSecret(name: string): Promise<Buffer | undefined>;
  /** Inserts or replaces. */
  putSecret(name: string, value: Buffer): Promise<void>;
}

export interface Store extends Tx {
  /** Waits for the transaction under way, if any, then closes. */
  close(): Promise<void>;
}

/** The operations of a Tx as a backend runs them: synchronously, one at a time (./session.ts makes them a Store). */
export type Ops = { [K in Exclude<keyof Tx, 'tx'>]: (...args: Parameters<Tx[K]>) => Awaited<ReturnType<Tx[K]>> };

/** What every Store rejects an insert of a taken key with (a write race the caller did not guard). */
export function duplicateKey(table: string): CellaError {
  return new CellaError('INTERNAL', `${table}: a row with this key already exists`);
}
