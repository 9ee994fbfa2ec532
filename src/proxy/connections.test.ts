import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as h2connect, createSecureServer, type Http2SecureServer } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { closed, tcpTo } from '../../test/fixtures/sockets.js';
import { loadTls, type TlsMaterial } from '../tls/index.js';
import { limitConnections, type ConnectionLimits } from './connections.js';

/** Longer than the short deadline the tests use: what is held this long must outlive it. */
const HOLD_MS = 1000;
const HOST = 'x.cella.localhost';

describe('endpoint connection limits (real TLS sockets)', () => {
  let dir: string;
  let tls: TlsMaterial;
  let ca: Buffer;
  const servers: Http2SecureServer[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'cella-conn-'));
    tls = await loadTls(dir, 'cella.localhost');
    ca = readFileSync(tls.caFile as string);
  });
  after(async () => {
    for (const s of servers) {
      s.close();
      (s as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** An HTTP/2 + HTTP/1.1 TLS server like the proxy's: `/hold` answers after HOLD_MS; an upgrade echoes after HOLD_MS. */
  async function serve(limits: ConnectionLimits): Promise<number> {
    const server = createSecureServer({ cert: tls.cert, key: tls.key, allowHTTP1: true }, (req, res) => {
      if (req.url === '/hold') setTimeout(() => res.end('held'), HOLD_MS);
      else res.end('ok');
    });
    server.on('upgrade', (_req, socket: Duplex) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n');
      socket.once('data', (d: Buffer) => setTimeout(() => socket.write(d), HOLD_MS));
    });
    server.on('tlsClientError', () => {});
    limitConnections(server, limits);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  }

  const tlsTo = (port: number): Promise<TLSSocket> =>
    new Promise((resolve, reject) => {
      const s = tlsConnect({ port, host: '127.0.0.1', servername: HOST, ca, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
      s.on('error', reject);
    });
  const https1 = (port: number, p: string): Promise<string> =>
    new Promise((resolve, reject) => {
      httpsRequest({ host: '127.0.0.1', port, path: p, servername: HOST, ca, agent: false, headers: { host: HOST } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(`${res.statusCode} ${body}`));
      })
        .on('error', reject)
        .end();
    });

  // Regression (issue 11): 300 slowloris connections from one client were all held for 25 s and more.
  test('connections beyond the per-client limit are closed as they arrive; a freed place is taken again', { timeout: 30_000 }, async () => {
    const port = await serve({ perClient: 4, firstRequestMs: 60_000 });
    const held = await Promise.all([1, 2, 3, 4].map(() => tcpTo(port)));
    const extra = await tcpTo(port);
    await closed(extra);
    assert.ok(
      held.every((s) => !s.destroyed),
      'the first four stay open',
    );
    held[0]?.destroy();
    await closed(held[0] as Socket);
    // The server may learn of the close a moment after the client did: until then a new connection is still one too many.
    let answer = '';
    for (let attempt = 0; attempt < 50 && !answer; attempt++) {
      answer = await https1(port, '/').catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return '';
      });
    }
    assert.equal(answer, '200 ok');
    for (const s of held) s.destroy();
  });

  test('a connection with no request by the deadline is closed: silent, mid-handshake, or with headers never finished', { timeout: 30_000 }, async () => {
    const port = await serve({ perClient: 64, firstRequestMs: 300 });
    const silent = await tcpTo(port);
    const halfHandshake = await tcpTo(port);
    halfHandshake.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    const idleTls = await tlsTo(port);
    const slowHeaders = await tlsTo(port);
    slowHeaders.write(`GET / HTTP/1.1\r\nhost: ${HOST}\r\nx-slow: `);
    const h2idle = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ port, host: '127.0.0.1', servername: HOST, ca, ALPNProtocols: ['h2'] }, () => resolve(s));
      s.on('error', reject);
    });
    h2idle.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    await Promise.all([silent, halfHandshake, idleTls, slowHeaders, h2idle].map(closed));
  });

  test('requests held past the deadline over HTTP/1.1 and HTTP/2, and upgraded sockets, are not cut', { timeout: 30_000 }, async () => {
    const port = await serve({ perClient: 64, firstRequestMs: 300 });
    assert.equal(await https1(port, '/hold'), '200 held');
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: HOST });
    try {
      const h2 = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ':path': '/hold' });
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => resolve(body));
        req.on('error', reject);
        req.end();
      });
      assert.equal(h2, 'held');
    } finally {
      session.close();
    }
    const ws = await tlsTo(port);
    ws.write(`GET /echo HTTP/1.1\r\nhost: ${HOST}\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n`);
    const echoed = await new Promise<string>((resolve, reject) => {
      let got = '';
      ws.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.includes('\r\n\r\n') && !got.includes('ping')) ws.write('ping');
        if (got.endsWith('ping')) resolve(got);
      });
      ws.on('close', () => reject(new Error(`closed after ${JSON.stringify(got)}`)));
    });
    assert.match(echoed, /^HTTP\/1\.1 101 [\s\S]*ping$/);
    ws.destroy();
  });
});
