/**
 * The E2B REST contract as the `e2b` SDK (2.51) and its Python twin use it
 * (../shared/reference/e2b-compat.md §2): request bodies as TypeBox schemas,
 * and the shapes answered. Fields the SDK may send that Cella does not act
 * on are accepted (extra properties too: a newer SDK may add some); fields
 * asking for what Cella cannot do are refused by the handler with 501.
 */
import { type Static, Type } from '@sinclair/typebox';

const Timeout = Type.Integer({ minimum: 0 });
const StringMap = Type.Record(Type.String(), Type.String());

export const NewSandboxBody = Type.Object({
  templateID: Type.Optional(Type.String({ minLength: 1 })),
  /** Seconds; absent means 300 (v1 SDKs always send it). */
  timeout: Type.Optional(Timeout),
  metadata: Type.Optional(StringMap),
  envVars: Type.Optional(StringMap),
  allow_internet_access: Type.Optional(Type.Boolean()),
  network: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  autoPause: Type.Optional(Type.Boolean()),
  autoPauseMemory: Type.Optional(Type.Boolean()),
  autoResume: Type.Optional(Type.Object({ enabled: Type.Boolean() })),
  /** Accepted and ignored: the SDK starts the MCP gateway itself with commands.run. */
  mcp: Type.Optional(Type.Unknown()),
  iam: Type.Optional(Type.Unknown()),
  volumeMounts: Type.Optional(Type.Array(Type.Unknown())),
  /** v1: every Cella sandbox gets an envd access token. */
  secure: Type.Optional(Type.Boolean()),
});
export type NewSandboxBody = Static<typeof NewSandboxBody>;

export const ConnectBody = Type.Object({ timeout: Type.Optional(Timeout), memory: Type.Optional(Type.Boolean()) });
export const ConnectBodyV1 = Type.Object({ timeout: Timeout, memory: Type.Optional(Type.Boolean()) });
export const TimeoutBody = Type.Object({ timeout: Timeout });
export const PauseBody = Type.Object({ memory: Type.Optional(Type.Boolean()) });

/** What create and connect answer (E2B's `Sandbox`). */
export interface SandboxView {
  sandboxID: string;
  templateID: string;
  alias: string;
  clientID: string;
  envdVersion: string;
  envdAccessToken: string;
  trafficAccessToken: string | null;
  domain: string;
}

/** What list answers per sandbox (E2B's `ListedSandbox`). */
export interface ListedSandboxView {
  sandboxID: string;
  templateID: string;
  alias: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  metadata: Record<string, string>;
  state: 'running' | 'paused';
  envdVersion: string;
}

/** What info answers (E2B's `SandboxDetail`). */
export interface SandboxDetailView extends ListedSandboxView {
  envdAccessToken: string;
  domain: string;
  allowInternetAccess: boolean;
  lifecycle: { onTimeout: 'pause' | 'kill'; autoResume: boolean };
}

export interface MetricView {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}
