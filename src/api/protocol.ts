/**
 * What never becomes a request: bytes Node's HTTP parser refuses (an unknown
 * method, a URL or header block beyond its size limit, broken framing),
 * headers that never finish, and CONNECT. Node would answer these with an
 * empty 400 or reset the connection; the API answers them as it answers
 * everything else: the contract's JSON error and `x-amzn-errortype`.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { CellaError, rawHttpError } from '../contract/index.js';

/** How long a refused client may go on sending (read and dropped) before its connection is closed. */
const DRAIN_MS = 5_000;

/** Wires the answers below into the API's HTTP server. */
export function answerProtocolErrors(server: Server): void {
  server.on('clientError', handleClientError);
  server.on('connect', (req: IncomingMessage, socket: Duplex) =>
    refuse(socket, new CellaError('METHOD_NOT_ALLOWED', `CONNECT is not allowed: ${req.url ?? ''} is not an operation`)),
  );
}

/** The parser keeps failing on each later packet of a refused connection; it is answered once. */
const answered = new WeakSet<Duplex>();

function handleClientError(err: Error & { code?: string; rawPacket?: Buffer }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || answered.has(socket)) return;
  refuse(socket, clientErrorOf(err));
}

/** The contract's error for a parser failure. */
function clientErrorOf(err: Error & { code?: string; rawPacket?: Buffer }): CellaError {
  switch (err.code) {
    case 'HPE_INVALID_METHOD':
      return new CellaError('METHOD_NOT_ALLOWED', 'the request method is not one the API knows');
    case 'HPE_HEADER_OVERFLOW':
      return requestLineUnfinished(err.rawPacket)
        ? new CellaError('URI_TOO_LONG', 'the request URL is longer than the server reads')
        : new CellaError('HEADERS_TOO_LARGE', 'the request headers are larger than the server reads');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new CellaError('PAYLOAD_TOO_LARGE', 'the chunk extensions are larger than the server reads');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new CellaError('REQUEST_TIMEOUT', 'the request headers did not arrive in time');
    case undefined:
    default:
      return new CellaError('INVALID_ARGUMENT', `the request is not valid HTTP/1.1: ${(err as { reason?: string }).reason ?? err.message}`);
  }
}

/** The packet that overflowed starts a request whose first line has no end: the URL is what is too long. */
function requestLineUnfinished(packet: Buffer | undefined): boolean {
  return packet !== undefined && /^[A-Z-]+ /.test(packet.subarray(0, 32).toString('latin1')) && !packet.includes(0x0a);
}

function refuse(socket: Duplex, err: CellaError): void {
  answered.add(socket);
  // Node's own test before it answers a parse error: an answer now would land inside a response already under way.
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (!socket.writable || inFlight) return void socket.destroy();
  socket.end(rawHttpError(err));
  // Reading on (and dropping) what the client still sends: closing with unread bytes would reset the connection before the client reads the answer.
  socket.on('data', () => {});
  socket.resume();
  setTimeout(() => socket.destroy(), DRAIN_MS).unref();
}
