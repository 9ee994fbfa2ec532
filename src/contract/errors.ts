/**
 * Every error Cella raises is a CellaError with a stable `code`. The table
 * below is the one place that maps a code to its HTTP status and to the error
 * name of the Lambda MicroVMs contract; server and client share it. Each
 * code's `doc` (what happened, what the caller should do) is published as
 * docs/errors.md by `npm run docs:errors`.
 */
import { STATUS_CODES } from 'node:http';

export const ERRORS = {
  // Host setup
  SETUP_MISSING: {
    status: 500,
    type: 'InternalServerException',
    doc: 'A guest artifact, base or host program Cella needs is not installed (`details.path` names it): the operator runs `npm run setup`.',
  },
  ACCEL_UNAVAILABLE: {
    status: 500,
    type: 'InternalServerException',
    doc: 'The host offers QEMU no usable accelerator. No code path raises it today.',
  },
  // VMM and guest
  QEMU_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: "A QEMU operation on the MicroVM (checkpoint, suspend, resume in place) failed; the message says whether the VM runs on. Retry; if it persists, read cellad's log.",
  },
  QEMU_EXITED: {
    status: 500,
    type: 'InternalServerException',
    doc: "The MicroVM's QEMU process ended while an operation needed it: the VM is gone. Run a new one; cellad's log says why.",
  },
  QMP_ERROR: {
    status: 500,
    type: 'InternalServerException',
    doc: "QEMU's control socket (QMP) did not answer in time or refused a command. Retry; if it persists, the host is overloaded or QEMU is stuck.",
  },
  AGENT_ERROR: {
    status: 500,
    type: 'InternalServerException',
    doc: 'The control connection to cella-init in the guest failed, or the guest refused a command. Retry; if it persists, the guest is unhealthy: terminate it.',
  },
  AGENT_TIMEOUT: {
    status: 500,
    type: 'InternalServerException',
    doc: 'The guest agent, or a command run through it, did not answer in time. Retry, or give the command more time.',
  },
  AGENT_UNSUPPORTED: {
    status: 501,
    type: 'InternalServerException',
    doc: "The guest's cella-init speaks an older protocol than the operation needs (its image was snapshotted by an older Cella): rebuild the image.",
  },
  GUEST_BOOT_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: "The guest kernel or cella-init did not come up (the message ends with the console's tail). Check the image and the guest artifacts (`npm run setup`).",
  },
  APP_NOT_READY: {
    status: 500,
    type: 'InternalServerException',
    doc: "The image's app exited or did not accept connections on its port before the deadline. Fix the app's command, port or ready check, then build again.",
  },
  // 500: ResumeMicrovm's model knows InternalServerException (500); 502 is the endpoint proxy's.
  HOOK_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: 'A lifecycle hook in the MicroVM failed or timed out; after a failed resume hook the VM stays SUSPENDED, as it was. Fix the hook, then retry.',
  },
  UPSTREAM_FAILED: {
    status: 502,
    type: 'InternalServerException',
    doc: "The endpoint could not reach the app: the MicroVM is not running, could not be resumed, or its app did not answer. Check the VM's state and its app's log.",
  },
  // Snapshots
  SNAPSHOT_CORRUPT: {
    status: 500,
    type: 'InternalServerException',
    doc: 'An image snapshot or a checkpoint on disk fails its own checks (sizes, hashes, format). Build a new image version; a corrupt checkpoint cannot be resumed.',
  },
  SNAPSHOT_INCOMPATIBLE: {
    status: 409,
    type: 'ConflictException',
    doc: 'The snapshot was captured with another QEMU, kernel, initrd, accelerator or command line than this host has. Build the image version again on this host.',
  },
  MIGRATION_STREAM_INVALID: {
    status: 500,
    type: 'InternalServerException',
    doc: "QEMU's migration stream was not in the format Cella reads while writing a checkpoint: an unsupported QEMU version or a bug. Report it with cellad's log.",
  },
  // Host resources
  NETWORK_SETUP_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: "Creating or removing a MicroVM's network namespace, veth, tap or nftables rules failed (the message has the command's stderr). cellad needs root, ip and nft.",
  },
  DISK_SETUP_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: 'Creating a disk (qcow2 overlay, ext4 root, image conversion) failed. Check free space and that qemu-img and mkfs.ext4 work.',
  },
  COMMAND_FAILED: {
    status: 500,
    type: 'InternalServerException',
    doc: "A host command Cella ran failed; the message has the command and its stderr. Also the CLI's code for a failure that has no other.",
  },
  // Caller mistakes
  INVALID_ARGUMENT: {
    status: 400,
    type: 'ValidationException',
    doc: 'A request field is missing, malformed or out of range; the message names it. Fix the request: nothing was changed.',
  },
  MALFORMED_JSON: {
    status: 400,
    type: 'ValidationException',
    doc: 'The request body is not valid JSON. Send a JSON object: nothing was changed.',
  },
  PAYLOAD_TOO_LARGE: {
    status: 413,
    type: 'ValidationException',
    doc: 'The request body or code upload is larger than the server accepts. Send less (a large code archive can be given as a `file://` or `s3://` URI).',
  },
  URI_TOO_LONG: {
    status: 414,
    type: 'ValidationException',
    doc: 'The request URL is longer than the server reads. Shorten it.',
  },
  HEADERS_TOO_LARGE: {
    status: 431,
    type: 'ValidationException',
    doc: 'The request headers are larger than the server reads. Send fewer or smaller headers.',
  },
  REQUEST_TIMEOUT: {
    status: 408,
    type: 'ValidationException',
    doc: "The request's headers did not arrive in time and the connection was closed. Send the request again.",
  },
  INVALID_STATE: {
    status: 409,
    type: 'ConflictException',
    doc: 'The resource is not in a state that allows the operation (e.g. Suspend of a TERMINATED MicroVM), or another cellad already serves the data directory. Wait for the state, or act on it first.',
  },
  IDEMPOTENCY_CONFLICT: {
    status: 409,
    type: 'ConflictException',
    doc: 'The `clientToken` was already used with different parameters. Reuse it only to retry the same request; use a new one for a new request.',
  },
  ALREADY_EXISTS: {
    status: 409,
    type: 'ConflictException',
    doc: 'What the request would create already exists (a directory in the guest, say); nothing changed.',
  },
  NOT_FOUND: {
    status: 404,
    type: 'ResourceNotFoundException',
    doc: 'The MicroVM, image, version, build or connector does not exist (or was deleted). Check the identifier or ARN.',
  },
  UNKNOWN_OPERATION: {
    status: 404,
    type: 'UnknownOperationException',
    doc: 'No operation exists at this path. Check the URL and the API version in it.',
  },
  METHOD_NOT_ALLOWED: {
    status: 405,
    type: 'UnknownOperationException',
    doc: 'The path exists but not with this HTTP method. Use the method the operation is defined with.',
  },
  NOT_IMPLEMENTED: {
    status: 501,
    type: 'InternalServerException',
    doc: "The operation exists in the API Cella is compatible with (E2B's network updates, snapshots, fork, template builds) but Cella does not implement it yet. Nothing was changed.",
  },
  UNAUTHENTICATED: {
    status: 401,
    type: 'AccessDeniedException',
    doc: 'The request carries no credentials, or its API key is not valid. Send `Authorization: Bearer <key>` with a key the server knows, or sign it with SigV4 (an access key).',
  },
  // SigV4 (the AWS SDK's signing): AWS's own error types, which the SDK raises as exceptions of that name.
  SIGNATURE_MALFORMED: {
    status: 400,
    type: 'IncompleteSignatureException',
    doc: 'The `Authorization: AWS4-HMAC-SHA256 ...` header or `x-amz-date` is malformed or incomplete, the request is presigned (query-string SigV4, not supported), or an upload is signed with SigV4 (uploads take Bearer). Sign the request as the AWS SDK does.',
  },
  UNKNOWN_ACCESS_KEY: {
    status: 403,
    type: 'UnrecognizedClientException',
    doc: 'The access key id the request is signed with is not known to this server (never created, or revoked). Use a key from `cella keys create`, or the one printed at first start.',
  },
  SIGNATURE_INVALID: {
    status: 403,
    type: 'InvalidSignatureException',
    doc: "The SigV4 signature does not match the request: wrong secret, a header, path, query or body changed after signing, or a credential scope of another region or service than the server's (`lambda`, `cella server --region`).",
  },
  REQUEST_EXPIRED: {
    status: 403,
    type: 'InvalidSignatureException',
    doc: '`x-amz-date` is more than 15 minutes from the server\'s clock ("Signature expired"; the AWS SDK corrects its clock from the `Date` header and retries). Fix the client\'s clock, or sign again.',
  },
  SIGNATURE_REPLAYED: {
    status: 403,
    type: 'InvalidSignatureException',
    doc: 'This exact signed request was already served: a signature is accepted once. Sign each request anew (the AWS SDK does).',
  },
  ACCESS_DENIED: {
    status: 403,
    type: 'AccessDeniedException',
    doc: 'The endpoint or shell token is missing, not valid, expired, or not for this MicroVM or path. Get a new token.',
  },
  QUOTA_EXCEEDED: {
    status: 402,
    type: 'ServiceQuotaExceededException',
    doc: 'A quota would be exceeded; `quotaCode` says which: `microvm-memory-mib` (memory of live MicroVMs), `microvm-images` (images, 100), `microvm-image-versions` (versions per image, 50), `concurrent-image-builds` (builds queued or running, 5). Terminate VMs, delete images or versions, or wait for builds; the operator can raise the quotas.',
  },
  THROTTLED: {
    status: 429,
    type: 'ThrottlingException',
    doc: "Too many requests for this caller and operation, or for this MicroVM's endpoint. Wait `retryAfterSeconds` (the Retry-After header), then retry.",
  },
  // The host: its disk is (nearly) full. The contract's InsufficientCapacityException, 500 in the service model.
  INSUFFICIENT_CAPACITY: {
    status: 500,
    type: 'InsufficientCapacityException',
    doc: "The host's disk is (nearly) full, so work that would write a lot was refused before it started. Retry after `retryAfterSeconds`; the operator frees space.",
  },
  GUEST_DISK_FULL: {
    status: 507,
    type: 'InsufficientCapacityException',
    doc: "A file system inside the guest is full (ENOSPC, EDQUOT): the VM's own disk, not the host's. Free space in the guest or use a larger disk.",
  },
  // The daemon
  INTERNAL: {
    status: 500,
    type: 'InternalServerException',
    doc: "An unexpected failure inside cellad (a bug); the message says what failed. Retrying may work; report it with cellad's log.",
  },
} as const satisfies Record<string, { status: number; type: string; doc: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class CellaError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly type: string;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CellaError';
    this.code = code;
    this.httpStatus = ERRORS[code].status;
    this.type = ERRORS[code].type;
    this.details = options.details ?? {};
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details };
  }
}

