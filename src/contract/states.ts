/**
 * The contract's states (section 4): MicroVMs, images, image versions and
 * builds. Which state may follow which is the job of each lifecycle's own
 * table (src/lifecycle/states.ts, src/images).
 */
export const VM_STATES = ['PENDING', 'RUNNING', 'SUSPENDING', 'SUSPENDED', 'TERMINATING', 'TERMINATED'] as const;
export type VmState = (typeof VM_STATES)[number];

export const IMAGE_STATES = ['CREATING', 'CREATED', 'CREATE_FAILED', 'UPDATING', 'UPDATED', 'UPDATE_FAILED', 'DELETING', 'DELETED', 'DELETE_FAILED'] as const;
export type ImageState = (typeof IMAGE_STATES)[number];
export const VERSION_STATES = ['PENDING', 'IN_PROGRESS', 'SUCCESSFUL', 'FAILED', 'DELETING', 'DELETED', 'DELETE_FAILED'] as const;
export type VersionState = (typeof VERSION_STATES)[number];
export const BUILD_STATES = ['PENDING', 'IN_PROGRESS', 'SUCCESSFUL', 'FAILED'] as const;
export type BuildState = (typeof BUILD_STATES)[number];
