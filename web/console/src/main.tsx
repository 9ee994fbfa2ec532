/** The console: hash-routed pages over the public API (api.ts). */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { V, call, getKey, imageName, setKey, type Vm, when } from './api.js';
import { Connectors } from './connectors.js';
import { Images } from './images.js';
import { Usage } from './usage.js';
import { VmPage } from './vm.js';
import { Err, State, usePoll } from './ui.js';
import './style.css';

function SignIn({ onIn }: { onIn: () => void }) {
  const [key, setK] = useState('');
  const [e, setE] = useState<unknown>();
  const submit = (ev: Event): void => {
    ev.preventDefault();
    void call(`GET`, `${V}/microvms?maxResults=1`, undefined, key).then(
      () => (setKey(key), onIn()),
      (err: unknown) => setE(err),
    );
  };
  return (
    <form class="card signin" onSubmit={submit}>
      <h1>Cella console</h1>
      <label>
        API key <input id="api-key" type="password" autoComplete="off" value={key} onInput={(ev) => setK(ev.currentTarget.value)} />
      </label>
      <button type="submit">Sign in</button>
      <Err e={e} />
    </form>
  );
}

function Vms() {
  const [state, setState] = useState('');
  const [image, setImage] = useState('');
  const [list, e] = usePoll(() => call<{ items: Vm[] }>('GET', `${V}/microvms?maxResults=50`), 3000);
  const items = (list?.items ?? []).filter((v) => (!state || v.state === state) && (!image || imageName(v.imageArn) === image));
  const images = [...new Set((list?.items ?? []).map((v) => imageName(v.imageArn)))];
  return (
    <section>
      <h2>MicroVMs</h2>
      <div class="filters">
        <label>
          State{' '}
          <select id="filter-state" value={state} onChange={(ev) => setState(ev.currentTarget.value)}>
            <option value="">all</option>
            {['PENDING', 'RUNNING', 'SUSPENDING', 'SUSPENDED', 'RESUMING', 'TERMINATING', 'TERMINATED', 'FAILED'].map((s) => (
              <option>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Image{' '}
          <select value={image} onChange={(ev) => setImage(ev.currentTarget.value)}>
            <option value="">all</option>
            {images.map((i) => (
              <option>{i}</option>
            ))}
          </select>
        </label>
        <a class="button" href="#/run">
          Run a MicroVM
        </a>
      </div>
      <Err e={e} />
      <table>
        <thead>
          <tr>
            <th>ID</th>
            <th>State</th>
            <th>Image</th>
            <th>Started</th>
          </tr>
        </thead>
        <tbody>
          {items.map((v) => (
            <tr key={v.microvmId}>
              <td>
                <a href={`#/vm/${v.microvmId}`}>{v.microvmId}</a>
              </td>
              <td>
                <State s={v.state} />
              </td>
              <td>
                {imageName(v.imageArn)}:{v.imageVersion}
              </td>
              <td>{when(v.startedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Run() {
  const [f, setF] = useState({ image: 'demo', version: '', idle: '', suspended: '', maxDuration: '', ingress: 'ALL_INGRESS', egress: '', payload: '' });
  const [e, setE] = useState<unknown>();
  const [bases] = usePoll(() => call<{ items: Array<{ imageArn: string }> }>('GET', `${V}/managed-microvm-images`), 600_000);
  // Managed connectors (ALL_INGRESS, SHELL_INGRESS, …) by name: their ARN shares the managed images' prefix.
  const arn = (n: string): string =>
    n.startsWith('arn:') ? n : (bases?.items[0]?.imageArn ?? '').replace(/microvm-image:.*$/, `network-connector:aws-network-connector:${n}`);
  const set = (k: keyof typeof f) => (ev: Event) => setF({ ...f, [k]: (ev.currentTarget as HTMLInputElement).value });
  const submit = (ev: Event): void => {
    ev.preventDefault();
    const list = (s: string): string[] =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean)
        .map(arn);
    const body = {
      imageIdentifier: f.image,
      ...(f.version ? { imageVersion: f.version } : {}),
      ...(f.idle
        ? { idlePolicy: { maxIdleDurationSeconds: Number(f.idle), suspendedDurationSeconds: Number(f.suspended || 0), autoResumeEnabled: true } }
        : {}),
      ...(f.maxDuration ? { maximumDurationInSeconds: Number(f.maxDuration) } : {}),
      ...(f.ingress ? { ingressNetworkConnectors: list(f.ingress) } : {}),
      ...(f.egress ? { egressNetworkConnectors: list(f.egress) } : {}),
      ...(f.payload ? { runHookPayload: f.payload } : {}),
    };
    void call<Vm>('POST', `${V}/microvms`, body).then((vm) => (location.hash = `#/vm/${vm.microvmId}`), setE);
  };
  const field = (k: keyof typeof f, label: string, numeric = false) => (
    <label>
      {label} <input id={`run-${k}`} inputMode={numeric ? 'numeric' : 'text'} value={f[k]} onInput={set(k)} />
    </label>
  );
  return (
    <form class="card" onSubmit={submit}>
      <h2>Run a MicroVM</h2>
      {field('image', 'Image')}
      {field('version', 'Version (latest active if empty)')}
      {field('idle', 'Suspend after idle seconds', true)}
      {field('suspended', 'Terminate after suspended seconds', true)}
      {field('maxDuration', 'Maximum duration (s)', true)}
      {field('ingress', 'Ingress connectors (comma separated)')}
      {field('egress', 'Egress connectors (comma separated)')}
      {field('payload', 'Run hook payload')}
      <button type="submit" id="run-submit">
        Run
      </button>
      <Err e={e} />
    </form>
  );
}

function App() {
  const [signedIn, setSignedIn] = useState(getKey() !== null);
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = (): void => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  if (!signedIn) return <SignIn onIn={() => setSignedIn(true)} />;
  const [, page = 'vms', arg = ''] = hash.split('/');
  return (
    <>
      <nav>
        <b>Cella</b>
        <a href="#/vms">MicroVMs</a>
        <a href="#/images">Images</a>
        <a href="#/connectors">Connectors</a>
        <a href="#/usage">Usage</a>
        <button onClick={() => (setKey(null), setSignedIn(false))}>Sign out</button>
      </nav>
      <main>
        {page === 'vm' ? (
          <VmPage id={arg} />
        ) : page === 'run' ? (
          <Run />
        ) : page === 'images' ? (
          <Images />
        ) : page === 'connectors' ? (
          <Connectors />
        ) : page === 'usage' ? (
          <Usage />
        ) : (
          <Vms />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app') as HTMLElement);
