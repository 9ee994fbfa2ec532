export { AgentClient, type ExecOptions, type ExecResult, type SpawnOptions } from './client.js';
export { GUEST_SIGNAL_MIN_INTERVAL_MS } from './connection.js';
export { errnoName } from './errors.js';
export { GuestFiles, LIST_MAX_ENTRIES, READ_WINDOW, Watcher, resolveGuestPath, type Owner, type WatchEvent, type WatchOp } from './files.js';
export { ExecProcess, PtySession, decodeWaitStatus, type ExitStatus, type PtyExit } from './process.js';
export { FrameDecoder, Msg, Tag, encodeFrame, encodeSpec, tlv, PROTOCOL_VERSION, type Frame, type ProcessSpec, type PtySpec } from './protocol.js';
export { XATTR_PREFIX, type FileEntry, type FileType, type GuestProcessInfo, type GuestStats, type UserInfo } from './replies.js';
