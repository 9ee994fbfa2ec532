/** One MicroVM: details, actions, followed logs, a terminal on its shell endpoint. */
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'preact/hooks';
import { V, call, follow, imageName, type Vm, when } from './api.js';
import { Err, State, usePoll } from './ui.js';

const WS_MARKER = 'lambda-microvms';
const WS_AUTH_PREFIX = 'lambda-microvms.authentication.';
const AUTH_HEADER = 'X-aws-proxy-auth';

function Logs({ id }: { id: string }) {
  const [text, setText] = useState('');
  const [e, setE] = useState<unknown>();
  useEffect(() => {
    const ac = new AbortController();
    setText('');
    follow(`/cella/v1/microvms/${id}/logs?follow=true`, (t) => setText((s) => (s + t).slice(-200_000)), ac.signal).catch(
      (err: unknown) => !ac.signal.aborted && setE(err),
    );
    return () => ac.abort();
  }, [id]);
  return (
    <>
      <Err e={e} />
      <pre id="logs" class="logs" tabIndex={0} aria-label="application log">
        {text}
      </pre>
    </>
  );
}

function Shell({ vm, proxyPort }: { vm: Vm; proxyPort: number }) {
  const el = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting…');
  useEffect(() => {
    const term = new Terminal({ convertEol: false, fontSize: 14 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el.current as HTMLDivElement);
    fit.fit();
    let ws: WebSocket | undefined;
    void call<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${vm.microvmId}/shell-auth-token`, { expirationInMinutes: 60 }).then(
      (t) => {
        const token = t.authToken[AUTH_HEADER] ?? Object.values(t.authToken)[0] ?? '';
        // Browsers set no headers on WebSockets: the token rides in a subprotocol, as the contract allows.
        ws = new WebSocket(`wss://${vm.endpoint}:${proxyPort}/shell`, [WS_MARKER, `${WS_AUTH_PREFIX}${token}`]);
        ws.binaryType = 'arraybuffer';
        const resize = (): void => ws?.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
        ws.onopen = () => (setStatus('connected'), resize(), term.focus());
        ws.onmessage = (m: MessageEvent) => m.data instanceof ArrayBuffer && term.write(new Uint8Array(m.data));
        ws.onclose = (c) =>
          setStatus(c.code === 1000 ? 'the shell ended' : `the shell closed (${c.code} ${c.reason || 'the VM may be suspended or unreachable'})`);
        term.onData((d) => ws?.readyState === WebSocket.OPEN && ws.send(new TextEncoder().encode(d)));
        term.onResize(resize);
      },
      (err: unknown) => setStatus(`no shell token: ${err instanceof Error ? err.message : String(err)}`),
    );
    const onWin = (): void => fit.fit();
    addEventListener('resize', onWin);
    return () => (removeEventListener('resize', onWin), ws?.close(), term.dispose());
  }, [vm.microvmId]);
  return (
    <>
      <p id="shell-status">{status}</p>
      <div ref={el} class="term" />
    </>
  );
}

export function VmPage({ id }: { id: string }) {
  const [vm, e, reload] = usePoll(() => call<Vm>('GET', `${V}/microvms/${id}`), 2000, [id]);
  const [info] = usePoll(() => call<{ proxyPort: number }>('GET', '/cella/v1/info'), 600_000);
  const [usage] = usePoll(() => call<Record<string, unknown>>('GET', `/cella/v1/microvms/${id}/usage`), 10_000, [id]);
  const [actErr, setActErr] = useState<unknown>();
  const [curl, setCurl] = useState('');
  const [shell, setShell] = useState(false);
  const act = (method: string, path: string): void => void call(method, path).then(reload, setActErr);
  const terminate = (): void => {
    if (confirm(`Terminate ${id}? This cannot be undone.`)) act('DELETE', `${V}/microvms/${id}`);
  };
  const mint = (): void =>
    void call<{ authToken: Record<string, string> }>('POST', `${V}/microvms/${id}/auth-token`, {
      expirationInMinutes: 60,
      allowedPorts: [{ fromPort: 8080, toPort: 8080 }],
    }).then((t) => {
      const [h, v] = Object.entries(t.authToken)[0] ?? ['', ''];
      const line = `curl -k -H '${h}: ${v}' https://${vm?.endpoint ?? ''}:${info?.proxyPort ?? 443}/`;
      setCurl(line);
      void navigator.clipboard?.writeText(line).catch(() => {});
    }, setActErr);
  if (!vm) return <Err e={e} />;
  return (
    <section>
      <h2>
        {vm.microvmId} <State s={vm.state} />
      </h2>
      <Err e={e} />
      <dl class="details">
        <dt>Image</dt>
        <dd>
          {imageName(vm.imageArn)}:{vm.imageVersion}
        </dd>
        <dt>Started</dt>
        <dd>{when(vm.startedAt)}</dd>
        <dt>State reason</dt>
        <dd id="state-reason">{vm.stateReason ?? '—'}</dd>
        <dt>Idle policy</dt>
        <dd>{vm.idlePolicy ? `suspend after ${vm.idlePolicy.maxIdleDurationSeconds} s idle` : 'none'}</dd>
        <dt>Maximum duration</dt>
        <dd>{vm.maximumDurationInSeconds ? `${vm.maximumDurationInSeconds} s (ends ${when(vm.startedAt + vm.maximumDurationInSeconds)})` : '—'}</dd>
        <dt>Endpoint</dt>
        <dd>
          <a href={`https://${vm.endpoint ?? ''}:${info?.proxyPort ?? 443}/`} target="_blank" rel="noreferrer">
            {vm.endpoint}
          </a>
        </dd>
        <dt>Usage</dt>
        <dd>{usage ? JSON.stringify(usage) : '—'}</dd>
      </dl>
      <div class="actions">
        <button id="suspend" onClick={() => act('POST', `${V}/microvms/${id}/suspend`)}>
          Suspend
        </button>
        <button id="resume" onClick={() => act('POST', `${V}/microvms/${id}/resume`)}>
          Resume
        </button>
        <button id="terminate" class="danger" onClick={terminate}>
          Terminate
        </button>
        <button onClick={mint}>Endpoint token + curl</button>
        <button id="open-shell" onClick={() => setShell(!shell)}>
          {shell ? 'Close terminal' : 'Terminal'}
        </button>
      </div>
      <Err e={actErr} />
      {curl && <pre class="curl">{curl}</pre>}
      {shell && info && vm.state === 'RUNNING' && <Shell vm={vm} proxyPort={info.proxyPort} />}
      <h3>Logs</h3>
      <Logs id={id} />
    </section>
  );
}
