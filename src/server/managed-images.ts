import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Arns, UpdateImageRequest } from '../contract/index.js';
import type { Engine } from '../engine/index.js';
import type { Images, ManagedImage, StartedVersion } from '../images/index.js';
import type { RunnableImage } from '../lifecycle/index.js';
import type { Store } from '../store/index.js';

/** Called once a managed image has a successful build (see managedPrewarm). */
export type ImageReady = (name: string) => void;

/** What a version cellad builds of a managed image says of itself: its template's revision. */
export const managedDescription = (revision: string): string => `${MANAGED_MARK}${revision}`;
const MANAGED_MARK = 'made by cellad from its template, revision ';

/**
 * An image cellad makes itself (the demo app, E2B's templates) from its
 * Dockerfile on a managed base, built like any user image at the first
 * start; and again at a later start if no build of it ever succeeded (one
 * cut short by a failed start, say), or if its template or its base changed
 * (a new cellad, a setup that made the base again): a new version then,
 * while the last one serves until it is built.
 * A version someone else made (another description) is left alone. `ready`
 * hears of the image once it has a successful build: at once when it had
 * one already, and again when a build ends well.
 */
export async function ensureManagedImage(
  image: ManagedImage,
  store: Store,
  images: Images,
  arns: Arns,
  dataDir: string,
  log: (line: string) => void,
  ready?: ImageReady,
): Promise<void> {
  const name = image.name;
  // A base setup made again (new packages, say) changes the template's tree as much as its own Dockerfile does.
  const base = images.managed().find((b) => b.name === image.base);
  const revision = createHash('sha256')
    .update(JSON.stringify([image.revision, base?.inputsSha256, base?.createdAt]))
    .digest('hex')
    .slice(0, 16);
  const request = async (): Promise<UpdateImageRequest> => ({
    baseImageArn: arns.managedImage(image.base),
    codeArtifact: { uri: `file://${await image.zip(path.join(dataDir, 'artifacts', `${name}.zip`))}` },
    resources: [{ minimumMemoryInMiB: image.memoryMiB }],
    description: managedDescription(revision),
  });
  let started: StartedVersion;
  if (await store.getImage(name)) {
    const pending = (await store.listBuilds(name)).some((b) => b.state === 'PENDING' || b.state === 'IN_PROGRESS');
    if (pending) return;
    const last = await images.latest(name, 'SUCCESSFUL');
    if (last) {
      ready?.(name);
      // Versions built before templates had revisions carry no description.
      const said = last.request.description;
      if (said === managedDescription(revision) || (said !== undefined && !said.startsWith(MANAGED_MARK))) return;
      try {
        started = await images.update(name, await request());
      } catch (err) {
        // The image is being deleted, say: the version it has serves on.
        return log(`image "${name}": its template changed, but a new version could not be started: ${(err as Error).message}`);
      }
      log(`image "${name}": its template changed: building version ${started.version.version} (build ${started.build.buildId})`);
    } else {
      log(`image "${name}" has no successful build: building it again`);
      await images.delete(name, async () => false);
      started = await images.create({ name, ...(await request()) });
      log(`building the image "${name}" (build ${started.build.buildId})`);
    }
  } else {
    started = await images.create({ name, ...(await request()) });
    log(`building the image "${name}" (first start; build ${started.build.buildId})`);
  }
  void images
    .enqueue(started)
    .then(async () => {
      const v = await images.latest(name, 'SUCCESSFUL');
      const built = v?.version === started.version.version;
      log(built ? `image "${name}" is ready` : `image "${name}" failed: see cella image logs ${name}`);
      if (built) ready?.(name);
    })
    .catch((err: Error) => log(`image "${name}": ${err.message}`));
}

/**
 * Fills the warm pools of managed images as they become ready, one image at
 * a time, in the background: the engine otherwise fills an image's pool only
 * after its first launch, so the first E2B sandbox of a start would pay a
 * cold restore. `prepare` readies an image's pool first (E2B's warm-up of
 * its clones). The engine's warmClones bounds each pool (0: nothing
 * happens); a failure only logs.
 */
export function managedPrewarm(
  engine: Pick<Engine, 'prewarm'>,
  images: Pick<Images, 'runnable'>,
  log: (line: string) => void,
  prepare: (image: RunnableImage) => void = () => {},
): ImageReady {
  let queue = Promise.resolve();
  return (name) => {
    queue = queue.then(async () => {
      try {
        const image = await images.runnable(name);
        prepare(image);
        await engine.prewarm(image.dir);
      } catch (err) {
        log(`warm pool for image "${name}": ${(err as Error).message}`);
      }
    });
  };
}
