import path from 'node:path';
import type { Arns } from '../contract/index.js';
import type { Images, ManagedImage } from '../images/index.js';
import type { Store } from '../store/index.js';

/**
 * An image cellad makes itself (the demo app, E2B's templates) from its
 * Dockerfile on a managed base, built like any user image at the first
 * start; and again at a later start if no build of it ever succeeded (one
 * cut short by a failed start, say).
 */
export async function ensureManagedImage(
  image: ManagedImage,
  store: Store,
  images: Images,
  arns: Arns,
  dataDir: string,
  log: (line: string) => void,
): Promise<void> {
  const name = image.name;
  if (await store.getImage(name)) {
    const pending = (await store.listBuilds(name)).some((b) => b.state === 'PENDING' || b.state === 'IN_PROGRESS');
    if (pending || (await images.latest(name, 'SUCCESSFUL'))) return;
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
    })
    .catch((err: Error) => log(`image "${name}": ${err.message}`));
}
