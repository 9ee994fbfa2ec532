/**
 * The HTTP contract in one place: TypeBox schemas that the server validates
 * with, that /openapi.json is generated from, and whose static types the
 * client uses. Ranges follow ../shared/reference/lambda-microvms-api.md.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { VM_STATES } from './states.js';

/** The contract's lower bound for maxIdleDurationSeconds; `cella server --min-idle-seconds` may lower it. */
export const CONTRACT_MIN_IDLE_SECONDS = 60;
export const MAX_DURATION_SECONDS = 28_800;
export const MAX_RUN_HOOK_PAYLOAD_BYTES = 4096;
export const MAX_TOKEN_MINUTES = 60;

const Str = (min: number, max: number, extra: Record<string, unknown> = {}) => Type.String({ minLength: min, maxLength: max, ...extra });
const Int = (min: number, max?: number) => Type.Integer(max === undefined ? { minimum: min } : { minimum: min, maximum: max });
const Port = Int(1, 65535);
const Closed = { additionalProperties: false } as const;

export const RoleArn = Str(20, 2048, { pattern: '^arn:aws[a-z\\-]*:iam::[0-9]{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$' });
const VersionString = Str(1, 2048, { pattern: '^\\S+$' });
const ConnectorArn = Str(1, 2048, { pattern: '^arn:' });
const Connectors = Type.Array(ConnectorArn, { maxItems: 10 });

export const IdlePolicy = (minIdleSeconds: number) =>
  Type.Object(
    {
      maxIdleDurationSeconds: Int(minIdleSeconds, MAX_DURATION_SECONDS),
      suspendedDurationSeconds: Int(0, MAX_DURATION_SECONDS),
      autoResumeEnabled: Type.Boolean(),
    },
    Closed,
  );
export type IdlePolicy = Static<ReturnType<typeof IdlePolicy>>;

export const Logging = Type.Union([
  Type.Object(
    {
      cloudWatch: Type.Object(
        { logGroup: Type.Optional(Str(1, 512, { pattern: '^[a-zA-Z0-9_\\-/.#]+$' })), logStream: Type.Optional(Str(1, 512, { pattern: '^[^:*]*$' })) },
        Closed,
      ),
    },
    Closed,
  ),
  Type.Object({ disabled: Type.Object({}, Closed) }, Closed),
]);
export type Logging = Static<typeof Logging>;

export const PortSpecification = Type.Union([
  Type.Object({ port: Port }, Closed),
  Type.Object({ range: Type.Object({ startPort: Port, endPort: Port }, Closed) }, Closed),
  Type.Object({ allPorts: Type.Object({}, Closed) }, Closed),
]);
export type PortSpecification = Static<typeof PortSpecification>;

export const RunMicrovmRequest = (minIdleSeconds: number) =>
  Type.Object(
    {
      imageIdentifier: Str(1, 256),
      imageVersion: Type.Optional(VersionString),
      executionRoleArn: Type.Optional(RoleArn),
      idlePolicy: Type.Optional(IdlePolicy(minIdleSeconds)),
      logging: Type.Optional(Logging),
      runHookPayload: Type.Optional(Type.String({ maxLength: MAX_RUN_HOOK_PAYLOAD_BYTES })),
      maximumDurationInSeconds: Type.Optional(Int(1, MAX_DURATION_SECONDS)),
      ingressNetworkConnectors: Type.Optional(Connectors),
      egressNetworkConnectors: Type.Optional(Connectors),
      clientToken: Type.Optional(Str(1, 128)),
    },
    Closed,
  );
export type RunMicrovmRequest = Static<ReturnType<typeof RunMicrovmRequest>>;

/**
 * A point in time as the restJson1 protocol sends it by default: seconds
 * since the epoch, a JSON number (with milliseconds as its fraction).
 */
export const Time = Type.Number({ description: 'seconds since 1970-01-01T00:00:00Z' });

