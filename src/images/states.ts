/**
 * The image, version and build lifecycles of the contract, one table each:
 * which state may follow which. The writers in ./records.ts check every
 * change against them.
 */
import { type BuildState, CellaError, type ImageState, type VersionState } from '../contract/index.js';

export const IMAGE_NEXT: Record<ImageState, readonly ImageState[]> = {
  CREATING: ['CREATED', 'CREATE_FAILED', 'DELETING'],
  CREATED: ['UPDATING', 'DELETING'],
  CREATE_FAILED: ['UPDATING', 'DELETING'],
  UPDATING: ['UPDATED', 'UPDATE_FAILED', 'DELETING'],
  UPDATED: ['UPDATING', 'DELETING'],
  UPDATE_FAILED: ['UPDATING', 'DELETING'],
  DELETING: ['DELETED', 'DELETE_FAILED'],
  DELETED: [],
  DELETE_FAILED: ['DELETING'],
};
export const VERSION_NEXT: Record<VersionState, readonly VersionState[]> = {
  PENDING: ['IN_PROGRESS', 'FAILED', 'DELETING'],
  IN_PROGRESS: ['SUCCESSFUL', 'FAILED'],
  SUCCESSFUL: ['DELETING'],
  FAILED: ['DELETING'],
  DELETING: ['DELETED', 'DELETE_FAILED'],
  DELETED: [],
  DELETE_FAILED: ['DELETING'],
};
export const BUILD_NEXT: Record<BuildState, readonly BuildState[]> = {
  PENDING: ['IN_PROGRESS', 'FAILED'],
  IN_PROGRESS: ['SUCCESSFUL', 'FAILED'],
  SUCCESSFUL: [],
  FAILED: [],
};

/** The image states whose versions RunMicrovm may launch (contract §4: image CREATED|UPDATED ∧ version SUCCESSFUL ∧ ACTIVE). */
export const RUNNABLE_IMAGE_STATES: readonly ImageState[] = ['CREATED', 'UPDATED'];

export function check<S extends string>(table: Record<S, readonly S[]>, what: string, from: S, to: S): void {
  if (!table[from].includes(to)) throw new CellaError('INTERNAL', `${what}: ${from} → ${to} is not a transition`);
}
