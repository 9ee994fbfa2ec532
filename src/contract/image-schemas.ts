/**
 * The image operations' shapes (the contract's sections 2–4): images, their
 * versions and builds, managed bases, runtime hooks, and the memory tiers.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Closed, ConnectorArns, Int, Paging, Port, Str, Tags } from './schema-parts.js';
import { Logging, RoleArn, Time } from './schemas.js';

const Toggle = Type.Union([Type.Literal('ENABLED'), Type.Literal('DISABLED')]);
export const HookSettings = Type.Object(
  {
    // Optional in the SDK's model; DEFAULT_HOOK_PORT when left out.
    port: Type.Optional(Port),
    microvmHooks: Type.Optional(
      Type.Object(
        {
          run: Type.Optional(Toggle),
          resume: Type.Optional(Toggle),
          suspend: Type.Optional(Toggle),
          terminate: Type.Optional(Toggle),
          runTimeoutInSeconds: Type.Optional(Int(1, 60)),
          resumeTimeoutInSeconds: Type.Optional(Int(1, 60)),
          suspendTimeoutInSeconds: Type.Optional(Int(1, 60)),
          terminateTimeoutInSeconds: Type.Optional(Int(1, 60)),
        },
        Closed,
      ),
    ),
    microvmImageHooks: Type.Optional(
      Type.Object(
        {
          ready: Type.Optional(Toggle),
          validate: Type.Optional(Toggle),
          readyTimeoutInSeconds: Type.Optional(Int(1, 3600)),
          validateTimeoutInSeconds: Type.Optional(Int(1, 3600)),
        },
        Closed,
      ),
    ),
  },
  Closed,
);
export type HookSettings = Static<typeof HookSettings>;

export const IMAGE_NAME_PATTERN = '^[a-zA-Z0-9_-]+$';
/** The contract's size tiers, plus 256 MiB (a Cella extension for small sandboxes and tests). */
export const MEMORY_TIERS_MIB = [256, 512, 1024, 2048, 4096, 8192] as const;
export const DEFAULT_MEMORY_MIB = 2048;
/**
 * The contract's sizing: a tier (`minimumMemoryInMiB`) is the baseline; the
 * guest is given its peak, 4× the baseline, with a vCPU per 2 GiB of that
 * peak (0.5 GB → 2 GB and 1 vCPU, ..., 8 GB → 32 GB and 16 vCPUs), at least one.
 */
export const PEAK_MEMORY_FACTOR = 4;
export function guestSize(baselineMiB: number): { memoryMiB: number; vcpus: number } {
  const memoryMiB = baselineMiB * PEAK_MEMORY_FACTOR;
  return { memoryMiB, vcpus: Math.max(1, Math.floor(memoryMiB / 2048)) };
}
/** A tier's baseline vCPUs (vCPU = GiB / 2, as a fraction): compute is metered at the baseline. */
export function baselineVcpus(baselineMiB: number): number {
  return baselineMiB / 2048;
}
export const MAX_ENV_VARS = 50;

const CodeArtifact = Type.Object(
  {
    /** `s3://bucket/key.zip`, `file:///abs/app.zip`, or what UploadCodeArtifact returned. */
    uri: Str(1, 2048),
  },
  Closed,
);

