/** Customer egress connectors: create (name + allowed CIDRs and domains), list, delete. */
import { useState } from 'preact/hooks';
import { call } from './api.js';
import { Err, usePoll } from './ui.js';

const PATH = '/cella/v1/network-connectors';

interface Connector {
  name: string;
  networkConnectorArn: string;
  description?: string;
  egress: { cidrs: string[]; domains: string[] };
}

/** Comma- or newline-separated entries; the server checks each one and answers its code on bad input. */
const entries = (s: string): string[] =>
  s
    .split(/[,\n]/)
    .map((x) => x.trim())
    .filter(Boolean);

export function Connectors() {
  const [list, e, reload] = usePoll(() => call<{ items: Connector[] }>('GET', PATH), 10000);
  const [f, setF] = useState({ name: '', description: '', cidrs: '', domains: '' });
  const [err, setErr] = useState<unknown>();
  const set = (k: keyof typeof f) => (ev: Event) => setF({ ...f, [k]: (ev.currentTarget as HTMLInputElement).value });
  const submit = (ev: Event): void => {
    ev.preventDefault();
    const body = {
      name: f.name,
      ...(f.description ? { description: f.description } : {}),
      egress: { cidrs: entries(f.cidrs), domains: entries(f.domains) },
    };
    void call<Connector>('POST', PATH, body).then(() => (setErr(undefined), setF({ name: '', description: '', cidrs: '', domains: '' }), reload()), setErr);
  };
  const field = (k: keyof typeof f, label: string, hint = '') => (
    <label>
      {label} <input id={`conn-${k}`} value={f[k]} placeholder={hint} onInput={set(k)} />
    </label>
  );
  return (
    <section class="connectors">
      <h2>Network connectors</h2>
      <form class="card" onSubmit={submit}>
        <h3>New egress allowlist</h3>
        {field('name', 'Name', 'letters, digits, - and _')}
        {field('description', 'Description')}
        {field('cidrs', 'Allowed CIDRs (comma separated)', '10.0.0.0/8, 203.0.113.7/32')}
        {field('domains', 'Allowed domains (comma separated)', 'example.com, *.example.org')}
        <button type="submit" id="conn-submit">
          Create
        </button>
        <Err e={err} />
      </form>
      <Err e={e} />
      <table id="connectors">
        <thead>
          <tr>
            <th>Name</th>
            <th>CIDRs</th>
            <th>Domains</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(list?.items ?? []).map((c) => (
            <tr key={c.name}>
              <td>
                <code>{c.name}</code>
                {c.description ? <div class="muted">{c.description}</div> : null}
              </td>
              <td>{c.egress.cidrs.join(', ') || '—'}</td>
              <td>{c.egress.domains.join(', ') || '—'}</td>
              <td>
                <button onClick={() => void call('DELETE', `${PATH}/${encodeURIComponent(c.name)}`).then(reload, setErr)}>Delete</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
