/**
 * Images that VMs launch from. Until Dockerfile builds land, an image is
 * registered from a local root filesystem folder plus a start command: the
 * folder becomes an ext4 disk, a template VM boots it and starts the app, and
 * once the app's port accepts, the snapshot is captured. Registration runs in
 * the background; its state and build log say how it went.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, lstatSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { RegisterImageRequest } from '../api/schemas.js';
import { ext4FromDir } from '../disk/index.js';
import type { Engine } from '../engine/index.js';
import { CellaError } from '../errors/index.js';
import { run } from '../host/index.js';
import type { ImageConfig, ImageRecord, Store } from '../store/index.js';

export const IMAGE_VERSION = '1.0';
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function imageArn(name: string): string {
  return `arn:cella:lambda:local:000000000000:microvm-image:${name}`;
}

/** Accepts an image name or its ARN; returns the name. */
export function imageNameOf(identifier: string): string {
  const m = /^arn:[a-z-]+:lambda:[^:]*:[^:]*:microvm-image:([a-zA-Z0-9_-]+)$/.exec(identifier);
  if (m) return m[1] as string;
  if (/^[a-zA-Z0-9_-]{1,64}$/.test(identifier)) return identifier;
  throw new CellaError('INVALID_ARGUMENT', `imageIdentifier "${identifier}" is neither an image name nor an image ARN`);
}

/** The contract's size tiers: vCPUs are GiB / 2, at least one. */
export function vcpusFor(memoryMiB: number): number {
  return Math.max(1, Math.floor(memoryMiB / 2048));
}

export class Images {
  constructor(
    private readonly store: Store,
    private readonly engine: Pick<Engine, 'createSnapshot'>,
    private readonly dataDir: string,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /** Short and fixed-length: the template's unix sockets live below it. */
  private imageRoot(name: string): string {
    return path.join(this.dataDir, 'images', `i-${createHash('sha256').update(name).digest('hex').slice(0, 12)}`);
  }

  buildLog(name: string): string {
    return path.join(this.dataDir, 'logs', 'images', `${name}.log`);
  }

  get(name: string): ImageRecord | undefined {
    return this.store.getImage(name);
  }

  /** Checks the request, records the image as CREATING and builds it in the background. */
  register(req: RegisterImageRequest): { image: ImageRecord; done: Promise<ImageRecord> } {
    if (this.store.getImage(req.name)) {
      throw new CellaError('INVALID_ARGUMENT', `image ${req.name} already exists`, { details: { resourceId: req.name, resourceType: 'MicrovmImage' } });
    }
    const rootfsDir = path.resolve(req.rootfsDir);
    if (!existsSync(rootfsDir) || !statSync(rootfsDir).isDirectory()) {
      throw new CellaError('INVALID_ARGUMENT', `rootfsDir ${rootfsDir} is not a directory`);
    }
    const entry = req.command[0] as string;
    if (entry.startsWith('/')) {
      try {
        lstatSync(path.join(rootfsDir, entry));
      } catch {
        throw new CellaError('INVALID_ARGUMENT', `the command ${entry} does not exist in ${rootfsDir}`);
      }
    }
    const memoryMiB = req.memoryMiB ?? 512;
    const config: ImageConfig = {
      command: req.command,
      environmentVariables: { PATH: DEFAULT_PATH, ...req.environmentVariables },
      workingDirectory: req.workingDirectory ?? '/',
      port: req.port ?? 8080,
      memoryMiB,
      vcpus: vcpusFor(memoryMiB),
      rootfsDir,
      ...(req.hooks ? { hooks: req.hooks } : {}),
    };
    const dir = path.join(this.imageRoot(req.name), 'v1', 'snapshot');
    const image: ImageRecord = {
      name: req.name,
      arn: imageArn(req.name),
      version: IMAGE_VERSION,
      dir,
      state: 'CREATING',
      stateReason: null,
      config,
      createdAt: Date.now(),
    };
    this.store.putImage(image);
    return { image, done: this.build(image) };
  }

  private async build(image: ImageRecord): Promise<ImageRecord> {
    const logFile = this.buildLog(image.name);
    mkdirSync(path.dirname(logFile), { recursive: true });
    rmSync(logFile, { force: true });
    const say = (line: string): void => appendFileSync(logFile, `[cella] ${line}\n`);
    const { config } = image;
    try {
      const versionDir = path.dirname(image.dir);
      rmSync(versionDir, { recursive: true, force: true });
      mkdirSync(versionDir, { recursive: true });
      const rootfs = path.join(versionDir, 'rootfs.ext4');
      const treeMiB = Number((await run('du', ['-sm', '--apparent-size', config.rootfsDir])).split(/\s/)[0]);
      // Room for the tree plus what the app writes at run time; the file is sparse.
      const sizeMiB = Math.max(256, Math.ceil(treeMiB * 1.5) + 256);
      say(`building a ${sizeMiB} MiB ext4 root filesystem from ${config.rootfsDir}`);
      await ext4FromDir(config.rootfsDir, rootfs, sizeMiB);
      say(`booting a template VM (${config.memoryMiB} MiB, ${config.vcpus} vCPU) and starting: ${config.command.join(' ')}`);
      const snap = await this.engine.createSnapshot({
        dir: image.dir,
        rootfs,
        app: { argv: config.command, env: config.environmentVariables, cwd: config.workingDirectory },
        port: config.port,
        memoryMiB: config.memoryMiB,
        vcpus: config.vcpus,
        readyTimeoutMs: 120_000,
        onLog: (_stream, data) => appendFileSync(logFile, data),
      });
      say(`port ${config.port} accepted after ${snap.templateBootMs} ms; snapshot captured in ${snap.captureMs} ms`);
      const done: ImageRecord = {
        ...image,
        state: 'CREATED',
        config: {
          ...config,
          snapshot: {
            memorySnapshotSizeInBytes: snap.memAllocatedBytes,
            diskSnapshotSizeInBytes: snap.diskAllocatedBytes,
            deviceStateSizeInBytes: snap.devstateBytes,
          },
        },
      };
      this.store.putImage(done);
      return done;
    } catch (err) {
      const reason = (err as Error).message;
      say(`FAILED: ${reason}`);
      this.log(`image ${image.name}: ${reason}`);
      const failed: ImageRecord = { ...image, state: 'CREATE_FAILED', stateReason: reason };
      this.store.putImage(failed);
      rmSync(path.dirname(image.dir), { recursive: true, force: true });
      return failed;
    }
  }

  /** Images that were building when the daemon died will never finish: say so. */
  recover(): void {
    for (const img of this.store.listImages()) {
      if (img.state === 'CREATING') this.store.putImage({ ...img, state: 'CREATE_FAILED', stateReason: 'cellad restarted while the image was being created' });
    }
  }

  delete(name: string, inUse: boolean): void {
    const img = this.store.getImage(name);
    if (!img) return;
    if (inUse) throw new CellaError('INVALID_STATE', `image ${name} has live MicroVMs`, { details: { resourceId: name, resourceType: 'MicrovmImage' } });
    if (img.state === 'CREATING') throw new CellaError('INVALID_STATE', `image ${name} is still being created`, { details: { resourceId: name, resourceType: 'MicrovmImage' } });
    this.store.deleteImage(name);
    rmSync(this.imageRoot(name), { recursive: true, force: true });
  }
}
