/**
 * The request's target read into what the router and the validator need:
 * its URL, its path parameters and its query, each refused with
 * INVALID_ARGUMENT when malformed (never thrown as an internal error).
 */
import type { TSchema } from '@sinclair/typebox';
import { CellaError } from '../contract/index.js';

/** The contract's bound on every identifier in a path. */
export const MAX_PATH_PARAM_CHARS = 256;

/** The request target (origin form `/p?q`, or absolute form `http://host/p?q`) as a URL. */
export function requestUrl(target: string): URL {
  try {
    // A leading `//` stays part of the path: with a base URL it would be read as a host name.
    return target.startsWith('/') ? new URL(`http://cella${target}`) : new URL(target);
  } catch {
    throw new CellaError('INVALID_ARGUMENT', `the request target ${JSON.stringify(target.slice(0, 100))} is not a URL path`);
  }
}

/** One `{param}` segment of the path as sent (percent-encoded) → its value. */
export function decodePathParam(name: string, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new CellaError('INVALID_ARGUMENT', `${name} is not valid percent-encoded UTF-8`);
  }
  if (value.length < 1 || value.length > MAX_PATH_PARAM_CHARS)
    throw new CellaError('INVALID_ARGUMENT', `${name} must be 1 to ${MAX_PATH_PARAM_CHARS} characters`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new CellaError('INVALID_ARGUMENT', `${name} must not contain control characters`);
  return value;
}

/**
 * The query as the schema's types: integers and booleans only in their plain
 * spelling (`1.5` or `true` are not integers, `1` is not a boolean), so the
 * schema check refuses the rest. A list is its parameter repeated
 * (`tagKeys=a&tagKeys=b`, as restJson1 sends one); any other parameter
 * given twice is refused.
 */
export function queryObject(params: URLSearchParams, schema: TSchema): Record<string, unknown> {
  const props = (schema as { properties?: Record<string, { type?: string }> }).properties ?? {};
  const out = new Map<string, unknown>();
  for (const [key, text] of params) {
    const type = Object.hasOwn(props, key) ? props[key]?.type : undefined;
    const prior = out.get(key);
    if (type === 'array') out.set(key, [...((prior as string[] | undefined) ?? []), text]);
    else if (out.has(key)) throw new CellaError('INVALID_ARGUMENT', `query parameter ${key} is given more than once`);
    else out.set(key, typed(type, text));
  }
  // fromEntries defines `__proto__` as a plain key, which the closed schema then refuses.
  return Object.fromEntries(out);
}

function typed(type: string | undefined, text: string): unknown {
  if (type === 'integer' && /^-?\d{1,15}$/.test(text)) return Number(text);
  if (type === 'boolean' && (text === 'true' || text === 'false')) return text === 'true';
  return text;
}
