export { AgentClient, GUEST_SIGNAL_MIN_INTERVAL_MS, PtySession, decodeWaitStatus, type ExecOptions, type ExecResult, type PtyExit } from './client.js';
export { FrameDecoder, Msg, encodeFrame, encodeSpec, PROTOCOL_VERSION, type Frame, type ProcessSpec, type PtySpec } from './protocol.js';