/**
 * Any failure as the contract's HTTP error: status, `x-amzn-errortype`, and a JSON body
 * `{message, code, ...details}`. Unexpected errors become INTERNAL.
 */
export function httpError(err: unknown): { status: number; headers: Record<string, string>; body: string } {
  const mapped = fromErrno(err);
  const e = isCellaError(mapped) ? mapped : new CellaError('INTERNAL', (err as Error)?.message ?? String(err));
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-amzn-errortype': e.type };
  if (e.code === 'UNAUTHENTICATED') headers['www-authenticate'] = 'Bearer';
  if (typeof e.details.retryAfterSeconds === 'number') headers['retry-after'] = String(e.details.retryAfterSeconds);
  return { status: e.httpStatus, headers, body: JSON.stringify({ message: e.message, code: e.code, ...e.details }) };
}

/** Error codes of a full disk: the file system's (ENOSPC, EDQUOT) and SQLite's (SQLITE_FULL). */
const DISK_FULL = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

/**
 * A full disk, however it surfaced (a write's errno, SQLite's "database or
 * disk is full"), as INSUFFICIENT_CAPACITY; anything else unchanged.
 */
export function fromErrno(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !DISK_FULL.has(code) || isCellaError(err)) return err;
  return new CellaError('INSUFFICIENT_CAPACITY', `the host's disk is full: ${(err as Error).message}`, { cause: err, details: { retryAfterSeconds: 30 } });
}

