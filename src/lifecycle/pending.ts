/** What a VM is made from (an image version, as src/images resolves it) and the row it starts as. */
import { CellaError } from '../contract/index.js';
import type { ImageConfig, Tx, VmRecord, VmSpec } from '../store/index.js';

/** What the lifecycle needs of an image version to launch and call a VM; src/images provides it. */
export interface RunnableImage {
  name: string;
  arn: string;
  version: string;
  /** The snapshot's folder. */
  dir: string;
  config: ImageConfig;
}

/** A new MicroVM's row as RunMicrovm writes it: PENDING, generation 1, nothing observed or metered yet. */
export function pendingVm(init: {
  id: string;
  image: Pick<RunnableImage, 'name' | 'arn' | 'version'> & { config: Pick<RunnableImage['config'], 'memoryMiB' | 'vcpus'> };
  spec: VmSpec;
  now: number;
}): VmRecord {
  const { id, image, spec, now } = init;
  return {
    id,
    imageName: image.name,
    imageArn: image.arn,
    imageVersion: image.version,
    state: 'PENDING',
    generation: 1,
    stateReason: null,
    spec,
    memoryMiB: image.config.memoryMiB,
    vcpus: image.config.vcpus,
    createdAt: now,
    terminatedAt: null,
    slot: null,
    pid: null,
    pidStartTime: null,
    idleDeadline: null,
    suspendedDeadline: null,
    maxDeadline: now + spec.maximumDurationInSeconds * 1000,
    stateSince: now,
    runningMs: 0,
    bytesWritten: 0,
    bytesRead: 0,
    storageByteMs: 0,
    checkpointBytes: 0,
  };
}

/** Inserts a new VM's row in `tx`, unless live VMs would then hold more than `maxMemoryMiB` together (QUOTA_EXCEEDED). */
export async function admitVm(tx: Tx, rec: VmRecord, maxMemoryMiB: number): Promise<void> {
  const used = (await tx.liveVms()).reduce((sum, v) => sum + v.memoryMiB, 0);
  if (used + rec.memoryMiB > maxMemoryMiB) {
    throw new CellaError('QUOTA_EXCEEDED', `live MicroVMs would hold ${used + rec.memoryMiB} MiB; the quota is ${maxMemoryMiB} MiB`, {
      details: { resourceId: rec.imageName, resourceType: 'MicrovmImage', serviceCode: 'cella', quotaCode: 'microvm-memory-mib' },
    });
  }
  await tx.insertVm(rec);
}