export const Microvm = Type.Object({
  microvmId: Type.String(),
  state: Type.Union(VM_STATES.map((s) => Type.Literal(s))),
  endpoint: Type.String(),
  imageArn: Type.String(),
  imageVersion: Type.String(),
  executionRoleArn: Type.Optional(Type.String()),
  idlePolicy: Type.Optional(IdlePolicy(1)),
  maximumDurationInSeconds: Type.Integer(),
  startedAt: Time,
  terminatedAt: Type.Optional(Time),
  stateReason: Type.Optional(Type.String()),
  ingressNetworkConnectors: Type.Array(Type.String()),
  egressNetworkConnectors: Type.Array(Type.String()),
});
export type Microvm = Static<typeof Microvm>;

export const ListMicrovmsQuery = Type.Object(
  {
    maxResults: Type.Optional(Int(1, 50)),
    nextToken: Type.Optional(Str(1, 2048)),
    imageIdentifier: Type.Optional(Str(1, 256)),
    imageVersion: Type.Optional(VersionString),
  },
  Closed,
);
export type ListMicrovmsQuery = Static<typeof ListMicrovmsQuery>;

export const MicrovmSummary = Type.Object({
  microvmId: Type.String(),
  state: Type.Union(VM_STATES.map((s) => Type.Literal(s))),
  imageArn: Type.String(),
  imageVersion: Type.String(),
  startedAt: Time,
});
export type MicrovmSummary = Static<typeof MicrovmSummary>;

export const ListMicrovmsResponse = Type.Object({ items: Type.Array(MicrovmSummary), nextToken: Type.Optional(Type.String()) });
export type ListMicrovmsResponse = Static<typeof ListMicrovmsResponse>;

export const CreateAuthTokenRequest = Type.Object(
  { expirationInMinutes: Int(1, MAX_TOKEN_MINUTES), allowedPorts: Type.Array(PortSpecification, { minItems: 1, maxItems: 50 }) },
  Closed,
);
export type CreateAuthTokenRequest = Static<typeof CreateAuthTokenRequest>;

export const CreateShellAuthTokenRequest = Type.Object({ expirationInMinutes: Int(1, MAX_TOKEN_MINUTES) }, Closed);
export type CreateShellAuthTokenRequest = Static<typeof CreateShellAuthTokenRequest>;

export const AuthTokenResponse = Type.Object({ authToken: Type.Record(Type.String(), Type.String()) });
export type AuthTokenResponse = Static<typeof AuthTokenResponse>;

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
const Tags = Type.Record(Str(1, 128), Type.String({ maxLength: 256 }), { maxProperties: 50 });

