/**
 * The contract's fixed names: the API version in every path, and the
 * endpoint's headers, their reserved prefix, WebSocket subprotocols, the
 * default port and the shell path (contract section 6).
 */
export const API_VERSION = '2025-09-09';

export const AUTH_HEADER = 'X-aws-proxy-auth';
export const PORT_HEADER = 'X-aws-proxy-port';
export const RESERVED_HEADER_PREFIX = 'X-aws-proxy-';
export const WS_MARKER = 'lambda-microvms';
export const WS_AUTH_PREFIX = 'lambda-microvms.authentication.';
export const WS_PORT_PREFIX = 'lambda-microvms.port.';
export const DEFAULT_ENDPOINT_PORT = 8080;
export const SHELL_PATH = '/shell';
