/**
 * Usage: compute (vCPU) seconds per image, and the running-VM count over time.
 * The usage API answers totals per MicroVM, not a history, so the page joins them
 * with the MicroVM list for the image and samples the running count itself while open.
 */
import { useEffect, useState } from 'preact/hooks';
import { V, call, imageName, type Vm } from './api.js';
import { Err, usePoll } from './ui.js';

interface UsageRow {
  microvmId?: string;
  vcpuSeconds: number;
}
interface Sample {
  at: number;
  running: number;
}
const SAMPLES = 120;
const EVERY_MS = 5000;

async function load(): Promise<{ perImage: Array<[string, number]>; running: number; total: number }> {
  const [u, vms] = await Promise.all([
    call<{ total: UsageRow; microvms: UsageRow[] }>('GET', '/cella/v1/usage'),
    call<{ items: Vm[] }>('GET', `${V}/microvms?maxResults=50`),
  ]);
  const image = new Map(vms.items.map((v) => [v.microvmId, imageName(v.imageArn)]));
  const sums = new Map<string, number>();
  for (const m of u.microvms) {
    const name = image.get(m.microvmId ?? '') ?? '(not listed)';
    sums.set(name, (sums.get(name) ?? 0) + m.vcpuSeconds);
  }
  return {
    perImage: [...sums].sort((a, b) => b[1] - a[1]),
    running: vms.items.filter((v) => v.state === 'RUNNING').length,
    total: u.total.vcpuSeconds,
  };
}

function Bars({ rows }: { rows: Array<[string, number]> }) {
  const max = Math.max(Number.EPSILON, ...rows.map(([, s]) => s));
  return (
    <div class="chart" id="usage-images" role="img" aria-label="compute seconds per image">
      {rows.map(([name, s]) => (
        <div class="bar" key={name}>
          <span class="bar-name">{name}</span>
          <svg class="bar-track" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">
            <rect x="0" y="0" height="10" width={(100 * s) / max} fill="#3b82f6" />
          </svg>
          <span>{s.toFixed(1)} s</span>
        </div>
      ))}
    </div>
  );
}

function RunningLine({ samples }: { samples: Sample[] }) {
  const peak = Math.max(0, ...samples.map((s) => s.running));
  const scale = Math.max(1, peak);
  const points = samples.map((s, i) => `${(i * 100) / (SAMPLES - 1)},${40 - (s.running * 36) / scale}`).join(' ');
  const last = samples.at(-1);
  return (
    <figure class="card">
      <figcaption>
        Running MicroVMs, sampled every {EVERY_MS / 1000} s while this page is open: now <b id="usage-running">{last?.running ?? '—'}</b>, peak {peak}
      </figcaption>
      <svg class="line" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label="running MicroVMs over time">
        <line x1="0" y1="40" x2="100" y2="40" stroke="#d0d7de" stroke-width="0.5" />
        <polyline points={points} fill="none" stroke="#16a34a" stroke-width="1" vector-effect="non-scaling-stroke" />
      </svg>
    </figure>
  );
}

export function Usage() {
  const [u, e] = usePoll(load, EVERY_MS);
  const [samples, setSamples] = useState<Sample[]>([]);
  useEffect(() => {
    if (u) setSamples((s) => [...s, { at: Date.now(), running: u.running }].slice(-SAMPLES));
  }, [u]);
  return (
    <section class="usage">
      <h2>Usage</h2>
      <Err e={e} />
      <RunningLine samples={samples} />
      <h3>Compute (vCPU) seconds per image, all time: {(u?.total ?? 0).toFixed(1)} s</h3>
      <Bars rows={u?.perImage ?? []} />
      <p class="muted">The usage API answers totals per MicroVM; images come from the MicroVM list (its latest 50).</p>
    </section>
  );
}