/** ImageConfig: the build and run settings a create or update request carries, echoed back as sent. */
const imageConfigFields = {
  baseImageArn: Str(1, 2048),
  baseImageVersion: Type.Optional(Str(1, 2048)),
  /** The model requires it; Cella has no IAM, so it is recorded and optional. */
  buildRoleArn: Type.Optional(RoleArn),
  description: Type.Optional(Str(0, 256)),
  codeArtifact: CodeArtifact,
  logging: Type.Optional(Logging),
  egressNetworkConnectors: Type.Optional(ConnectorArns),
  cpuConfigurations: Type.Optional(
    Type.Array(Type.Object({ architecture: Type.Union([Type.Literal('X86_64'), Type.Literal('ARM_64')]) }, Closed), { maxItems: 1 }),
  ),
  resources: Type.Optional(Type.Array(Type.Object({ minimumMemoryInMiB: Type.Union(MEMORY_TIERS_MIB.map((n) => Type.Literal(n))) }, Closed), { maxItems: 1 })),
  additionalOsCapabilities: Type.Optional(Type.Array(Type.Literal('ALL'), { maxItems: 1 })),
  hooks: Type.Optional(HookSettings),
  environmentVariables: Type.Optional(
    Type.Record(Str(1, 256, { pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String({ maxLength: 4096 }), { maxProperties: MAX_ENV_VARS }),
  ),
};
export const ImageRequestConfig = Type.Object(imageConfigFields, Closed);
export type ImageRequestConfig = Static<typeof ImageRequestConfig>;

export const CreateImageRequest = Type.Object(
  { name: Str(1, 64, { pattern: IMAGE_NAME_PATTERN }), ...imageConfigFields, tags: Type.Optional(Tags), clientToken: Type.Optional(Str(1, 128)) },
  Closed,
);
export type CreateImageRequest = Static<typeof CreateImageRequest>;
export const UpdateImageRequest = Type.Object({ ...imageConfigFields, clientToken: Type.Optional(Str(1, 128)) }, Closed);
export type UpdateImageRequest = Static<typeof UpdateImageRequest>;

const ImageStateT = Type.String();

/** Create/Update answer: the image, the new version's config and its number. */
export const ImageVersionStarted = Type.Object({
  imageArn: Type.String(),
  name: Type.String(),
  state: ImageStateT,
  imageVersion: Type.String(),
  latestActiveImageVersion: Type.Optional(Type.String()),
  latestFailedImageVersion: Type.Optional(Type.String()),
  createdAt: Time,
  updatedAt: Type.Optional(Time),
  tags: Type.Optional(Tags),
  /** Cella extension: the build that makes the version (its log follows with GetMicrovmImageBuildLog). */
  buildId: Type.String(),
  ...imageConfigFields,
});
export type ImageVersionStarted = Static<typeof ImageVersionStarted>;

export const MicrovmImage = Type.Object({
  imageArn: Type.String(),
  name: Type.String(),
  state: ImageStateT,
  latestActiveImageVersion: Type.Optional(Type.String()),
  latestFailedImageVersion: Type.Optional(Type.String()),
  createdAt: Time,
  updatedAt: Type.Optional(Time),
  tags: Type.Optional(Tags),
});
export type MicrovmImage = Static<typeof MicrovmImage>;

export const ListImagesQuery = Type.Object({ ...Paging, nameFilter: Type.Optional(Str(1, 64)) }, Closed);
export const MicrovmImageSummary = Type.Omit(MicrovmImage, ['updatedAt', 'tags']);
export type MicrovmImageSummary = Static<typeof MicrovmImageSummary>;
export const ListImagesResponse = Type.Object({
  items: Type.Array(MicrovmImageSummary),
  nextToken: Type.Optional(Type.String()),
});
export type ListImagesResponse = Static<typeof ListImagesResponse>;
export const DeleteImageResponse = Type.Object({ imageIdentifier: Type.String(), state: ImageStateT });
export type DeleteImageResponse = Static<typeof DeleteImageResponse>;

export const ImageVersion = Type.Object({
  imageArn: Type.String(),
  imageVersion: Type.String(),
  state: Type.String(),
  status: Type.Union([Type.Literal('ACTIVE'), Type.Literal('INACTIVE')]),
  createdAt: Time,
  updatedAt: Type.Optional(Time),
  stateReason: Type.Optional(Type.String()),
  tags: Type.Optional(Tags),
  ...imageConfigFields,
});
export type ImageVersion = Static<typeof ImageVersion>;
export const ListImageVersionsResponse = Type.Object({ items: Type.Array(ImageVersion), nextToken: Type.Optional(Type.String()) });
export type ListImageVersionsResponse = Static<typeof ListImageVersionsResponse>;
export const UpdateImageVersionRequest = Type.Object({ status: Type.Union([Type.Literal('ACTIVE'), Type.Literal('INACTIVE')]) }, Closed);
export const DeleteImageVersionResponse = Type.Object({ imageIdentifier: Type.String(), imageVersion: Type.String(), state: Type.String() });
export type DeleteImageVersionResponse = Static<typeof DeleteImageVersionResponse>;

export const SnapshotBuild = Type.Object({
  memorySnapshotSizeInBytes: Type.Optional(Type.Integer()),
  codeInstallSizeInBytes: Type.Optional(Type.Integer()),
  diskSnapshotSizeInBytes: Type.Optional(Type.Integer()),
});
export const BuildSummary = Type.Object({
  imageArn: Type.String(),
  imageVersion: Type.String(),
  buildId: Type.String(),
  buildState: Type.String(),
  architecture: Type.String(),
  chipset: Type.String(),
  chipsetGeneration: Type.String(),
  stateReason: Type.Optional(Type.String()),
  /** Cella extension: the reason in words. */
  stateReasonMessage: Type.Optional(Type.String()),
  createdAt: Time,
});
export type BuildSummary = Static<typeof BuildSummary>;
export const ImageBuild = Type.Object({ ...BuildSummary.properties, snapshotBuild: Type.Optional(SnapshotBuild) });
export type ImageBuild = Static<typeof ImageBuild>;
export const ListImageBuildsQuery = Type.Object(
  {
    ...Paging,
    architecture: Type.Optional(Str(1, 64)),
    chipset: Type.Optional(Str(1, 64)),
    chipsetGeneration: Type.Optional(Str(1, 64)),
  },
  Closed,
);
export const ListImageBuildsResponse = Type.Object({ items: Type.Array(BuildSummary), nextToken: Type.Optional(Type.String()) });
export type ListImageBuildsResponse = Static<typeof ListImageBuildsResponse>;

export const ManagedImage = Type.Object({
  imageArn: Type.String(),
  createdAt: Time,
  updatedAt: Type.Optional(Time),
  description: Type.Optional(Type.String()),
});
export type ManagedImage = Static<typeof ManagedImage>;
export const ListManagedImagesResponse = Type.Object({ items: Type.Array(ManagedImage), nextToken: Type.Optional(Type.String()) });
export type ListManagedImagesResponse = Static<typeof ListManagedImagesResponse>;
export const ManagedImageVersion = Type.Object({
  imageArn: Type.String(),
  imageVersion: Type.String(),
  status: Type.Union([Type.Literal('AVAILABLE'), Type.Literal('DEPRECATED')]),
  createdAt: Time,
  updatedAt: Type.Optional(Time),
});
export type ManagedImageVersion = Static<typeof ManagedImageVersion>;
export const ListManagedImageVersionsResponse = Type.Object({ items: Type.Array(ManagedImageVersion), nextToken: Type.Optional(Type.String()) });
export type ListManagedImageVersionsResponse = Static<typeof ListManagedImageVersionsResponse>;
