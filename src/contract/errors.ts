/**
 * Every error Cella raises is a CellaError with a stable `code`. The table
 * below is the one place that maps a code to its HTTP status and to the error
 * name of the Lambda MicroVMs contract; server and client share it.
 */
import { STATUS_CODES } from 'node:http';

export const ERRORS = {
  // Host setup
  SETUP_MISSING: { status: 500, type: 'InternalServerException' },
  ACCEL_UNAVAILABLE: { status: 500, type: 'InternalServerException' },
  // VMM and guest
  QEMU_FAILED: { status: 500, type: 'InternalServerException' },
  QEMU_EXITED: { status: 500, type: 'InternalServerException' },
  QMP_ERROR: { status: 500, type: 'InternalServerException' },
  AGENT_ERROR: { status: 500, type: 'InternalServerException' },
  AGENT_TIMEOUT: { status: 500, type: 'InternalServerException' },
  GUEST_BOOT_FAILED: { status: 500, type: 'InternalServerException' },
  APP_NOT_READY: { status: 500, type: 'InternalServerException' },
  HOOK_FAILED: { status: 502, type: 'InternalServerException' },
  UPSTREAM_FAILED: { status: 502, type: 'InternalServerException' },
  // Snapshots
  SNAPSHOT_CORRUPT: { status: 500, type: 'InternalServerException' },
  SNAPSHOT_INCOMPATIBLE: { status: 409, type: 'ConflictException' },
  MIGRATION_STREAM_INVALID: { status: 500, type: 'InternalServerException' },
  // Host resources
  NETWORK_SETUP_FAILED: { status: 500, type: 'InternalServerException' },
  DISK_SETUP_FAILED: { status: 500, type: 'InternalServerException' },
  COMMAND_FAILED: { status: 500, type: 'InternalServerException' },
  // Caller mistakes
  INVALID_ARGUMENT: { status: 400, type: 'ValidationException' },
  MALFORMED_JSON: { status: 400, type: 'ValidationException' },
  PAYLOAD_TOO_LARGE: { status: 413, type: 'ValidationException' },
  URI_TOO_LONG: { status: 414, type: 'ValidationException' },
  HEADERS_TOO_LARGE: { status: 431, type: 'ValidationException' },
  REQUEST_TIMEOUT: { status: 408, type: 'ValidationException' },
  INVALID_STATE: { status: 409, type: 'ConflictException' },
  IDEMPOTENCY_CONFLICT: { status: 409, type: 'ConflictException' },
  NOT_FOUND: { status: 404, type: 'ResourceNotFoundException' },
  UNKNOWN_OPERATION: { status: 404, type: 'UnknownOperationException' },
  METHOD_NOT_ALLOWED: { status: 405, type: 'UnknownOperationException' },
  UNAUTHENTICATED: { status: 401, type: 'AccessDeniedException' },
  ACCESS_DENIED: { status: 403, type: 'AccessDeniedException' },
  QUOTA_EXCEEDED: { status: 402, type: 'ServiceQuotaExceededException' },
  THROTTLED: { status: 429, type: 'ThrottlingException' },
  // The host: its disk is (nearly) full. The contract's InsufficientCapacityException, 500 in the service model.
  INSUFFICIENT_CAPACITY: { status: 500, type: 'InsufficientCapacityException' },
  // The daemon
  INTERNAL: { status: 500, type: 'InternalServerException' },
} as const satisfies Record<string, { status: number; type: string }>;

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
