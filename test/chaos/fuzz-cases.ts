/**
 * Hostile requests for every operation of /openapi.json, drawn from a
 * seeded PRNG so a failing case comes back with the same seed. Each case
 * says whether the API must refuse it (`mustFail`: a 4xx) or may accept it
 * (valid-looking requests, where only "no 5xx, no hang, JSON errors" holds).
 *
 * Nothing generated makes heavy resources: there is no image to run, and a
 * create-image body that could pass points at a code artifact that does not
 * exist, so its build fails at the fetch, before any VM.
 */
import type { RawRequest } from '../fixtures/raw-http.js';

export interface FuzzCase extends RawRequest {
  kind: string;
  mustFail: boolean;
}

/** The parts of an OpenAPI 3.1 document the generator reads. */
export interface OpenApi {
  paths: Record<string, Record<string, { operationId: string; parameters?: Param[]; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
}
interface Param {
  name: string;
  in: 'path' | 'query';
  schema: Schema;
}
export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  patternProperties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
}

interface Operation {
  op: string;
  method: string;
  path: string;
  params: string[];
  query: Record<string, Schema>;
  body?: Schema;
  upload: boolean;
}

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const KNOWN_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
const ODD_METHODS = [
  'OPTIONS',
  'TRACE',
  'HEAD',
  'PROPFIND',
  'MKCOL',
  'LINK',
  'SEARCH',
  'M-SEARCH',
  'PURGE',
  'QUERY',
  'FOO',
  'BREW',
  'get',
  'P0ST',
  'CONNECT',
  'DELETE2',
];
const BAD_SEGMENTS = ['%', '%Z', '%ZZ', '%C0%AF', '%FF%FE', '%E0%80%AF', '%ED%A0%80', '%F4%90%80%80', 'a%', '%00', '%0A', 'x'.repeat(300), '%41'.repeat(300)];
const ODD_SEGMENTS = [
  '..',
  '%2e%2e',
  '.',
  '%2F',
  'a%2Fb',
  '%20',
  '~',
  '%F0%9F%98%80',
  '%E2%80%AE',
  'mvm-00000000-0000-0000-0000-000000000000',
  'busybox',
  '1.0',
  "'",
  '%22',
  '*',
  'null',
  '0',
  '-1',
];
const UNICODE = ['\ud800', '\udfff', 'a\u0000b', '\u202eevil', '😀', 'e\u0301', '\u200b', '\ufeff', 'Ω≈ç√', '\u0085', '\u2028', '𝕏'.repeat(40)];
const RAW_NUMBERS: Array<[string, boolean]> = [
  ['NaN', true],
  ['Infinity', true],
  ['1e309', true],
  ['-1e309', true],
  ['1.5', true],
  ['9007199254740993', true],
  [`1${'0'.repeat(400)}`, true],
  ['-1', true],
  ['"5"', true],
  ['0x10', true],
  ['+1', true],
  ['.5', true],
  ['true', true],
  ['null', true],
  ['[]', true],
  ['-0', false],
  ['1e1', false],
  ['1.0', false],
];
const QUERY_NUMBERS = ['1.5', 'true', 'NaN', '1e309', '-0', '0', '51', '', ' 1', '１', '1e1', '0x1', '99999999999999999999', '-1', '%ZZ', '1%00'];
const MALFORMED_JSON = [
  '{',
  '{"a":',
  '[1,2',
  'nul',
  '{"a":1}}',
  '\u0000',
  "{'a':1}",
  '{"a":NaN}',
  '{"a":undefined}',
  '{,}',
  '"',
  '{"a":"\\x"}',
  '{"a":1,}',
  '\ufeff{}x',
  '}{',
  '{"a":"b"',
  '[',
  '1 2',
];
const AUTHS: Array<string | undefined> = [
  undefined,
  '',
  'Bearer',
  'Bearer ',
  'Bearer wrong-key',
  'Basic dXNlcjpwYXNz',
  'bearer',
  `Bearer ${'k'.repeat(8000)}`,
  'Bearer \u00ff\u00fe',
  'Token abc',
  'Bearer a b',
];
const CONTENT_TYPES = [
  'text/plain',
  'application/xml',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
  'application/x-www-form-urlencoded',
  '',
  'application/zip',
  '*/*',
];

