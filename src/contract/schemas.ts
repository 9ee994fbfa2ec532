/**
 * The HTTP contract in one place: TypeBox schemas that the server validates
 * with, that /openapi.json is generated from, and whose static types the
 * client uses. Ranges follow ../shared/reference/lambda-microvms-api.md.
 * One file per resource (./microvm-schemas.ts, ./image-schemas.ts,
 * ./connector-schemas.ts); this one holds the shapes they share and the
 * account's own: access keys, uploads, usage, server info, tags and errors.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Closed, Paging, Str } from './schema-parts.js';

export const RoleArn = Str(20, 2048, { pattern: '^arn:aws[a-z\\-]*:iam::[0-9]{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$' });

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

/**
 * A point in time as the restJson1 protocol sends it by default: seconds
 * since the epoch, a JSON number (with milliseconds as its fraction).
 */
export const Time = Type.Number({ description: 'seconds since 1970-01-01T00:00:00Z' });

export const ListQuery = Type.Object({ ...Paging }, Closed);
export const LogsQuery = Type.Object({ follow: Type.Optional(Type.Boolean()) }, Closed);

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

export const ErrorBody = Type.Object({
  message: Type.String(),
  code: Type.String(),
  resourceId: Type.Optional(Type.String()),
  resourceType: Type.Optional(Type.String()),
});
export type ErrorBody = Static<typeof ErrorBody>;

export type { Static, TSchema };
