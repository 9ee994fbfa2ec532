/**
 * Errors the guest reports (ERROR frames) as CellaErrors. From protocol 3 on,
 * an ERROR's stream byte is the errno: it picks a stable code, and the errno
 * itself is in `details.errno` (its name, e.g. 'ENOENT') for callers that map
 * more finely (envd's Connect codes).
 */
import { constants } from 'node:os';
import { CellaError, type ErrorCode } from '../contract/index.js';
import { Msg, type Frame } from './protocol.js';

/** errno numbers to names; where two names share a number (EAGAIN, EWOULDBLOCK) the first, usual one. */
const NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!NAMES.has(n)) NAMES.set(n, name);

const CODES: Record<string, ErrorCode> = {
  ENOENT: 'NOT_FOUND',
  ESRCH: 'NOT_FOUND',
  EEXIST: 'ALREADY_EXISTS',
  EACCES: 'ACCESS_DENIED',
  EPERM: 'ACCESS_DENIED',
  EROFS: 'ACCESS_DENIED',
  ENOSPC: 'GUEST_DISK_FULL',
  EDQUOT: 'GUEST_DISK_FULL',
  EINVAL: 'INVALID_ARGUMENT',
  ENOTDIR: 'INVALID_ARGUMENT',
  EISDIR: 'INVALID_ARGUMENT',
  ENAMETOOLONG: 'INVALID_ARGUMENT',
  ELOOP: 'INVALID_ARGUMENT',
  ENOTEMPTY: 'INVALID_ARGUMENT',
  EXDEV: 'INVALID_ARGUMENT',
  E2BIG: 'INVALID_ARGUMENT',
  EAGAIN: 'QUOTA_EXCEEDED',
  EMFILE: 'QUOTA_EXCEEDED',
  ENOBUFS: 'QUOTA_EXCEEDED',
  EBUSY: 'QUOTA_EXCEEDED',
};

export function errnoName(n: number): string {
  return NAMES.get(n) ?? `E${n}`;
}

/** A v2 guest's answer to a v3 request it does not know. */
export function isUnknownMessage(f: Frame): boolean {
  return f.type === Msg.ERROR && f.stream === 0 && f.body.subarray(0, 16).toString('latin1') === 'unknown message ';
}

/**
 * The CellaError for an ERROR frame. `legacy` keeps AGENT_ERROR as the code
 * (what protocol-2 callers such as exec() and openPty() always threw), with
 * the errno still in the details.
 */
export function guestError(f: Frame, legacy = false): CellaError {
  const text = f.body.subarray(0, 1024).toString('utf8');
  const errno = f.stream ? errnoName(f.stream) : undefined;
  const code = (!legacy && errno && CODES[errno]) || 'AGENT_ERROR';
  return new CellaError(code, `guest agent: ${text}`, errno ? { details: { errno } } : {});
}

/** An error made on the host for an errno the guest sent in another frame (EXEC_IN_ACK, FS_END). */
export function errnoError(n: number, what: string): CellaError {
  const errno = errnoName(n);
  return new CellaError(CODES[errno] ?? 'AGENT_ERROR', `guest agent: ${what}: ${errno}`, { details: { errno } });
}

export function unsupported(what: string, version: number): CellaError {
  return new CellaError(
    'AGENT_UNSUPPORTED',
    `${what} needs cella-init protocol 3, but this guest speaks protocol ${version}: its image was snapshotted with an older cella-init; rebuild the image`,
    { details: { guestProtocol: version, neededProtocol: 3 } },
  );
}