/** The same error as a whole HTTP/1.1 response, for a socket that has no ServerResponse (an upgrade, a request that never parsed); it closes the connection. */
export function rawHttpError(err: unknown): string {
  const { status, headers, body } = httpError(err);
  const lines = Object.entries({ ...headers, 'content-length': String(Buffer.byteLength(body)), connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`);
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${lines.join('')}\r\n${body}`;
}

export function isCellaError(err: unknown, code?: ErrorCode): err is CellaError {
  return err instanceof CellaError && (code === undefined || err.code === code);
}

/** The command a user runs to install what is missing; named in every SETUP_MISSING error. */
export const SETUP_COMMAND = 'npm run setup';

export function setupMissing(what: string, path: string): CellaError {
  return new CellaError('SETUP_MISSING', `${what} not found at ${path}; run \`${SETUP_COMMAND}\` to install it`, {
    details: { path },
  });
}

/** Why an image build failed: the contract's build `stateReason` codes. */
export const BUILD_FAILURE_REASONS = [
  'S3_ACCESS_DENIED',
  'S3_NO_SUCH_KEY',
  'S3_NO_SUCH_BUCKET',
  'S3_INVALID_OBJECT',
  'S3_CROSS_REGION_ACCESS_DENIED',
  'ARCHIVE_DOCKERFILE_NOT_FOUND',
  'ARCHIVE_INVALID',
  'CONTAINER_BUILD_FAILED',
  'DISK_STORAGE_FULL',
  'INTERNAL_PLATFORM_ERROR',
] as const;
export type BuildFailureReason = (typeof BUILD_FAILURE_REASONS)[number];

/**
 * A build that cannot go on: not an API error (the request that started the
 * build was answered long before), but the reason recorded on the build and
 * told in its log.
 */
export class BuildFailure extends Error {
  constructor(
    readonly reason: BuildFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'BuildFailure';
  }
}
