/**
 * Limits on the endpoint port's connections, applied before a request is
 * read: a few clients holding many half-open connections (slowloris) cannot
 * take the port from everyone else. Once a connection has started a request
 * nothing here cuts it, so WebSocket, SSE and requests held through an
 * auto-resume last as long as they need.
 */
import type { Server, Socket } from 'node:net';

export interface ConnectionLimits {
  /** Connections open at once from one remote address; more are closed as they arrive. */
  perClient: number;
  /** From accept to the first request's headers, TLS handshake included; a connection without one by then is closed. */
  firstRequestMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: Readonly<ConnectionLimits> = { perClient: 64, firstRequestMs: 10_000 };

interface Peer {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
}

/** Applies `limits` to `server`'s connections; `server` emits `request` and `upgrade` (an HTTP or HTTP/2 compat server). */
export function limitConnections(server: Server, limits: ConnectionLimits): void {
  const open = new Map<string, number>();
  // Keyed by address and port: the TLS socket and an HTTP/2 request's socket proxy are other objects than the accepted socket.
  const deadlines = new Map<string, NodeJS.Timeout>();
  const keyOf = (p: Peer): string => `${p.remoteAddress ?? ''}|${p.remotePort ?? ''}`;

  server.on('connection', (socket: Socket) => {
    const client = socket.remoteAddress;
    // Gone already (no address), or one too many.
    if (client === undefined || (open.get(client) ?? 0) >= limits.perClient) return void socket.destroy();
    open.set(client, (open.get(client) ?? 0) + 1);
    const key = keyOf(socket);
    // Closing the accepted socket ends the TLS socket and any HTTP/2 session over it.
    const deadline = setTimeout(() => socket.destroy(), limits.firstRequestMs);
    deadlines.set(key, deadline);
    socket.once('close', () => {
      clearTimeout(deadline);
      if (deadlines.get(key) === deadline) deadlines.delete(key);
      const left = (open.get(client) ?? 1) - 1;
      if (left <= 0) open.delete(client);
      else open.set(client, left);
    });
  });

  const started = (req: { socket: Peer }): void => {
    let key: string;
    try {
      key = keyOf(req.socket);
    } catch {
      // An HTTP/2 stream whose session already lost its socket: nothing left to spare.
      return;
    }
    clearTimeout(deadlines.get(key));
    deadlines.delete(key);
  };
  server.on('request', started);
  server.on('upgrade', started);
}
