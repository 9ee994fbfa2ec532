/** The public HTTP API with the key from session storage: the console has no other way in. */
const KEY = 'cella.apiKey';
export const V = '/2025-09-09';

export const getKey = (): string | null => sessionStorage.getItem(KEY);
export const setKey = (k: string | null): void => (k ? sessionStorage.setItem(KEY, k) : sessionStorage.removeItem(KEY));

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function raw(method: string, path: string, body?: BodyInit, type = 'application/json', key = getKey()): Promise<Response> {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${key ?? ''}`, ...(body ? { 'content-type': type } : {}) },
    ...(body ? { body } : {}),
  });
  if (!res.ok) {
    const text = await res.text();
    let e: { code?: string; message?: string } = {};
    try {
      e = JSON.parse(text) as typeof e;
    } catch {
      /* not JSON: the text is the message */
    }
    throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? text);
  }
  return res;
}

export async function call<T>(method: string, path: string, body?: unknown, key?: string): Promise<T> {
  const res = await raw(method, path, body === undefined ? undefined : JSON.stringify(body), 'application/json', key ?? getKey());
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

export async function uploadZip(zip: Blob): Promise<string> {
  const res = await raw('POST', '/cella/v1/code-artifacts', zip, 'application/zip');
  return ((await res.json()) as { uri: string }).uri;
}

/** Streams a text body (logs with follow=true) to onText until it ends or the signal aborts. */
export async function follow(path: string, onText: (t: string) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(path, { headers: { authorization: `Bearer ${getKey() ?? ''}` }, signal });
  if (!res.ok || !res.body) throw new ApiError(res.status, `HTTP_${res.status}`, await res.text());
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onText(value);
  }
}

export interface Vm {
  microvmId: string;
  state: string;
  imageArn: string;
  imageVersion: string;
  startedAt: number;
  endpoint?: string;
  stateReason?: string;
  maximumDurationInSeconds?: number;
  idlePolicy?: { maxIdleDurationSeconds?: number; suspendedDurationSeconds?: number };
  ingressNetworkConnectors?: string[];
  egressNetworkConnectors?: string[];
}

/** An image's name from its ARN (`arn:aws:lambda:<region>:<account>:microvm-image:<name>`). */
export const imageName = (arn: string): string => arn.slice(arn.lastIndexOf(':') + 1);
export const when = (s: number | undefined): string => (s ? new Date(s * 1000).toLocaleString() : '—');
