/**
 * `cella image …`: images, their versions and builds. Create and update
 * upload the code (a zip, or a folder zipped here), start the build, and
 * follow its log on stderr until it ends.
 */
import path from 'node:path';
import { CreateImageRequest as CreateImageSchema, DEFAULT_HOOK_PORT, MAX_ENV_VARS, MAX_TAGS, MEMORY_TIERS_MIB, arnName } from '../contract/index.js';
import { zipDirectory } from '../archive/index.js';
import {
  allItems,
  CellaClient,
  CellaError,
  type HookSettings,
  type ImageBuild,
  type ImageVersion,
  type ImageVersionStarted,
  type ImageVersionStatus,
  type UpdateImageRequest,
} from '../client/index.js';
import { flag, int, keyValues, str, strs, table, UsageError, type Command, type Io, type Options, type Values } from './args.js';
import { at, mib, printJson, remote, time, untilInterrupted } from './remote.js';

const DEFAULT_BASE = 'busybox';
const RUNTIME_HOOKS = ['run', 'resume', 'suspend', 'terminate'] as const;
const IMAGE_HOOKS = ['ready', 'validate'] as const;
/** The schema's rule for variable names, checked here so a bad --env fails before anything is uploaded. */
const ENV_NAME = new RegExp(Object.keys(CreateImageSchema.properties.environmentVariables.patternProperties)[0] as string);

type MemoryTier = (typeof MEMORY_TIERS_MIB)[number];
type Source = { kind: 'zip' | 'dir' | 'uri'; value: string };
/** What create and update share: everything but the code's URI, which is known once it is uploaded. */
type Config = Omit<UpdateImageRequest, 'codeArtifact'>;

const CONFIG_FLAGS = `  --zip FILE               the code: a zip with a Dockerfile at its root
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

const configOptions: Options = {
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
function imageConfig(v: Values): { source: Source; config: Config } {
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
async function managedBase(c: CellaClient, base: string): Promise<string> {
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
function pairs(list: string[], name: string, max: number): Record<string, string> {
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
async function codeUri(c: CellaClient, s: Source, io: Io, json: boolean): Promise<string> {
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

/** Unless --no-wait: the build log on stderr as it happens, then the outcome; exit 1 if the build FAILED. */
async function followBuild(c: CellaClient, started: ImageVersionStarted, io: Io, json: boolean, wait: boolean): Promise<number> {
  const { name, imageVersion: version, buildId } = started;
  if (!wait) {
    if (json) printJson(io, started);
    else {
      io.out(keyValues([['image', name], ['version', version], ['build', buildId], ['state', started.state]]));
      io.err(`follow the build with: cella image logs ${name} --version ${version} -f\n`);
    }
    return 0;
  }
  if (!json) {
    io.err(`building ${name} version ${version} (build ${buildId})\n`);
    // Chunks may split a character; the decoder keeps the partial one for the next.
    const text = new TextDecoder();
    await c.buildLog(name, version, buildId, { follow: true, onChunk: (chunk) => io.err(text.decode(chunk, { stream: true })) });
  }
  // The log ends with the build; the wait covers the moment between the two.
  const build = await c.waitForBuild(name, version, buildId, { intervalMs: 1000 });
  if (json) printJson(io, build);
  else io.out(describeBuild(name, build));
  if (build.buildState === 'SUCCESSFUL') return 0;
  if (!json) io.err(`\ncella: the build of ${name} version ${version} FAILED: ${failure(build)}\n`);
  return 1;
}

const failure = (b: ImageBuild): string => [b.stateReason ?? 'no reason given', b.stateReasonMessage].filter(Boolean).join(': ');

function describeBuild(name: string, b: ImageBuild): string {
  const s = b.snapshotBuild;
  const sizes = s
    ? [
        s.memorySnapshotSizeInBytes !== undefined ? `memory ${mib(s.memorySnapshotSizeInBytes)}` : '',
        s.diskSnapshotSizeInBytes !== undefined ? `disk ${mib(s.diskSnapshotSizeInBytes)}` : '',
        s.codeInstallSizeInBytes !== undefined ? `code ${mib(s.codeInstallSizeInBytes)}` : '',
      ].filter(Boolean)
    : [];
  return keyValues([
    ['image', name],
    ['version', b.imageVersion],
    ['build', b.buildId],
    ['state', b.buildState],
    ['reason', b.buildState === 'FAILED' ? failure(b) : undefined],
    ['snapshot', sizes.length > 0 ? sizes.join(', ') : undefined],
  ]);
}

const create = remote(
  {
    usage: `Usage: cella image create NAME (--zip FILE | --dir DIR | --uri URI) [options]

