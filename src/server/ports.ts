/** The server's listening sockets: a port taken is a clear start-up error, found before any work. */
import type { Server } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { CellaError } from '../contract/index.js';

/** Fails at once, before any work, when `port` on `host` is taken (0 picks a free one later and needs no check). */
export async function checkPortFree(port: number, host: string, flag: string): Promise<void> {
  if (port === 0) return;
  const probe = createNetServer();
  await listen(probe, port, host, flag);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

export function listen(server: Server | NetServer, port: number, host: string, flag = '--port'): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new CellaError('INVALID_ARGUMENT', `port ${port} on ${host} is already in use (${flag}): another cellad, or another program, holds it`)
          : new CellaError('INVALID_ARGUMENT', `cannot listen on ${host}:${port} (${flag}): ${err.message}`),
      ),
    );
    server.listen(port, host, () => resolve());
  });
}
