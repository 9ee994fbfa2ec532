/**
 * `cella shell VM`: an interactive terminal in the MicroVM through its
 * endpoint (wss://<endpoint>/shell), the same path any client of the
 * contract's shell ingress uses.
 */
import { lookup as dnsLookup } from 'node:dns';
import WebSocket from 'ws';
import { SHELL_PATH, WS_AUTH_PREFIX, WS_MARKER } from '../contract/index.js';

export interface ShellTarget {
  host: string;
  port: number;
  token: string;
  /** PEM of the endpoint CA, when the server made its own. */
  ca?: string;
}

/** `*.localhost` names are loopback without any DNS setup, as curl and browsers treat them. */
export const localhostLookup = ((host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void): void => {
  if (!host.endsWith('.localhost')) return void dnsLookup(host, opts as never, cb as never);
  if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
}) as unknown as typeof dnsLookup;

/** Runs the session on this terminal; resolves to an exit code once the shell ends. */
export function interactiveShell(t: ShellTarget, stdin: NodeJS.ReadStream = process.stdin, stdout: NodeJS.WriteStream = process.stdout): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${t.host}:${t.port}${SHELL_PATH}`, [WS_MARKER, `${WS_AUTH_PREFIX}${t.token}`], {
      lookup: localhostLookup,
      ...(t.ca ? { ca: t.ca } : {}),
    });
    const raw = stdin.isTTY;
    const resize = (): void => {
      if (stdout.columns && stdout.rows) ws.send(JSON.stringify({ type: 'resize', cols: stdout.columns, rows: stdout.rows }));
    };
    const onInput = (d: Buffer): void => ws.send(d, { binary: true });
    ws.once('open', () => {
      if (raw) stdin.setRawMode(true);
      stdin.on('data', onInput);
      stdin.resume();
      stdout.on('resize', resize);
      resize();
    });
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) stdout.write(data);
    });
    ws.once('unexpected-response', (_req, res) => {
      reject(new Error(`the endpoint refused the shell: HTTP ${res.statusCode}`));
      ws.terminate();
    });
    ws.once('error', (err) => reject(err));
    ws.once('close', (code, reason) => {
      stdin.removeListener('data', onInput);
      stdout.removeListener('resize', resize);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      if (code !== 1000) stdout.write(`\r\ncella: shell closed (${code}${reason.length ? ` ${reason.toString()}` : ''})\r\n`);
      resolve(code === 1000 ? 0 : 1);
    });
  });
}
