import path from 'node:path';
import type { Arns } from '../contract/index.js';
import type { Engine } from '../engine/index.js';
import type { Images, ManagedImage } from '../images/index.js';
import type { Store } from '../store/index.js';

/** Called once a managed image has a successful build (see managedPrewarm). */
export type ImageReady = (name: string) => void;

/**
 * An image cellad makes itself (the demo app, E2B's templates) from its
 * Dockerfile on a managed base, built like any user image at the first
 * start; and again at a later start if no build of it ever succeeded (one
 * cut short by a failed start, say). `ready` hears of it once it has a
 * successful build: at once when it had one already, else when the build ends.
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
  if (await store.getImage(name)) {
    const pending = (await store.listBuilds(name)).some((b) => b.state === 'PENDING' || b.state === 'IN_PROGRESS');
    if (pending) return;
    if (await images.latest(name, 'SUCCESSFUL')) return void ready?.(name);
    log(`image "${name}" has no successful build: building it again`);
    await images.delete(name, async () => false);
  }
  const zip = await image.zip(path.join(dataDir, 'artifacts', `${name}.zip`));
  const started = await images.create({
    name,
    baseImageArn: arns.managedImage(image.base),
    codeArtifact: { uri: `file://${zip}` },
    resources: [{ minimumMemoryInMiB: image.memoryMiB }],
  });
  log(`building the image "${name}" (first start; build ${started.build.buildId})`);
  void images
    .enqueue(started)
    .then(async () => {
      const v = await images.latest(name, 'SUCCESSFUL');
      log(v ? `image "${name}" is ready` : `image "${name}" failed: see cella image logs ${name}`);
      if (v) ready?.(name);
    })
    .catch((err: Error) => log(`image "${name}": ${err.message}`));
}

/**
 * Fills the warm pools of managed images as they become ready, one image at
 * a time, in the background: the engine otherwise fills an image's pool only
 * after its first launch, so the first E2B sandbox of a start would pay a
 * cold restore. The engine's warmClones bounds each pool (0: nothing
 * happens); a failure only logs.
 */
export function managedPrewarm(engine: Pick<Engine, 'prewarm'>, images: Pick<Images, 'runnable'>, log: (line: string) => void): ImageReady {
  let queue = Promise.resolve();
  return (name) => {
    queue = queue.then(async () => {
      try {
        await engine.prewarm((await images.runnable(name)).dir);
      } catch (err) {
        log(`warm pool for image "${name}": ${(err as Error).message}`);
      }
    });
  };
}
