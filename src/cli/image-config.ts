/**
 * The flags `cella image create` and `update` share, checked and turned
 * into the request before anything is uploaded, and the code they name
 * (a zip, or a folder zipped here) uploaded to the server.
 */
import path from 'node:path';
import { CreateImageRequest as CreateImageSchema, DEFAULT_HOOK_PORT, MAX_ENV_VARS, MEMORY_TIERS_MIB } from '../contract/index.js';
import { zipDirectory } from '../archive/index.js';
import type { CellaClient, HookSettings, UpdateImageRequest } from '../client/index.js';
import { flag, int, str, strs, UsageError, type Io, type Options, type Values } from './args.js';
import { mib } from './remote.js';

const DEFAULT_BASE = 'busybox';
const RUNTIME_HOOKS = ['run', 'resume', 'suspend', 'terminate'] as const;
const IMAGE_HOOKS = ['ready', 'validate'] as const;
/** The schema's rule for variable names, checked here so a bad --env fails before anything is uploaded. */
const ENV_NAME = new RegExp(Object.keys(CreateImageSchema.properties.environmentVariables.patternProperties)[0] as string);

type MemoryTier = (typeof MEMORY_TIERS_MIB)[number];
type Source = { kind: 'zip' | 'dir' | 'uri'; value: string };
/** What create and update share: everything but the code's URI, which is known once it is uploaded. */
type Config = Omit<UpdateImageRequest, 'codeArtifact'>;

export const CONFIG_FLAGS = `  --zip FILE               the code: a zip with a Dockerfile at its root
  --dir DIR                the code: a folder with a Dockerfile, zipped here
  --uri URI                the code: s3://BUCKET/KEY.zip, or file:///PATH.zip on the server's host
                           (exactly one of --zip, --dir, --uri)
  --base NAME|ARN          the managed base image (default ${DEFAULT_BASE}; \`cella image bases\` lists them)
  --memory MIB             ${MEMORY_TIERS_MIB.join(', ')} (default 2048)
  --env K=V                an environment variable baked into the snapshot (repeatable)
  --hooks-port N           the port the app serves its hooks on (default ${DEFAULT_HOOK_PORT}, the contract's convention)
  --ready                  enable the ready hook: the snapshot is taken once the app answers it
  --ready-timeout S        with --ready: how long to wait for it, 1 to 3600
  --validate               enable the validate hook, called on a restored snapshot before it is used
  --run-hook, --resume-hook, --suspend-hook, --terminate-hook
                           enable that runtime hook (they need --ready)
  --description TEXT       a description of the version
  --client-token T         idempotency token: the same token and request start one build
  --no-wait                return once the build is queued instead of following it
`;

export const configOptions: Options = {
  zip: { type: 'string' },
  dir: { type: 'string' },
  uri: { type: 'string' },
  base: { type: 'string' },
  memory: { type: 'string' },
  env: { type: 'string', multiple: true },
  'hooks-port': { type: 'string' },
  ready: { type: 'boolean' },
  'ready-timeout': { type: 'string' },
  validate: { type: 'boolean' },
  ...Object.fromEntries(RUNTIME_HOOKS.map((h) => [`${h}-hook`, { type: 'boolean' as const }])),
  description: { type: 'string' },
  'client-token': { type: 'string' },
  'no-wait': { type: 'boolean' },
};

/** Checks every flag before anything is uploaded. */
export function imageConfig(v: Values): { source: Source; config: Config } {
  const code = source(v);
  const base = str(v, 'base') ?? DEFAULT_BASE;
  const memory = memoryTier(int(v, 'memory', 1));
  const env = pairs(strs(v, 'env'), '--env', MAX_ENV_VARS);
  for (const k of Object.keys(env)) {
    if (!ENV_NAME.test(k)) throw new UsageError(`--env ${k}: a variable name is letters, digits and _, not starting with a digit`);
  }
  const hookSettings = hooks(v);
  const description = str(v, 'description');
  const token = str(v, 'client-token');
  return {
    source: code,
    config: {
      // A name until sent: its ARN holds the server's region (managedBase).
      baseImageArn: base,
      ...(memory !== undefined ? { resources: [{ minimumMemoryInMiB: memory }] } : {}),
      ...(Object.keys(env).length > 0 ? { environmentVariables: env } : {}),
      ...(hookSettings ? { hooks: hookSettings } : {}),
      ...(description !== undefined ? { description } : {}),
      ...(token !== undefined ? { clientToken: token } : {}),
    },
  };
}