Creates an image: builds version 1.0 from the Dockerfile in the code, boots
it and captures its snapshot, following the build log on stderr. Exits 1 if
the build fails. With --json, prints the finished build (with --no-wait, the
create response).
`,
    flags: `${CONFIG_FLAGS}  --tag K=V                a tag on the image (repeatable)\n`,
    options: { ...configOptions, tag: { type: 'string', multiple: true } },
    args: { min: 1, max: 1, names: 'NAME' },
  },
  async (p, c, io, json) => {
    const { source: s, config } = imageConfig(p.values);
    const tags = pairs(strs(p.values, 'tag'), '--tag', MAX_TAGS);
    const uri = await codeUri(c, s, io, json);
    const started = await c.createImage({ name: at(p, 0), ...config, baseImageArn: await managedBase(c, config.baseImageArn), codeArtifact: { uri }, ...(Object.keys(tags).length > 0 ? { tags } : {}) });
    return followBuild(c, started, io, json, !flag(p.values, 'no-wait'));
  },
);

const update = remote(
  {
    usage: `Usage: cella image update NAME (--zip FILE | --dir DIR | --uri URI) [options]

Builds a new version of an image from a whole new request (settings left out
take their defaults, not the previous version's), following the build log on
stderr. Exits 1 if the build fails. The new version becomes ACTIVE.
`,
    flags: CONFIG_FLAGS,
    options: configOptions,
    args: { min: 1, max: 1, names: 'NAME' },
  },
  async (p, c, io, json) => {
    const { source: s, config } = imageConfig(p.values);
    const uri = await codeUri(c, s, io, json);
    const started = await c.updateImage(at(p, 0), { ...config, baseImageArn: await managedBase(c, config.baseImageArn), codeArtifact: { uri } });
    return followBuild(c, started, io, json, !flag(p.values, 'no-wait'));
  },
);

/** Every item of a list operation, all pages. */
async function listAll<T>(page: (token: { nextToken?: string }) => Promise<{ items: T[]; nextToken?: string }>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of allItems((nextToken) => page(nextToken ? { nextToken } : {}))) out.push(item);
  return out;
}

/** The newest version (versions list oldest first). */
async function latestVersion(c: CellaClient, image: string): Promise<string> {
  const last = (await listAll((t) => c.listImageVersions(image, t))).at(-1);
  if (!last) throw new CellaError('NOT_FOUND', `image ${image} has no versions`, { details: { resourceId: image, resourceType: 'MicrovmImage' } });
  return last.imageVersion;
}

async function latestBuild(c: CellaClient, image: string, version: string): Promise<string> {
  const last = (await listAll((t) => c.listImageBuilds(image, version, t))).at(-1);
  if (!last) throw new CellaError('NOT_FOUND', `image ${image} version ${version} has no builds`, { details: { resourceId: version, resourceType: 'MicrovmImageVersion' } });
  return last.buildId;
}

function versionsTable(versions: ImageVersion[]): string {
  return table(
    ['VERSION', 'STATE', 'STATUS', 'CREATED', 'REASON'],
    versions.map((v) => [v.imageVersion, v.state, v.status, time(v.createdAt) ?? '', v.stateReason ?? '']),
  );
}

const imageLs = remote(
  {
    usage: 'Usage: cella image ls [options]\n\nLists images.\n',
    flags: '  --name-filter S          only those whose name contains S\n',
    options: { 'name-filter': { type: 'string' } },
    args: { min: 0, max: 0, names: '' },
  },
  async (p, c, io, json) => {
    const nameFilter = str(p.values, 'name-filter');
    const items = await listAll((t) => c.listImages({ ...t, ...(nameFilter !== undefined ? { nameFilter } : {}) }));
    if (json) printJson(io, { items });
    else {
      const rows = items.map((i) => [i.name, i.state, i.latestActiveImageVersion ?? '', i.latestFailedImageVersion ?? '', time(i.createdAt) ?? '']);
      io.out(table(['NAME', 'STATE', 'ACTIVE', 'FAILED', 'CREATED'], rows));
    }
    return 0;
  },
);

const imageGet = remote(
  {
    usage: 'Usage: cella image get NAME\n\nDescribes an image (by name or ARN) and its versions. --json prints {image, versions}.\n',
    args: { min: 1, max: 1, names: 'NAME' },
  },
  async (p, c, io, json) => {
    const [image, versions] = await Promise.all([c.getImage(at(p, 0)), listAll((t) => c.listImageVersions(at(p, 0), t))]);
    if (json) {
      printJson(io, { image, versions });
      return 0;
    }
    const tags = Object.entries(image.tags ?? {}).map(([k, val]) => `${k}=${val}`);
    io.out(
      keyValues([
        ['name', image.name],
        ['arn', image.imageArn],
        ['state', image.state],
        ['latest active', image.latestActiveImageVersion],
        ['latest failed', image.latestFailedImageVersion],
        ['created', time(image.createdAt)],
        ['updated', time(image.updatedAt)],
        ['tags', tags.length > 0 ? tags.join(', ') : undefined],
      ]),
    );
    io.out(`\n${versionsTable(versions)}`);
    return 0;
  },
);

const imageVersions = remote(
  { usage: "Usage: cella image versions NAME\n\nLists an image's versions, oldest first.\n", args: { min: 1, max: 1, names: 'NAME' } },
  async (p, c, io, json) => {
    const items = await listAll((t) => c.listImageVersions(at(p, 0), t));
    if (json) printJson(io, { items });
    else io.out(versionsTable(items));
    return 0;
  },
);

function setStatus(status: ImageVersionStatus, usage: string): Command {
  return remote({ usage, args: { min: 2, max: 2, names: 'NAME and VERSION' } }, async (p, c, io, json) => {
    const v = await c.updateImageVersion(at(p, 0), at(p, 1), status);
    if (json) printJson(io, v);
    else io.out(`${arnName(v.imageArn)} ${v.imageVersion} ${v.status}\n`);
    return 0;
  });
}

const activate = setStatus(
  'ACTIVE',
  'Usage: cella image activate NAME VERSION\n\nMarks a version ACTIVE: `cella run` without --version takes the latest SUCCESSFUL, ACTIVE one.\n',
);
const deactivate = setStatus(
  'INACTIVE',
  'Usage: cella image deactivate NAME VERSION\n\nMarks a version INACTIVE: no new MicroVM runs it, even with --version. Running ones go on.\n',
);

const imageRm = remote(
  {
    usage: `Usage: cella image rm NAME [--version V]

Deletes an image and all its versions, or one version (not the last one).
Refused while live MicroVMs use it. Deleting what is already gone succeeds.
`,
    flags: '  --version V              delete only this version\n',
    options: { version: { type: 'string' } },
    args: { min: 1, max: 1, names: 'NAME' },
  },
  async (p, c, io, json) => {
    const name = at(p, 0);
    const version = str(p.values, 'version');
    const res = version === undefined ? await c.deleteImage(name) : await c.deleteImageVersion(name, version);
    if (json) printJson(io, res);
    else io.out(`image ${name}${version === undefined ? '' : ` version ${version}`}: ${res.state}\n`);
    return 0;
  },
);

const builds = remote(
  {
    usage: "Usage: cella image builds NAME [VERSION]\n\nLists a version's builds (default: the image's latest version).\n",
    args: { min: 1, max: 2, names: 'NAME' },
  },
  async (p, c, io, json) => {
    const name = at(p, 0);
    const version = p.positionals[1] ?? (await latestVersion(c, name));
    const items = await listAll((t) => c.listImageBuilds(name, version, t));
    if (json) printJson(io, { items });
    else {
      const rows = items.map((b) => [b.buildId, version, b.buildState, b.architecture, time(b.createdAt) ?? '', b.buildState === 'FAILED' ? failure(b) : '']);
      io.out(table(['BUILD', 'VERSION', 'STATE', 'ARCH', 'CREATED', 'REASON'], rows));
    }
    return 0;
  },
);

const imageLogs = remote(
  {
    usage: "Usage: cella image logs NAME [options]\n\nPrints a build's log: the Dockerfile steps and their output, the app's start, the hooks.\n",
    flags: `  --version V              the version (default: the latest)
  --build ID               the build (default: the version's latest)
  -f, --follow             keep streaming until the build ends or Ctrl-C
`,
    options: { version: { type: 'string' }, build: { type: 'string' }, follow: { type: 'boolean', short: 'f' } },
    args: { min: 1, max: 1, names: 'NAME' },
    noJson: true,
  },
  async (p, c, io) => {
    const name = at(p, 0);
    const version = str(p.values, 'version') ?? (await latestVersion(c, name));
    const buildId = str(p.values, 'build') ?? (await latestBuild(c, name, version));
    await untilInterrupted(async (signal) => {
      await c.buildLog(name, version, buildId, { follow: flag(p.values, 'follow'), signal, onChunk: (chunk) => io.out(chunk) });
    });
    return 0;
  },
);

const bases = remote(
  { usage: 'Usage: cella image bases\n\nLists the managed base images, for --base and for FROM in a Dockerfile.\n', args: { min: 0, max: 0, names: '' } },
  async (_p, c, io, json) => {
    const items = await listAll((t) => c.listManagedImages(t));
    if (json) printJson(io, { items });
    else io.out(table(['NAME', 'ARN', 'CREATED', 'DESCRIPTION'], items.map((b) => [arnName(b.imageArn), b.imageArn, time(b.createdAt) ?? '', b.description ?? ''])));
    return 0;
  },
);

export const imageCommands: Record<string, Command> = {
  create,
  update,
  ls: imageLs,
  get: imageGet,
  versions: imageVersions,
  activate,
  deactivate,
  rm: imageRm,
  builds,
  logs: imageLogs,
  bases,
};

export const IMAGE_USAGE = `Usage: cella image <subcommand> [options]

Subcommands:
  create NAME (--zip FILE | --dir DIR | --uri URI) [options]
                           build an image from a Dockerfile, following the build
  update NAME (--zip FILE | --dir DIR | --uri URI) [options]
                           build a new version of an image
  ls [--name-filter S]     list images
  get NAME                 describe an image and its versions
  versions NAME            list an image's versions
  activate NAME VERSION    mark a version ACTIVE
  deactivate NAME VERSION  mark a version INACTIVE
  rm NAME [--version V]    delete an image, or one of its versions
  builds NAME [VERSION]    list a version's builds (default: the latest version)
  logs NAME [--version V] [--build ID] [-f]
                           print or follow a build's log (default: the latest)
  bases                    list the managed base images

Run \`cella image <subcommand> --help\` for its options.
`;