/** ImageConfig: the build and run settings a create or update request carries, echoed back as sent. */
const imageConfigFields = {
  baseImageArn: Str(1, 2048),
  baseImageVersion: Type.Optional(Str(1, 2048)),
  /** The model requires it; Cella has no IAM, so it is recorded and optional. */
  buildRoleArn: Type.Optional(RoleArn),
  description: Type.Optional(Str(0, 256)),
  codeArtifact: CodeArtifact,
  logging: Type.Optional(Logging),
  egressNetworkConnectors: Type.Optional(Connectors),
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

export const ListQuery = Type.Object({ maxResults: Type.Optional(Int(1, 50)), nextToken: Type.Optional(Str(1, 2048)) }, Closed);
export const ListImagesQuery = Type.Object(
  { maxResults: Type.Optional(Int(1, 50)), nextToken: Type.Optional(Str(1, 2048)), nameFilter: Type.Optional(Str(1, 64)) },
  Closed,
);
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
    maxResults: Type.Optional(Int(1, 50)),
    nextToken: Type.Optional(Str(1, 2048)),
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

/** Cella extension: a customer egress connector, an allowlist of CIDRs and domain names (`*.example.com` for sub-domains). */
export const CreateConnectorRequest = Type.Object(
  {
    name: Str(1, 64, { pattern: '^[a-zA-Z0-9_-]+$' }),
    description: Type.Optional(Str(0, 256)),
    egress: Type.Object(
      {
        cidrs: Type.Optional(Type.Array(Str(7, 18), { maxItems: 64 })),
        domains: Type.Optional(Type.Array(Str(1, 255), { maxItems: 64 })),
      },
      Closed,
    ),
  },
  Closed,
);
export type CreateConnectorRequest = Static<typeof CreateConnectorRequest>;
export const NetworkConnector = Type.Object({
  networkConnectorArn: Type.String(),
  name: Type.String(),
  state: Type.Literal('ACTIVE'),
  description: Type.Optional(Type.String()),
  egress: Type.Object({ cidrs: Type.Array(Type.String()), domains: Type.Array(Type.String()) }),
  createdAt: Time,
});
export type NetworkConnector = Static<typeof NetworkConnector>;
export const ListConnectorsResponse = Type.Object({ items: Type.Array(NetworkConnector), nextToken: Type.Optional(Type.String()) });

/** Cella extension: a zip uploaded as the request body, kept by the server, named by the URI to put in codeArtifact. */
export const UploadedArtifact = Type.Object({ uri: Type.String(), sizeInBytes: Type.Integer(), sha256: Type.String() });
export type UploadedArtifact = Static<typeof UploadedArtifact>;

/** Cella extension: SigV4 access keys (what the AWS SDK signs with). The secret is answered once, at creation. */
export const AccessKey = Type.Object({ accessKeyId: Type.String(), createdAt: Time });
export type AccessKey = Static<typeof AccessKey>;
export const CreatedAccessKey = Type.Object({ accessKeyId: Type.String(), secretAccessKey: Type.String(), createdAt: Time });
export type CreatedAccessKey = Static<typeof CreatedAccessKey>;
export const ListAccessKeysResponse = Type.Object({ items: Type.Array(AccessKey), nextToken: Type.Optional(Type.String()) });
export type ListAccessKeysResponse = Static<typeof ListAccessKeysResponse>;
/** Uploads beyond this are refused (the contract's artifacts are zips on S3; 512 MiB keeps a host's disk safe). */
export const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;

export const Usage = Type.Object({
  microvmId: Type.Optional(Type.String()),
  runningSeconds: Type.Number(),
  vcpuSeconds: Type.Number(),
  gibSeconds: Type.Number(),
  snapshotBytesWritten: Type.Integer(),
  snapshotBytesRead: Type.Integer(),
  snapshotStorageGibHours: Type.Number(),
});
export type Usage = Static<typeof Usage>;
export const UsageReport = Type.Object({ total: Usage, microvms: Type.Array(Usage), nextToken: Type.Optional(Type.String()) });
export type UsageReport = Static<typeof UsageReport>;

export const ServerInfo = Type.Object({
  version: Type.String(),
  domain: Type.String(),
  /** The account in the server's ARNs (its region is `region`). */
  accountId: Type.String(),
  proxyPort: Type.Integer(),
  accelerator: Type.String(),
  /** The region SigV4 requests are signed for (and ARNs name). */
  region: Type.String(),
  /** PEM of the CA that signs the endpoints' certificate, when Cella made it. */
  caCertificate: Type.Optional(Type.String()),
});
export type ServerInfo = Static<typeof ServerInfo>;

/** The tag API's shapes: Lambda's, with capitalised members (`Tags`). The limits are checked by checkTags (./tags.ts). */
const TagMap = Type.Record(Type.String(), Type.String());
export const TagResourceRequest = Type.Object({ Tags: TagMap }, Closed);
export const UntagResourceQuery = Type.Object({ tagKeys: Type.Array(Type.String(), { minItems: 1, maxItems: 50 }) }, Closed);
export const ListTagsResponse = Type.Object({ Tags: TagMap });
export type ListTagsResponse = Static<typeof ListTagsResponse>;

export const LogsQuery = Type.Object({ follow: Type.Optional(Type.Boolean()) }, Closed);

export const ErrorBody = Type.Object({
  message: Type.String(),
  code: Type.String(),
  resourceId: Type.Optional(Type.String()),
  resourceType: Type.Optional(Type.String()),
});
export type ErrorBody = Static<typeof ErrorBody>;

export type { Static, TSchema };