export function operations(doc: OpenApi): Operation[] {
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, o] of Object.entries(methods)) {
      const content = o.requestBody?.content ?? {};
      ops.push({
        op: o.operationId,
        method: method.toUpperCase(),
        path,
        params: (o.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name),
        query: Object.fromEntries((o.parameters ?? []).filter((p) => p.in === 'query').map((p) => [p.name, p.schema])),
        ...(content['application/json'] ? { body: content['application/json'].schema } : {}),
        upload: Object.keys(content).some((t) => t !== 'application/json'),
      });
    }
  }
  return ops;
}

export class CaseMaker {
  private readonly rand: () => number;

  constructor(
    seed: number,
    private readonly ops: Operation[],
    private readonly apiKey: string,
    /** ARNs the server accepts as baseImageArn, so some create bodies go one step further. */
    private readonly managedArns: string[],
  ) {
    this.rand = prng(seed);
  }

  next(): FuzzCase {
    const op = this.pick(this.ops);
    const kinds: Array<[string, number]> = [
      ['valid', 3],
      ['bad-param', op.params.length ? 4 : 0],
      ['odd-param', op.params.length ? 2 : 0],
      ['malformed-json', 3],
      ['wrong-type', op.body ? 4 : 0],
      ['bad-number', op.body && numberPaths(op.body).length ? 3 : 0],
      ['unicode', 2],
      ['huge-string', op.body ? 2 : 0],
      ['unknown-field', op.body ? 2 : 0],
      ['missing-required', op.body && requiredPaths(op.body).length ? 2 : 0],
      ['bad-query', 3],
      ['wrong-method', 3],
      ['huge-body', 1],
      ['huge-url', 1],
      ['huge-header', 1],
      ['content-type', 1],
      ['auth', 2],
    ];
    const kind = this.weighted(kinds);
    return this.make(kind, op);
  }

