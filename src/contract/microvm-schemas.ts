/** The MicroVM operations' shapes (the contract's section 5) and their endpoints' tokens. */
import { Type, type Static } from '@sinclair/typebox';
import { Closed, ConnectorArns, Int, Paging, Port, Str, VersionString } from './schema-parts.js';
import { Logging, RoleArn, Time } from './schemas.js';
import { VM_STATES } from './states.js';

/** The contract's lower bound for maxIdleDurationSeconds; `cella server --min-idle-seconds` may lower it. */
export const CONTRACT_MIN_IDLE_SECONDS = 60;
export const MAX_DURATION_SECONDS = 28_800;
export const MAX_RUN_HOOK_PAYLOAD_BYTES = 4096;
export const MAX_TOKEN_MINUTES = 60;

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
      ingressNetworkConnectors: Type.Optional(ConnectorArns),
      egressNetworkConnectors: Type.Optional(ConnectorArns),
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
  startedAt: Time,
  terminatedAt: Type.Optional(Time),
  stateReason: Type.Optional(Type.String()),
  ingressNetworkConnectors: Type.Array(Type.String()),
  egressNetworkConnectors: Type.Array(Type.String()),
});
export type Microvm = Static<typeof Microvm>;

export const ListMicrovmsQuery = Type.Object(
  {
    ...Paging,
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
