/** What a build is given and gives back, shared by the build's parts (./build.ts and the files it calls). */
import type { Arns } from '../contract/index.js';
import type { S3Settings } from '../archive/index.js';
import type { Engine } from '../engine/index.js';
import type { NetworkPolicy } from '../net/index.js';
import type { ImageConfig, ImageVersionRecord, SnapshotBuild } from '../store/index.js';
import type { GuestArtifacts } from '../setup/index.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface BuildSettings {
  dataDir: string;
  /** FROM may name a managed base by its ARN. */
  arns: Arns;
  /** What RUN steps may reach, from the image's egress connectors. */
  resolveEgress: (connectors: string[] | undefined) => Promise<NetworkPolicy>;
  /** The guest artifacts: the managed bases are theirs. */
  guest: GuestArtifacts;
  s3?: S3Settings;
  insecureRegistries?: string[];
}

export interface BuildInput {
  buildId: string;
  imageArn: string;
  imageName: string;
  version: ImageVersionRecord;
  /** The image's tier: its baseline. The snapshot is captured at the tier's peak (guestSize). */
  memoryMiB: number;
}

export interface BuildOutcome {
  runtime: ImageConfig;
  snapshotBuild: SnapshotBuild;
}

export type Say = (line: string) => void;

/** What a build needs of the engine: a builder VM, a snapshot, and a clone to validate it. */
export type BuildEngine = Pick<Engine, 'startBuilder' | 'createSnapshot' | 'launch' | 'terminate'>;
