/**
 * The HTTP contract in one place: TypeBox schemas that the server validates
 * with, that /openapi.json is generated from, and whose static types the
 * client uses. Ranges follow ../shared/reference/lambda-microvms-api.md.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export const API_VERSION = '2025-09-09';
/** The contract's lower bound for maxIdleDurationSeconds; `cella server --min-idle-seconds` may lower it. */
export const CONTRACT_MIN_IDLE_SECONDS = 60;
export const MAX_DURATION_SECONDS = 28_800;
export const MAX_RUN_HOOK_PAYLOAD_BYTES = 4096;
export const MAX_TOKEN_MINUTES = 60;

export const VM_STATES = ['PENDING', 'RUNNING', 'SUSPENDING', 'SUSPENDED', 'TERMINATING', 'TERMINATED'] as const;
export type VmState = (typeof VM_STATES)[number];

const Str = (min: number, max: number, extra: Record<string, unknown> = {}) => Type.String({ minLength: min, maxLength: max, ...extra });
const Int = (min: number, max?: number) => Type.Integer(max === undefined ? { minimum: min } : { minimum: min, maximum: max });
const Port = Int(1, 65535);
const Closed = { additionalProperties: false } as const;

export const RoleArn = Str(20, 2048, { pattern: '^arn:aws[a-z\\-]*:iam::[0-9]{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$' });
const ImageVersion = Str(1, 2048, { pattern: '^\\S+$' });
const ConnectorArn = Str(1, 2048, { pattern: '^arn:' });
const Connectors = Type.Array(ConnectorArn, { maxItems: 10 });
/** The ARN of a platform-managed connector (HTTP_INGRESS, SHELL_INGRESS, ALL_INGRESS, NO_INGRESS, INTERNET_EGRESS). */
export const connectorArn = (name: string): string => `arn:aws:lambda:local:aws:network-connector:aws-network-connector:${name}`;

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
      imageVersion: Type.Optional(ImageVersion),
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

export const Microvm = Type.Object({
  microvmId: Type.String(),
  state: Type.Union(VM_STATES.map((s) => Type.Literal(s))),
  endpoint: Type.String(),
  imageArn: Type.String(),
  imageVersion: Type.String(),
  executionRoleArn: Type.Optional(Type.String()),
  idlePolicy: Type.Optional(IdlePolicy(1)),
  maximumDurationInSeconds: Type.Integer(),
  startedAt: Type.String({ format: 'date-time' }),
  terminatedAt: Type.Optional(Type.String({ format: 'date-time' })),
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
    imageVersion: Type.Optional(ImageVersion),
  },
  Closed,
);
export type ListMicrovmsQuery = Static<typeof ListMicrovmsQuery>;

export const MicrovmSummary = Type.Object({
  microvmId: Type.String(),
  state: Type.Union(VM_STATES.map((s) => Type.Literal(s))),
  imageArn: Type.String(),
  imageVersion: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
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

/** The endpoint's names (contract §6): headers, their reserved prefix, WebSocket subprotocols, the default port. */
export const AUTH_HEADER = 'X-aws-proxy-auth';
export const PORT_HEADER = 'X-aws-proxy-port';
export const RESERVED_HEADER_PREFIX = 'X-aws-proxy-';
export const WS_MARKER = 'lambda-microvms';
export const WS_AUTH_PREFIX = 'lambda-microvms.authentication.';
export const WS_PORT_PREFIX = 'lambda-microvms.port.';
export const DEFAULT_ENDPOINT_PORT = 8080;
export const SHELL_PATH = '/shell';
export const AuthTokenResponse = Type.Object({ authToken: Type.Record(Type.String(), Type.String()) });
export type AuthTokenResponse = Static<typeof AuthTokenResponse>;

export const HookSettings = Type.Object(
  {
    port: Port,
    microvmHooks: Type.Optional(
      Type.Object(
        {
          run: Type.Optional(Type.Union([Type.Literal('ENABLED'), Type.Literal('DISABLED')])),
          resume: Type.Optional(Type.Union([Type.Literal('ENABLED'), Type.Literal('DISABLED')])),
          suspend: Type.Optional(Type.Union([Type.Literal('ENABLED'), Type.Literal('DISABLED')])),
          terminate: Type.Optional(Type.Union([Type.Literal('ENABLED'), Type.Literal('DISABLED')])),
          runTimeoutInSeconds: Type.Optional(Int(1, 60)),
          resumeTimeoutInSeconds: Type.Optional(Int(1, 60)),
          suspendTimeoutInSeconds: Type.Optional(Int(1, 60)),
          terminateTimeoutInSeconds: Type.Optional(Int(1, 60)),
        },
        Closed,
      ),
    ),
  },
  Closed,
);
export type HookSettings = Static<typeof HookSettings>;

/** Cella extension (until Dockerfile images land): an image from a local root filesystem folder and a start command. */
export const RegisterImageRequest = Type.Object(
  {
    name: Str(1, 64, { pattern: '^[a-zA-Z0-9_-]+$' }),
    rootfsDir: Str(1, 4096, { pattern: '^/' }),
    command: Type.Array(Str(1, 4096), { minItems: 1, maxItems: 256 }),
    environmentVariables: Type.Optional(Type.Record(Str(1, 256, { pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String({ maxLength: 4096 }), { maxProperties: 50 })),
    workingDirectory: Type.Optional(Str(1, 4096, { pattern: '^/' })),
    port: Type.Optional(Port),
    memoryMiB: Type.Optional(Type.Union([512, 1024, 2048, 4096, 8192, 256].map((n) => Type.Literal(n)))),
    hooks: Type.Optional(HookSettings),
    clientToken: Type.Optional(Str(1, 128)),
  },
  Closed,
);
export type RegisterImageRequest = Static<typeof RegisterImageRequest>;

export const Image = Type.Object({
  imageArn: Type.String(),
  name: Type.String(),
  state: Type.String(),
  imageVersion: Type.String(),
  memoryMiB: Type.Integer(),
  vcpus: Type.Integer(),
  port: Type.Integer(),
  hooks: Type.Optional(HookSettings),
  snapshot: Type.Optional(
    Type.Object({ memorySnapshotSizeInBytes: Type.Integer(), diskSnapshotSizeInBytes: Type.Integer(), deviceStateSizeInBytes: Type.Integer() }),
  ),
  stateReason: Type.Optional(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
});
export type Image = Static<typeof Image>;
export const ListImagesResponse = Type.Object({ items: Type.Array(Image), nextToken: Type.Optional(Type.String()) });
export type ListImagesResponse = Static<typeof ListImagesResponse>;

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
  proxyPort: Type.Integer(),
  accelerator: Type.String(),
  /** PEM of the CA that signs the endpoints' certificate, when Cella made it. */
  caCertificate: Type.Optional(Type.String()),
});
export type ServerInfo = Static<typeof ServerInfo>;

export const LogsQuery = Type.Object({ follow: Type.Optional(Type.Boolean()) }, Closed);

export const ErrorBody = Type.Object({
  message: Type.String(),
  code: Type.String(),
  resourceId: Type.Optional(Type.String()),
  resourceType: Type.Optional(Type.String()),
});
export type ErrorBody = Static<typeof ErrorBody>;

export type { Static, TSchema };
