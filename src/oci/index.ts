/**
 * Container images from OCI distribution registries (Docker Hub, GHCR, a
 * local `registry:2`): reference parsing and pulling an image's root
 * filesystem and config into a directory tree.
 */
export { parseReference, type ImageReference } from './reference.js';
export { pullImage, type PullOptions, type PullResult } from './pull.js';
export type { Credentials } from './registry.js';
