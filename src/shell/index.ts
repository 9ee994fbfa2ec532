/**
 * Shell ingress: `wss://<endpoint>/shell` with a shell token opens a terminal
 * in the VM through cella-init (AgentClient.openPty). Frames as the contract
 * describes: a text `{"type":"session_init","session_id":…}` first, binary
 * frames are raw terminal bytes both ways, text `{"type":"resize","cols":N,"rows":N}`
 * from the client, and close 1000 "shell exited" when the shell ends.
 * The proxy has checked the token and holds the VM active while it is open.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { PtySession } from '../agent/index.js';
import { WS_MARKER } from '../contract/index.js';
import type { Engine } from '../engine/index.js';
import type { RunnableImage } from '../lifecycle/index.js';
import type { VmRecord } from '../store/index.js';

/** Terminal output is dropped beyond this much unsent to a slow client, rather than held in memory. */
const MAX_BUFFERED = 8 * 1024 * 1024;

export interface ResizeMessage {
  type: 'resize';
  cols: number;
  rows: number;
}

function parseResize(text: string): ResizeMessage | undefined {
  try {
    const m = JSON.parse(text) as Partial<ResizeMessage>;
    const ok = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
    return m.type === 'resize' && ok(m.cols) && ok(m.rows) ? { type: 'resize', cols: m.cols, rows: m.rows } : undefined;
  } catch {
    return undefined;
  }
}

export function shellHandler(
  engine: Pick<Engine, 'get'>,
  images: (name: string, version: string) => Promise<RunnableImage | undefined>,
  log: (line: string) => void = () => {},
): (vm: VmRecord, req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024, handleProtocols: (offered) => (offered.has(WS_MARKER) ? WS_MARKER : false) });
  return (vm, req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      void open(vm, ws).catch((err: Error) => {
        log(`shell of ${vm.id}: ${err.message}`);
        ws.close(1011, 'the shell could not start');
      });
    });
  };

  async function open(vm: VmRecord, ws: WebSocket): Promise<void> {
    const running = engine.get(vm.id);
    if (!running) throw new Error('the MicroVM is not running');
    // Input that arrives while the terminal opens is kept for it, not lost.
    let pty: PtySession | undefined;
    const early: Array<{ data: Buffer; binary: boolean }> = [];
    const onMessage = (data: Buffer, binary: boolean): void => {
      if (!pty) return void early.push({ data, binary });
      if (binary) return pty.write(data);
      const resize = parseResize(data.toString());
      if (resize) pty.resize(resize.cols, resize.rows);
    };
    ws.on('message', onMessage);
    let gone = false;
    ws.on('close', () => {
      gone = true;
      pty?.close();
    });
    const config = (await images(vm.imageName, vm.imageVersion))?.config;
    const session = await running.agent.openPty({
      argv: [],
      env: { ...config?.environmentVariables, TERM: 'xterm-256color' },
      cwd: config?.workingDirectory ?? '/',
      rows: 24,
      cols: 80,
    });
    if (gone) return session.close();
    ws.send(JSON.stringify({ type: 'session_init', session_id: randomUUID() }));
    session.on('data', (chunk: Buffer) => {
      if (ws.bufferedAmount < MAX_BUFFERED) ws.send(chunk, { binary: true });
    });
    session.on('close', () => ws.close(1000, 'shell exited'));
    pty = session;
    for (const m of early.splice(0)) onMessage(m.data, m.binary);
  }
}