  private make(kind: string, op: Operation): FuzzCase {
    let method = op.method;
    let target = this.target(op);
    const headers: Array<[string, string]> = [
      ['host', 'cella'],
      ['authorization', `Bearer ${this.apiKey}`],
    ];
    let body: Buffer | undefined = op.body ? json(this.value(op.body, 'body')) : op.upload ? Buffer.from('PK\u0003\u0004fuzz') : undefined;
    let contentType = op.upload ? 'application/zip' : 'application/json';
    let mustFail = true;
    switch (kind) {
      case 'valid':
        mustFail = false;
        break;
      case 'bad-param':
        target = this.target(op, this.pick(BAD_SEGMENTS));
        break;
      case 'odd-param':
        target = this.target(op, this.pick(ODD_SEGMENTS));
        mustFail = false;
        break;
      case 'malformed-json':
        body = Buffer.from(this.pick(MALFORMED_JSON));
        mustFail = !op.upload;
        break;
      case 'wrong-type': {
        const value = this.value(op.body as Schema, 'body') as Record<string, unknown>;
        const [p, schema] = this.pick(allPaths(op.body as Schema));
        body = json(setAt(value, p, this.wrongType(schema)));
        break;
      }
      case 'bad-number': {
        const value = this.value(op.body as Schema, 'body') as Record<string, unknown>;
        const [raw, fails] = this.pick(RAW_NUMBERS);
        body = Buffer.from(JSON.stringify(setAt(value, this.pick(numberPaths(op.body as Schema)), RAW)).replace(`"${RAW}"`, raw));
        mustFail = fails;
        break;
      }
      case 'unicode': {
        const u = this.pick(UNICODE);
        mustFail = false;
        const strings = op.body ? allPaths(op.body).filter(([, s]) => s.type === 'string') : [];
        if (strings.length && this.rand() < 0.6) {
          body = json(setAt(this.value(op.body as Schema, 'body') as Record<string, unknown>, this.pick(strings)[0], u));
        } else if (op.params.length && this.rand() < 0.7) {
          target = this.target(op, encodeURIComponent(u.replace(/[\ud800-\udfff]/g, '')) || '%ED%A0%80');
        } else {
          // Raw bytes that are not UTF-8 inside a JSON string.
          body = Buffer.concat([Buffer.from('{"x":"'), Buffer.from([0xff, 0xfe, 0xc0, 0xaf]), Buffer.from('"}')]);
          mustFail = !op.upload;
        }
        break;
      }
      case 'huge-string': {
        const [p, schema] = this.pick(
          allPaths(op.body as Schema)
            .filter(([, s]) => s.type === 'string')
            .concat([[['zz'], { type: 'string', maxLength: 0 }]]),
        );
        const n = this.pick([300, 5000, 70_000, 900_000]);
        body = json(setAt(this.value(op.body as Schema, 'body') as Record<string, unknown>, p, 'é'.repeat(n / 2)));
        mustFail = schema.maxLength !== undefined && n / 2 > schema.maxLength;
        break;
      }
      case 'unknown-field': {
        const value = this.value(op.body as Schema, 'body') as Record<string, unknown>;
        body = Buffer.from(
          JSON.stringify(value).replace(
            /^\{/,
            `{"${this.pick(['zzUnknown', '__proto__', 'constructor', 'prototype', ''])}":${this.pick(['1', '{}', '{"isAdmin":true}', 'null'])}${Object.keys(value).length ? ',' : ''}`,
          ),
        );
        break;
      }
      case 'missing-required': {
        const value = this.value(op.body as Schema, 'body') as Record<string, unknown>;
        body = json(deleteAt(value, this.pick(requiredPaths(op.body as Schema))));
        break;
      }
      case 'bad-query': {
        const names = Object.keys(op.query);
        const [path] = target.split('?');
        const unknown = ['zz', 'color', '__proto__', 'maxResults', 'follow', ''].filter((n) => !names.includes(n));
        const q = names.length && this.rand() < 0.7 ? this.badQuery(op) : `${this.pick(unknown)}=${this.pick(['1', '', '%ZZ', 'x'])}`;
        target = `${path}?${q}`;
        break;
      }
      case 'wrong-method': {
        const taken = this.ops.filter((o) => o.path === op.path).map((o) => o.method);
        method = this.pick([...KNOWN_METHODS.filter((m) => !taken.includes(m)), ...ODD_METHODS]);
        if (method === 'CONNECT' && this.rand() < 0.5) target = 'example.com:443';
        if (this.rand() < 0.5) body = Buffer.from('{"a":1}');
        break;
      }
      case 'huge-body': {
        const size = 1024 * 1024 + 1 + Math.floor(this.rand() * 1024 * 1024);
        body = Buffer.concat([Buffer.from('{"x":"'), Buffer.alloc(size, 0x61), Buffer.from('"}')]);
        mustFail = !op.upload;
        if (this.rand() < 0.3) headers.push(['transfer-encoding', 'chunked']);
        break;
      }
      case 'huge-url':
        target = this.rand() < 0.5 ? `${target.split('?')[0]}/${'a'.repeat(100_000)}` : `${target.split('?')[0]}?nextToken=${'A'.repeat(100_000)}`;
        break;
      case 'huge-header':
        if (this.rand() < 0.5) headers.push(['x-fuzz', 'a'.repeat(64 * 1024)]);
        else for (let i = 0; i < 3000; i++) headers.push([`x-h${i}`, 'aaaaaaaa']);
        break;
      case 'content-type':
        contentType = this.pick(CONTENT_TYPES);
        mustFail = false;
        break;
      case 'auth': {
        const auth = this.pick(AUTHS);
        headers.splice(1, 1, ...(auth === undefined ? [] : [['authorization', auth] as [string, string]]));
        break;
      }
      default:
        throw new Error(`no such case kind ${kind}`);
    }
    if (body) {
      headers.push(['content-type', contentType]);
      if (headers.some(([k]) => k === 'transfer-encoding')) body = chunked(body);
      else headers.push(['content-length', String(body.length)]);
    }
    return { kind, method, target, headers, ...(body ? { body } : {}), mustFail };
  }

  /** The operation's path with its parameters filled in (`bad` for one of them), and sometimes a valid query. */
  private target(op: Operation, bad?: string): string {
    const which = bad === undefined ? -1 : Math.floor(this.rand() * op.params.length);
    let i = 0;
    const path = op.path.replace(/\{(\w+)\}/g, (_m, name: string) => (i++ === which ? (bad as string) : encodeURIComponent(this.paramValue(name))));
    const names = Object.keys(op.query);
    if (!names.length || this.rand() < 0.5) return path;
    const name = this.pick(names);
    return `${path}?${name}=${encodeURIComponent(String(this.value(op.query[name] as Schema, name)))}`;
  }

  private paramValue(name: string): string {
    if (name === 'imageVersion') return this.pick(['1.0', '2.0', '1']);
    if (name === 'imageIdentifier') return this.pick(['fz-img', 'nope', 'busybox', ...this.managedArns]);
    return this.pick(['nope', 'mvm-00000000-0000-0000-0000-000000000000', 'fz-conn', 'b-1']);
  }

  private badQuery(op: Operation): string {
    const name = this.pick(Object.keys(op.query));
    const schema = op.query[name] as Schema;
    const value =
      schema.type === 'integer'
        ? this.pick(QUERY_NUMBERS)
        : schema.type === 'boolean'
          ? this.pick(['yes', '1', 'TRUE', '', 'truee'])
          : name === 'nextToken'
            ? this.pick([
                'x',
                'A',
                'MA',
                'garbage',
                'eyJ9',
                'W10',
                '%ZZ',
                'A'.repeat(3000),
                Buffer.from('["ListMicrovms",{"c":-1,"i":""}]').toString('base64url'),
              ])
            : this.pick(['', 'x'.repeat(3000)]);
    return this.rand() < 0.2 ? `${name}=1&${name}=2` : `${name}=${value}`;
  }

  /** A value of `schema`'s shape, built from the samples below (valid for most fields, not all). */
  private value(schema: Schema, name: string): unknown {
    if (schema.anyOf) return this.value(this.pick(schema.anyOf), name);
    if (schema.const !== undefined) return schema.const;
    switch (schema.type) {
      case 'object': {
        const out: Record<string, unknown> = {};
        for (const [k, s] of Object.entries(schema.properties ?? {})) {
          if (schema.required?.includes(k) || this.rand() < 0.3) out[k] = this.value(s, k);
        }
        for (const s of Object.values(schema.patternProperties ?? {})) {
          for (let i = Math.floor(this.rand() * 3); i > 0; i--) out[`K${i}_${Math.floor(this.rand() * 100)}`] = this.value(s, 'value');
        }
        return out;
      }
      case 'array': {
        const n = Math.max(schema.minItems ?? 0, Math.min(schema.maxItems ?? 2, Math.floor(this.rand() * 3)));
        return Array.from({ length: n }, () => this.value(schema.items ?? {}, name));
      }
      case 'integer':
      case 'number': {
        const lo = schema.minimum ?? 0;
        const hi = schema.maximum ?? lo + 100;
        return lo + Math.floor(this.rand() * (Math.min(hi, lo + 1000) - lo + 1));
      }
      case 'boolean':
        return this.rand() < 0.5;
      case 'string':
        return this.sample(name, schema);
      // A schema without a type takes any value; null stands for it and for types the contract does not use.
      case undefined:
      default:
        return null;
    }
  }

  private sample(name: string, schema: Schema): string {
    const pick = (xs: string[]): string => this.pick(xs);
    if (name === 'uri') return `file:///nonexistent/fz-${Math.floor(this.rand() * 1e6)}.zip`;
    if (name === 'baseImageArn') return pick([...this.managedArns, 'arn:aws:lambda:us-east-1:aws:microvm-image:nope', 'busybox']);
    if (/RoleArn$/.test(name)) return 'arn:aws:iam::123456789012:role/fz';
    if (name === 'imageIdentifier') return pick(['fz-img', 'nope', 'arn:aws:s3:::bucket']);
    if (name === 'name') return `fz-${Math.floor(this.rand() * 1e6)}`;
    if (name === 'cidrs') return pick(['10.0.0.0/8', '1.2.3.4/32', '999.1.1.1/8', '10.0.0.0/33', '::1/128', 'a.b.c.d/8', '0.0.0.0/0']);
    if (name === 'domains') return pick(['example.com', '*.example.com', '-bad-', 'a..b', '*', 'x'.repeat(255), 'éxample.com', 'localhost']);
    if (schema.pattern === '^arn:')
      return pick([
        'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS',
        'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS',
        'arn:nope',
        'arn:aws:lambda:local:aws:network-connector:fz-conn',
      ]);
    if (schema.pattern) return 'fz_1';
    return pick(['fz', 'x', 'hello world', '1.0', 'ACTIVE'])
      .slice(0, schema.maxLength ?? 100)
      .padEnd(schema.minLength ?? 0, 'x');
  }

  private wrongType(schema: Schema): unknown {
    const options: unknown[] = [null, true, 7, -3.5, 'str', [], [1, 'a'], { a: 1 }];
    const fits = (v: unknown): boolean => {
      const types = schema.anyOf ? schema.anyOf.map((s) => s.type) : [schema.type];
      return types.some((t) =>
        t === 'integer' || t === 'number'
          ? typeof v === 'number'
          : t === 'array'
            ? Array.isArray(v)
            : t === 'object'
              ? typeof v === 'object' && v !== null && !Array.isArray(v)
              : typeof v === t,
      );
    };
    return this.pick(options.filter((v) => !fits(v)));
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)] as T;
  }

  private weighted(xs: Array<[string, number]>): string {
    const total = xs.reduce((s, [, w]) => s + w, 0);
    let r = this.rand() * total;
    for (const [k, w] of xs) if ((r -= w) < 0) return k;
    return (xs.at(-1) as [string, number])[0];
  }
}

