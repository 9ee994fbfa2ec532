/**
 * The image operations: images, their versions and builds, the managed
 * bases, build logs and code artifact uploads. Each reads its command and
 * calls Images; a create or update with a clientToken makes its version once.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { CellaError, checkTags, type ImageVersionStarted } from '../contract/index.js';
import { MANAGED_VERSION, type StartedVersion } from '../images/index.js';
import type { ApiContext, Operations } from './command.js';
import { keysetPage, offsetPage } from './cursor.js';
import { once } from './idempotency.js';
import { buildView, imageSummary, imageView, managedImageView, managedVersionView, startedView, versionView } from './views.js';

type ImageOperation =
  | 'CreateMicrovmImage'
  | 'UpdateMicrovmImage'
  | 'GetMicrovmImage'
  | 'ListMicrovmImages'
  | 'DeleteMicrovmImage'
  | 'ListMicrovmImageVersions'
  | 'GetMicrovmImageVersion'
  | 'UpdateMicrovmImageVersion'
  | 'DeleteMicrovmImageVersion'
  | 'ListMicrovmImageBuilds'
  | 'GetMicrovmImageBuild'
  | 'GetMicrovmImageBuildLog'
  | 'ListManagedMicrovmImages'
  | 'ListManagedMicrovmImageVersions'
  | 'UploadCodeArtifact';

export function imageOperations(ctx: ApiContext): Operations<ImageOperation> {
  const chipset = ctx.info.accelerator.toUpperCase();

  const started = async (s: StartedVersion): Promise<ImageVersionStarted> => startedView(s, await ctx.images.latestVersions(s.image.name));

  /** A replayed create/update answers what the first one did, even if the image is gone since. */
  const replayBuild = async (buildId: string): Promise<StartedVersion> => {
    const build = await ctx.store.getBuild(buildId);
    const version = build && (await ctx.store.getVersion(build.imageName, build.version));
    const image = build && (await ctx.store.getImage(build.imageName));
    if (!build || !version || !image)
      throw new CellaError('NOT_FOUND', `the image this clientToken created no longer exists`, { details: { resourceType: 'MicrovmImage' } });
    return { image, version, build };
  };

  return {
    CreateMicrovmImage: async ({ body: b }) => {
      if (b.tags) checkTags(b.tags, 'tags');
      const r = await once(
        ctx.store,
        'CreateMicrovmImage',
        b,
        () => ctx.capacity.require('CreateMicrovmImage'),
        (tx) => ctx.images.create(b, tx),
        (s) => s.build.buildId,
      );
      if ('replay' in r) return { json: await started(await replayBuild(r.replay)) };
      void ctx.images.enqueue(r.made);
      return { json: await started(r.made) };
    },
    UpdateMicrovmImage: async ({ body: b, params }) => {
      const id = params.imageIdentifier;
      const scope = `UpdateMicrovmImage:${ctx.arns.imageName(id)}`;
      const r = await once(
        ctx.store,
        scope,
        b,
        () => ctx.capacity.require('UpdateMicrovmImage'),
        (tx) => ctx.images.update(id, b, tx),
        (s) => s.build.buildId,
      );
      if ('replay' in r) return { json: await started(await replayBuild(r.replay)) };
      void ctx.images.enqueue(r.made);
      return { json: await started(r.made) };
    },
    GetMicrovmImage: async ({ params }) => {
      const img = await ctx.images.require(params.imageIdentifier);
      return { json: imageView(img, await ctx.images.latestVersions(img.name)) };
    },
    ListMicrovmImages: async ({ op, query: q, after }) => {
      const limit = q.maxResults ?? 50;
      const fetched = await ctx.store.listImages({ limit: limit + 1, ...(after ? { after: after.n } : {}) });
      const page = keysetPage(op, limit, fetched, (last) => ({ n: last.name }));
      // The contract applies nameFilter after paging: a page may come back short or empty with a nextToken.
      const wanted = page.items.filter((i) => !q.nameFilter || i.name.includes(q.nameFilter));
      return { json: { ...page, items: await Promise.all(wanted.map(async (i) => imageSummary(i, await ctx.images.latestVersions(i.name)))) } };
    },
    DeleteMicrovmImage: async ({ params }) => {
      const id = params.imageIdentifier;
      const r = await ctx.images.delete(id, async (tx, name) => (await tx.liveVms()).some((v) => v.imageName === name));
      return { json: { imageIdentifier: id, state: r.state } };
    },
    ListMicrovmImageVersions: async ({ op, params, query, after }) => {
      const img = await ctx.images.require(params.imageIdentifier);
      return { json: offsetPage(op, after, query.maxResults ?? 50, await ctx.store.listVersions(img.name), (v) => versionView(img, v)) };
    },
    GetMicrovmImageVersion: async ({ params }) => {
      const img = await ctx.images.require(params.imageIdentifier);
      return { json: versionView(img, await ctx.images.requireVersion(img.name, params.imageVersion)) };
    },
    UpdateMicrovmImageVersion: async ({ params, body }) => {
      const img = await ctx.images.require(params.imageIdentifier);
      return { json: versionView(img, await ctx.images.setStatus(img.name, params.imageVersion, body.status)) };
    },
    DeleteMicrovmImageVersion: async ({ params: { imageIdentifier, imageVersion } }) => {
      const r = await ctx.images.deleteVersion(imageIdentifier, imageVersion, async (name, ver) =>
        (await ctx.store.liveVms()).some((v) => v.imageName === name && v.imageVersion === ver),
      );
      return { json: { imageIdentifier, imageVersion, state: r.state } };
    },
    ListMicrovmImageBuilds: async ({ op, params, query: q, after }) => {
      const v = await ctx.images.requireVersion(params.imageIdentifier, params.imageVersion);
      const img = await ctx.images.require(v.imageName);
      const all = (await ctx.store.listBuilds(v.imageName, v.version)).map((b) => buildView(img, b, chipset));
      const wanted = all.filter(
        (b) =>
          (!q.architecture || b.architecture === q.architecture) &&
          (!q.chipset || b.chipset === q.chipset) &&
          (!q.chipsetGeneration || b.chipsetGeneration === q.chipsetGeneration),
      );
      return { json: offsetPage(op, after, q.maxResults ?? 50, wanted, (b) => b) };
    },
    GetMicrovmImageBuild: async ({ params }) => {
      const b = await ctx.images.requireBuild(params.imageIdentifier, params.imageVersion, params.buildId);
      const img = await ctx.images.require(b.imageName);
      return { json: { ...buildView(img, b, chipset), ...(b.snapshotBuild ? { snapshotBuild: b.snapshotBuild } : {}) } };
    },
    GetMicrovmImageBuildLog: async ({ params, query }) => {
      const b = await ctx.images.requireBuild(params.imageIdentifier, params.imageVersion, params.buildId);
      const file = ctx.images.buildLog(b.buildId);
      const follow = query.follow ?? false;
      return { text: (write, signal) => tailFile(file, write, { signal, until: () => !follow || !ctx.images.isBuilding(b.buildId) }) };
    },
    ListManagedMicrovmImages: async ({ op, query, after }) => ({
      json: offsetPage(op, after, query.maxResults ?? 50, ctx.images.managed(), (b) => managedImageView(ctx.arns.managedImage(b.name), b)),
    }),
    ListManagedMicrovmImageVersions: async ({ op, params, query, after }) => {
      const id = params.imageIdentifier;
      const name = ctx.arns.managedImageName(id) ?? id;
      const base = ctx.images.managed().find((b) => b.name === name);
      if (!base) throw new CellaError('NOT_FOUND', `managed image ${id} not found`, { details: { resourceId: id, resourceType: 'MicrovmImage' } });
      return { json: offsetPage(op, after, query.maxResults ?? 50, [base], (b) => managedVersionView(ctx.arns.managedImage(b.name), MANAGED_VERSION, b)) };
    },
    UploadCodeArtifact: async ({ upload }) => ({ json: upload }),
  };
}

/** Writes `file` from the start, then what is appended to it, until `until()` holds (checked after each read). */
async function tailFile(file: string, write: (chunk: Buffer) => void, opts: { signal: AbortSignal; until: () => boolean }): Promise<void> {
  let offset = 0;
  for (;;) {
    const done = opts.until();
    if (existsSync(file)) {
      const buf = await readFile(file);
      if (buf.length > offset) write(buf.subarray(offset));
      offset = Math.max(offset, buf.length);
    }
    if (done || opts.signal.aborted) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}