/** --base as given: an ARN as is, a name as the server's managed image ARN. */
export async function managedBase(c: CellaClient, base: string): Promise<string> {
  return base.startsWith('arn:') ? base : (await c.arns()).managedImage(base);
}

function source(v: Values): Source {
  const given = (['zip', 'dir', 'uri'] as const).filter((k) => str(v, k) !== undefined);
  if (given.length === 0) throw new UsageError('missing the code: --zip FILE, --dir DIR or --uri URI');
  if (given.length > 1) throw new UsageError(`--${given.join(' and --')} exclude each other: give one`);
  const kind = given[0] as Source['kind'];
  const value = str(v, kind) as string;
  if (kind === 'uri' && !/^(s3|file):\/\//.test(value)) throw new UsageError(`--uri takes s3://BUCKET/KEY.zip or file:///PATH.zip, not "${value}"`);
  return { kind, value };
}

function memoryTier(n: number | undefined): MemoryTier | undefined {
  if (n === undefined) return undefined;
  const tier = MEMORY_TIERS_MIB.find((t) => t === n);
  if (tier === undefined) throw new UsageError(`--memory must be one of ${MEMORY_TIERS_MIB.join(', ')}, not ${n}`);
  return tier;
}

/** K=V flags; the value may hold "=". */
export function pairs(list: string[], name: string, max: number): Record<string, string> {
  if (list.length > max) throw new UsageError(`at most ${max} ${name}`);
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`${name} takes K=V, not "${kv}"`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

function hooks(v: Values): HookSettings | undefined {
  const runtime = RUNTIME_HOOKS.filter((h) => flag(v, `${h}-hook`));
  const image = IMAGE_HOOKS.filter((h) => flag(v, h));
  const port = int(v, 'hooks-port', 1, 65535);
  const readyTimeout = int(v, 'ready-timeout', 1, 3600);
  if (readyTimeout !== undefined && !flag(v, 'ready')) throw new UsageError('--ready-timeout needs --ready');
  if (runtime.length === 0 && image.length === 0) {
    if (port !== undefined) throw new UsageError('--hooks-port needs a hook: --ready, --validate or a --…-hook flag');
    return undefined;
  }
  const microvmHooks: NonNullable<HookSettings['microvmHooks']> = {};
  for (const h of runtime) microvmHooks[h] = 'ENABLED';
  const microvmImageHooks: NonNullable<HookSettings['microvmImageHooks']> = {};
  for (const h of image) microvmImageHooks[h] = 'ENABLED';
  if (readyTimeout !== undefined) microvmImageHooks.readyTimeoutInSeconds = readyTimeout;
  return {
    port: port ?? DEFAULT_HOOK_PORT,
    ...(runtime.length > 0 ? { microvmHooks } : {}),
    ...(image.length > 0 ? { microvmImageHooks } : {}),
  };
}

/** The codeArtifact URI: uploaded from the zip or the zipped folder, or the given one. */
export async function codeUri(c: CellaClient, s: Source, io: Io, json: boolean): Promise<string> {
  if (s.kind === 'uri') return s.value;
  const file = path.resolve(s.value);
  const say = (text: string): void => {
    if (!json) io.err(text);
  };
  say(s.kind === 'dir' ? `zipping ${file} and uploading it... ` : `uploading ${file}... `);
  const up = await c.uploadCodeArtifact(s.kind === 'dir' ? await zipDirectory(file) : file);
  say(`${mib(up.sizeInBytes)}, sha256 ${up.sha256.slice(0, 12)}\n`);
  return up.uri;
}
