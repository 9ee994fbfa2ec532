/**
 * What the transport hands an operation and what it takes back: the
 * server's parts (`ApiContext`), a request parsed into a typed `Command`
 * (path parameters named by its route's path, body and query of its
 * schemas, a List's starting place), and the `Reply` to write.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { AccessKeys, Authenticator, TokenMinter } from '../auth/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import type { Connectors } from '../connectors/index.js';
import type { Arns, Operation, Routes } from '../contract/index.js';
import type { Images } from '../images/index.js';
import type { Lifecycle } from '../lifecycle/index.js';
import type { LogHub } from '../logs/index.js';
import type { Store } from '../store/index.js';
import type { Listing, PositionOf } from './cursor.js';

export interface ApiContext {
  store: Store;
  lifecycle: Lifecycle;
  images: Images;
  connectors: Connectors;
  logs: LogHub;
  /** Who may call: Bearer API keys and SigV4 access keys. */
  auth: Authenticator;
  accessKeys: AccessKeys;
  tokens: TokenMinter;
  /** Endpoints are `<id>.<domain>`. */
  domain: string;
  /** The server's region and account: every ARN it issues and accepts. */
  arns: Arns;
  minIdleSeconds: number;
  /** Multiplies the contract's API rates per caller (0: no throttling). */
  apiRateScale: number;
  /** What GetServerInfo reports: where the endpoints are and how to trust them. */
  info: { proxyPort: number; accelerator: string; region: string; caCertificate?: string };
  /** The baseline memory (the tiers) of all live MicroVMs together may not exceed this. */
  maxMemoryMiB: number;
  /** The host's disk: work that writes much is refused while it is nearly full. */
  capacity: Pick<DiskCapacity, 'require'>;
  version: string;
}

/** The `{name}` segments of a route's path. */
type ParamNames<P extends string> = P extends `${string}{${infer N}}${infer Rest}` ? N | ParamNames<Rest> : never;

export type Input<K extends Operation> = {
  params: { [N in ParamNames<Routes[K]['path']>]: string };
  /** What an upload route stored from the raw body. */
  upload: Routes[K] extends { upload: object } ? { uri: string; sizeInBytes: number; sha256: string } : undefined;
  body: Routes[K] extends { body: infer B extends TSchema } ? Static<B> : undefined;
  query: Routes[K] extends { query: infer Q extends TSchema } ? Static<Q> : undefined;
  /** A List's starting place, from its cursor (read with the query, before anything is looked up). */
  after: K extends Listing ? PositionOf<K> | undefined : undefined;
};

/** A parsed request: the discriminated union of every operation's input. */
export type Command = { [K in Operation]: { op: K } & Input<K> }[Operation];
export type CommandOf<K extends Operation> = Extract<Command, { op: K }>;

/** A JSON body, an empty answer, or text written as `produce` makes it (until it returns or `signal` aborts). */
export type Reply = { json: unknown } | { empty: true } | { text: (write: (chunk: Buffer) => void, signal: AbortSignal) => Promise<void> };

/** The operations a file serves, each from its command to its reply. */
export type Operations<K extends Operation> = { [P in K]: (cmd: CommandOf<P>) => Promise<Reply> };
