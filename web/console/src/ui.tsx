/** Pieces every page uses: errors with their code, polling, state badges. */
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from './api.js';

export function Err({ e }: { e: unknown }) {
  if (!e) return null;
  const code = e instanceof ApiError ? e.code : 'ERROR';
  return (
    <p class="error" role="alert">
      <b>{code}</b> {e instanceof Error ? e.message : JSON.stringify(e)}
    </p>
  );
}

/** Polls fn every ms (the API's rate limits allow a few calls a second per caller). */
export function usePoll<T>(fn: () => Promise<T>, ms: number, deps: unknown[] = []): [T | undefined, unknown, () => void] {
  const [value, setValue] = useState<T>();
  const [error, setError] = useState<unknown>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const run = (): void =>
      void fn().then(
        (v) => live && (setValue(v), setError(undefined)),
        (e: unknown) => live && setError(e),
      );
    run();
    const t = setInterval(run, ms);
    return () => ((live = false), clearInterval(t));
  }, [...deps, tick]);
  return [value, error, () => setTick((n) => n + 1)];
}

export const State = ({ s }: { s: string }) => <span class={`state s-${s}`}>{s}</span>;
