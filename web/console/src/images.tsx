/** Images: versions and their states, (de)activation, builds from an uploaded zip with the log followed. */
import { useEffect, useState } from 'preact/hooks';
import { V, call, follow, imageName, uploadZip } from './api.js';
import { Err, usePoll } from './ui.js';

interface Image {
  name: string;
  imageArn: string;
  state: string;
  latestActiveImageVersion?: string;
  latestFailedImageVersion?: string;
}
interface Version {
  imageVersion: string;
  state: string;
  status: string;
  stateReason?: string;
}

/** The log, with the line of a failing step (and the reason) marked. */
function BuildLog({ path }: { path: string }) {
  const [text, setText] = useState('');
  useEffect(() => {
    const ac = new AbortController();
    setText('');
    void follow(`${path}?follow=true`, (t) => setText((s) => s + t), ac.signal).catch(() => {});
    return () => ac.abort();
  }, [path]);
  return (
    <pre id="build-log" class="logs" tabIndex={0}>
      {text.split('\n').map((l) => (
        <div class={/error|fail|returned a non-zero/i.test(l) ? 'bad' : ''}>{l}</div>
      ))}
    </pre>
  );
}

function Versions({ image }: { image: Image }) {
  const base = `${V}/microvm-images/${image.name}`;
  const [list, e, reload] = usePoll(() => call<{ items: Version[] }>('GET', `${base}/versions`), 5000, [image.name]);
  const [log, setLog] = useState('');
  const [err, setErr] = useState<unknown>();
  const showLog = (v: string): void =>
    void call<{ items: Array<{ buildId: string }> }>('GET', `${base}/versions/${v}/builds`).then((b) => {
      const last = b.items[b.items.length - 1];
      if (last) setLog(`/cella/v1/microvm-images/${image.name}/versions/${v}/builds/${last.buildId}/logs`);
    }, setErr);
  const status = (v: string, s: string): void => void call('PATCH', `${base}/versions/${v}`, { status: s }).then(reload, setErr);
  return (
    <div>
      <Err e={e ?? err} />
      <table>
        <tbody>
          {(list?.items ?? []).map((v) => (
            <tr key={v.imageVersion}>
              <td>{v.imageVersion}</td>
              <td>
                <span class={`state s-${v.state}`}>{v.state}</span> {v.status}
              </td>
              <td class={v.stateReason ? 'reason' : ''}>{v.stateReason}</td>
              <td>
                <button onClick={() => status(v.imageVersion, v.status === 'ACTIVE' ? 'INACTIVE' : 'ACTIVE')}>
                  {v.status === 'ACTIVE' ? 'Deactivate' : 'Activate'}
                </button>
                <button onClick={() => showLog(v.imageVersion)}>Build log</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {log && <BuildLog path={log} />}
    </div>
  );
}

function Build({ bases, onStarted }: { bases: Array<{ imageArn: string; description?: string }>; onStarted: (name: string, log: string) => void }) {
  const [name, setName] = useState('');
  const [base, setBase] = useState('');
  const [file, setFile] = useState<File>();
  const [e, setE] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const submit = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    if (!file) return setE(new Error('choose a zip with a Dockerfile'));
    setBusy(true);
    try {
      const uri = await uploadZip(file);
      const baseImageArn = base || bases[0]?.imageArn || '';
      const exists = await call('GET', `${V}/microvm-images/${name}`).then(
        () => true,
        () => false,
      );
      const started = await call<{ imageVersion: string; buildId: string }>(
        exists ? 'PUT' : 'POST',
        exists ? `${V}/microvm-images/${name}` : `${V}/microvm-images`,
        {
          ...(exists ? {} : { name }),
          baseImageArn,
          codeArtifact: { uri },
        },
      );
      onStarted(name, `/cella/v1/microvm-images/${name}/versions/${started.imageVersion}/builds/${started.buildId}/logs`);
      setE(undefined);
    } catch (err) {
      setE(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={(ev) => void submit(ev)}>
      <h3>Create or update an image</h3>
      <label>
        Name <input id="image-name" value={name} onInput={(ev) => setName(ev.currentTarget.value)} />
      </label>
      <label>
        Base{' '}
        <select value={base} onChange={(ev) => setBase(ev.currentTarget.value)}>
          {bases.map((b) => (
            <option value={b.imageArn}>{imageName(b.imageArn)}</option>
          ))}
        </select>
      </label>
      <label>
        Zip with a Dockerfile <input id="image-zip" type="file" accept=".zip,application/zip" onChange={(ev) => setFile(ev.currentTarget.files?.[0])} />
      </label>
      <button type="submit" id="image-build" disabled={busy}>
        {busy ? 'Uploading…' : 'Build'}
      </button>
      <Err e={e} />
    </form>
  );
}

export function Images() {
  const [list, e] = usePoll(() => call<{ items: Image[] }>('GET', `${V}/microvm-images`), 5000);
  const [bases] = usePoll(() => call<{ items: Array<{ imageArn: string; description?: string }> }>('GET', `${V}/managed-microvm-images`), 600_000);
  const [open, setOpen] = useState('');
  const [log, setLog] = useState('');
  return (
    <section>
      <h2>Images</h2>
      <Err e={e} />
      <ul class="images">
        {(list?.items ?? []).map((i) => (
          <li key={i.name}>
            <button class="link" onClick={() => setOpen(open === i.name ? '' : i.name)}>
              {i.name}
            </button>{' '}
            <span class={`state s-${i.state}`}>{i.state}</span> active {i.latestActiveImageVersion ?? '—'}
            {i.latestFailedImageVersion && <span class="reason"> failed {i.latestFailedImageVersion}</span>}
            {open === i.name && <Versions image={i} />}
          </li>
        ))}
      </ul>
      <h3>Managed bases</h3>
      <ul>
        {(bases?.items ?? []).map((b) => (
          <li key={b.imageArn}>
            <code>{imageName(b.imageArn)}</code> {b.description}
          </li>
        ))}
      </ul>
      <Build bases={bases?.items ?? []} onStarted={(n, l) => (setOpen(n), setLog(l))} />
      {log && <BuildLog path={log} />}
    </section>
  );
}
