export { AgentClient, decodeWaitStatus, type ExecOptions, type ExecResult } from './client.js';
export { FrameDecoder, Msg, encodeFrame, encodeSpec, PROTOCOL_VERSION, type Frame, type ProcessSpec } from './protocol.js';
