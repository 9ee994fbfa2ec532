/** The image tables: `microvm_images`, their `image_versions` and each version's `image_builds`. */
import type { BuildFailureReason, BuildState, HookSettings, ImageRequestConfig, ImageState, VersionState } from '../contract/index.js';
import { int, json, nullable, text, type Table } from './columns.js';

/** A MicrovmImage: a name whose versions are built from code artifacts. */
export interface ImageRecord {
  name: string;
  arn: string;
  state: ImageState;
  /** Written at creation and by setTags only (a putImage of an existing image keeps them). */
  tags: Record<string, string>;
  createdAt: number;
  updatedAt: number | null;
}

/** One build of an image from one request; what RunMicrovm launches. */
export interface ImageVersionRecord {
  imageName: string;
  /** `<major>.0`; major counts up from 1 per image. */
  version: string;
  major: number;
  state: VersionState;
  status: 'ACTIVE' | 'INACTIVE';
  stateReason: string | null;
  /** The ImageConfig fields of the create/update request, echoed as sent. */
  request: ImageRequestConfig;
  /** How to start the app and call it; set once the build has resolved the Dockerfile. */
  runtime: ImageConfig | null;
  /** The version's folder: rootfs.ext4 and snapshot/. */
  dir: string;
  createdAt: number;
  updatedAt: number | null;
}

/**
 * The app as the build resolved it from the Dockerfile and the request. It is
 * the images' runtime description, but it is kept here because it is what
 * `image_versions.runtime` holds: the store cannot import it from above.
 */
export interface ImageConfig {
  command: string[];
  environmentVariables: Record<string, string>;
  workingDirectory: string;
  uid?: number;
  gid?: number;
  /** The endpoint's default port, and the one a build waits for without a ready hook. */
  port: number;
  /** The tier, the baseline: what the memory quota and metering count. The guest has the snapshot's size, the tier's peak. */
  memoryMiB: number;
  /** The guest's vCPUs (at its peak): its cgroup, its endpoint limits. */
  vcpus: number;
  hooks?: HookSettings;
  /** The image's egress connectors: a RunMicrovm that names none gets these (else the contract's default). */
  egressNetworkConnectors?: string[];
}

export interface SnapshotBuild {
  memorySnapshotSizeInBytes?: number;
  codeInstallSizeInBytes?: number;
  diskSnapshotSizeInBytes?: number;
}

export interface BuildRecord {
  buildId: string;
  imageName: string;
  version: string;
  state: BuildState;
  stateReason: BuildFailureReason | null;
  /** Why, in words (Cella extension; the log has the whole story). */
  message: string | null;
  snapshotBuild: SnapshotBuild | null;
  createdAt: number;
  updatedAt: number | null;
}

export const IMAGES: Table<ImageRecord> = {
  name: 'microvm_images',
  key: ['name'],
  mutable: ['arn', 'state', 'updatedAt'],
  columns: {
    name: text('name'),
    arn: text('arn'),
    state: text('state'),
    tags: json('tags'),
    createdAt: int('created_at'),
    updatedAt: nullable(int('updated_at')),
  },
};

export const VERSIONS: Table<ImageVersionRecord> = {
  name: 'image_versions',
  key: ['imageName', 'version'],
  mutable: ['state', 'status', 'stateReason', 'runtime', 'updatedAt'],
  columns: {
    imageName: text('image_name'),
    version: text('version'),
    major: int('major'),
    state: text('state'),
    status: text('status'),
    stateReason: nullable(text('state_reason')),
    request: json('request'),
    runtime: nullable(json('runtime')),
    dir: text('dir'),
    createdAt: int('created_at'),
    updatedAt: nullable(int('updated_at')),
  },
};

export const BUILDS: Table<BuildRecord> = {
  name: 'image_builds',
  key: ['buildId'],
  mutable: ['state', 'stateReason', 'message', 'snapshotBuild', 'updatedAt'],
  columns: {
    buildId: text('build_id'),
    imageName: text('image_name'),
    version: text('version'),
    state: text('state'),
    stateReason: nullable(text('state_reason')),
    message: nullable(text('message')),
    snapshotBuild: nullable(json('snapshot_build')),
    createdAt: int('created_at'),
    updatedAt: nullable(int('updated_at')),
  },
};
