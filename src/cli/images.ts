/**
 * `cella image …`: images, their versions and builds. Create and update
 * upload the code (a zip, or a folder zipped here), start the build, and
 * follow its log on stderr until it ends: their flags and the upload are in
 * image-config.ts, following the build in image-build.ts.
 */
import { MAX_TAGS, arnName } from '../contract/index.js';
import { allItems, type CellaClient, CellaError, type ImageVersion, type ImageVersionStatus } from '../client/index.js';
import { flag, keyValues, str, strs, table, type Command } from './args.js';
import { failure, followBuild } from './image-build.js';
import { CONFIG_FLAGS, codeUri, configOptions, imageConfig, managedBase, pairs } from './image-config.js';
import { at, printJson, remote, time, untilInterrupted } from './remote.js';

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
    const started = await c.createImage({
      name: at(p, 0),
      ...config,
      baseImageArn: await managedBase(c, config.baseImageArn),
      codeArtifact: { uri },
      ...(Object.keys(tags).length > 0 ? { tags } : {}),
    });
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
  if (!last)
    throw new CellaError('NOT_FOUND', `image ${image} version ${version} has no builds`, {
      details: { resourceId: version, resourceType: 'MicrovmImageVersion' },
    });
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
    else
      io.out(
        table(
          ['NAME', 'ARN', 'CREATED', 'DESCRIPTION'],
          items.map((b) => [arnName(b.imageArn), b.imageArn, time(b.createdAt) ?? '', b.description ?? '']),
        ),
      );
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