/** A placeholder replaced by a raw JSON number token after JSON.stringify. */
const RAW = '\u0001raw\u0001';

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

function chunked(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; at += 65536) {
    const c = body.subarray(at, at + 65536);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

type Path = string[];

/** Every property path of a body schema (objects only; array items as index 0), with its schema. */
function allPaths(schema: Schema, prefix: Path = []): Array<[Path, Schema]> {
  const out: Array<[Path, Schema]> = [];
  for (const [k, s] of Object.entries(schema.properties ?? {})) {
    out.push([[...prefix, k], s]);
    if (s.type === 'object') out.push(...allPaths(s, [...prefix, k]));
    if (s.type === 'array' && s.items?.type === 'object') out.push(...allPaths(s.items, [...prefix, k, '0']));
  }
  return out;
}

function numberPaths(schema: Schema): Path[] {
  return allPaths(schema)
    .filter(([, s]) => s.type === 'integer' || s.type === 'number' || s.anyOf?.some((a) => a.type === 'number'))
    .map(([p]) => p);
}

/** Paths of required properties whose parents are required too (so removing one always makes the body invalid). */
function requiredPaths(schema: Schema, prefix: Path = []): Path[] {
  const out: Path[] = [];
  for (const k of schema.required ?? []) {
    out.push([...prefix, k]);
    const s = schema.properties?.[k];
    if (s?.type === 'object') out.push(...requiredPaths(s, [...prefix, k]));
  }
  return out;
}

/** `value` with `path` set to `v`, creating the objects and arrays on the way. */
function setAt(value: Record<string, unknown>, path: Path, v: unknown): Record<string, unknown> {
  const root = structuredClone(value);
  let at: Record<string, unknown> = root;
  path.slice(0, -1).forEach((k, i) => {
    const nextIsIndex = /^\d+$/.test(path[i + 1] as string);
    if (typeof at[k] !== 'object' || at[k] === null) at[k] = nextIsIndex ? [] : {};
    at = at[k] as Record<string, unknown>;
  });
  at[path.at(-1) as string] = v;
  return root;
}

function deleteAt(value: Record<string, unknown>, path: Path): Record<string, unknown> {
  const root = structuredClone(value);
  let at: Record<string, unknown> | undefined = root;
  for (const k of path.slice(0, -1)) at = at?.[k] as Record<string, unknown> | undefined;
  if (at) delete at[path.at(-1) as string];
  return root;
}
