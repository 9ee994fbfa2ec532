/**
 * One image build, start to end: fetch the code artifact, unpack it safely,
 * parse the Dockerfile, resolve FROM to a root disk, run the file-system
 * steps in a builder VM (each finished step frozen as a cached layer),
 * flatten the result into the version's ext4, boot it, wait for the app
 * (ready hook or port), capture the snapshot, and run the validate hook on a
 * clone of it. Everything the user needs to know goes to the build log.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { extractZip, fetchArtifact, findDockerfile } from '../archive/index.js';
import { allocatedBytes } from '../disk/index.js';
import { parseDockerfile, planSteps, resolveConfig } from '../dockerfile/index.js';
import { BuildFailure, DEFAULT_HOOK_PORT, guestSize, isCellaError } from '../contract/index.js';
import { run } from '../host/index.js';
import type { SnapshotBuild } from '../store/index.js';
import { pollImageHook, runtimeConfig, setResolver } from './app.js';
import { resolveBase } from './base.js';
import type { BuildEngine, BuildInput, BuildOutcome, BuildSettings, Say } from './build-spec.js';
import { runSteps } from './builder.js';
import { cacheDirs } from './cache.js';
import { changesFiles, layerDone, layerFile, stepKeys, touchLayer } from './layers.js';

const DEFAULT_IMAGE_HOOK_TIMEOUT_S = 30;
/** Without a ready hook, the app's port must accept within this. */
const PORT_TIMEOUT_MS = 120_000;

/** Runs one build; throws BuildFailure (or anything else, which the caller reports as a platform error). */
export async function buildImage(engine: BuildEngine, settings: BuildSettings, input: BuildInput, say: Say): Promise<BuildOutcome> {
  const work = path.join(settings.dataDir, 'builds', input.buildId);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const snapshotBuild: SnapshotBuild = {};
  try {
    const req = input.version.request;
    say(`fetching the code artifact ${req.codeArtifact.uri}`);
    const zip = path.join(work, 'artifact.zip');
    const fetched = await fetchArtifact(req.codeArtifact.uri, zip, { ...(settings.s3 ? { s3: settings.s3 } : {}) });
    say(`  ${fetched.bytes} bytes, sha256 ${fetched.sha256}`);
    const disk = path.join(work, 'disk');
    const ctx = path.join(disk, 'ctx');
    const unpacked = await extractZip(zip, ctx);
    say(`  unpacked ${unpacked.entries} entries, ${unpacked.bytes} bytes`);
    const dockerfile = readFileSync(await findDockerfile(ctx), 'utf8');
    const from = parseDockerfile(dockerfile).from;
    const base = await resolveBase(from.image, from.line, settings, work, say);
    // Again with the base's environment: `ENV PATH=/app/bin:$PATH` must see the base's PATH.
    const df = parseDockerfile(dockerfile, {}, base.config.env);
    const planned = planSteps(base.config, df);
    const layers = cacheDirs(settings.dataDir).layers;
    mkdirSync(layers, { recursive: true });
    const network = await settings.resolveEgress(req.egressNetworkConnectors);
    const { keys, sources } = stepKeys(base.key, planned, ctx, network);
    const total = planned.length + 1;
    say(`Step 1/${total} : FROM ${df.from.image}`);
    const fsSteps = planned.map((p, i) => ({ ...p, key: keys[i] as string, index: i })).filter((p) => changesFiles(p.step));
    const firstMiss = fsSteps.findIndex((p) => !layerDone(layers, p.key));
    const toRun = firstMiss < 0 ? [] : fsSteps.slice(firstMiss);
    for (const p of planned.map((p, i) => ({ ...p, index: i }))) {
      if (toRun.some((r) => r.index === p.index)) break;
      say(`Step ${p.index + 2}/${total} : ${p.step.text}`);
      if (changesFiles(p.step)) say(' ---> using cache');
    }
    let top = base.disk;
    const lastCached = firstMiss < 0 ? fsSteps[fsSteps.length - 1] : fsSteps[firstMiss - 1];
    if (lastCached) top = layerFile(layers, lastCached.key);
    // Layers used are the last the pruning of the cache takes.
    for (const p of fsSteps.slice(0, firstMiss < 0 ? fsSteps.length : firstMiss)) touchLayer(layers, p.key);
    if (toRun.length > 0) {
      const parentKey = lastCached?.key ?? null;
      top = await runSteps(
        engine,
        { planned, sources, toRun, parent: top, parentKey, parentFormat: lastCached ? 'qcow2' : 'raw', disk, work, layers, total, network },
        say,
      );
    }

    const config = resolveConfig(base.config, df.steps);
    const versionDir = input.version.dir;
    rmSync(versionDir, { recursive: true, force: true });
    mkdirSync(versionDir, { recursive: true });
    const rootfs = path.join(versionDir, 'rootfs.ext4');
    say('writing the root file system');
    await run('qemu-img', ['convert', '-q', '-O', 'raw', top, rootfs], { code: 'DISK_SETUP_FAILED' });
    await setResolver(rootfs, work);
    snapshotBuild.codeInstallSizeInBytes = allocatedBytes(rootfs);

    const runtime = await runtimeConfig(config, input, rootfs);
    const hooks = runtime.hooks;
    const hooksPort = hooks?.port ?? DEFAULT_HOOK_PORT;
    const ready = hooks?.microvmImageHooks?.ready === 'ENABLED';
    const guest = guestSize(runtime.memoryMiB);
    say(
      `booting the image (${guest.memoryMiB} MiB, the peak of its ${runtime.memoryMiB} MiB tier; ${guest.vcpus} vCPU) and starting ${JSON.stringify(runtime.command)}; ` +
        (ready ? `polling the ready hook on port ${hooksPort}` : `waiting for port ${runtime.port} to accept`),
    );
    const readyTimeoutS = hooks?.microvmImageHooks?.readyTimeoutInSeconds ?? DEFAULT_IMAGE_HOOK_TIMEOUT_S;
    const snapshotDir = path.join(versionDir, 'snapshot');
    const snap = await engine.createSnapshot({
      dir: snapshotDir,
      rootfs,
      app: {
        argv: runtime.command,
        env: runtime.environmentVariables,
        cwd: runtime.workingDirectory,
        ...(runtime.uid !== undefined ? { uid: runtime.uid } : {}),
        ...(runtime.gid !== undefined ? { gid: runtime.gid } : {}),
      },
      port: runtime.port,
      // Every clone and resume of this version restores at the size captured here (snapshot.json).
      memoryMiB: guest.memoryMiB,
      vcpus: guest.vcpus,
      readyTimeoutMs: 60_000 + (ready ? readyTimeoutS * 1000 : PORT_TIMEOUT_MS),
      onLog: (_stream, data) => say(data.toString('utf8').replace(/\n$/, '')),
      ...(ready && hooks ? { ready: (host, check) => pollImageHook({ host, port: hooksPort }, 'ready', readyTimeoutS, check, say) } : {}),
    });
    snapshotBuild.memorySnapshotSizeInBytes = snap.memAllocatedBytes;
    snapshotBuild.diskSnapshotSizeInBytes = snap.diskAllocatedBytes;
    say(`snapshot captured in ${snap.captureMs} ms (app ready ${snap.templateBootMs} ms after boot)`);

    if (hooks?.microvmImageHooks?.validate === 'ENABLED') {
      say('validating: restoring a clone of the snapshot and calling the validate hook');
      const vm = await engine.launch(snapshotDir, `build-${input.buildId.slice(0, 8)}-validate`, { fromPool: false, appLog: null });
      try {
        await pollImageHook(vm.address(hooksPort), 'validate', hooks.microvmImageHooks.validateTimeoutInSeconds ?? DEFAULT_IMAGE_HOOK_TIMEOUT_S, () => {}, say);
      } finally {
        await engine.terminate(vm.ref);
      }
      say('validate hook passed');
    }
    return { runtime, snapshotBuild };
  } catch (err) {
    throw asBuildFailure(err, snapshotBuild);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** What went wrong, as the contract's reason; the sizes measured so far ride along. */
function asBuildFailure(err: unknown, snapshotBuild: SnapshotBuild): BuildFailure & { snapshotBuild: SnapshotBuild } {
  let failure: BuildFailure;
  if (err instanceof BuildFailure) failure = err;
  else if ((err as NodeJS.ErrnoException).code === 'ENOSPC' || /No space left on device/.test(String((err as Error).message))) {
    failure = new BuildFailure('DISK_STORAGE_FULL', `the disk is full: ${(err as Error).message}`);
  } else if (isCellaError(err, 'APP_NOT_READY') || isCellaError(err, 'GUEST_BOOT_FAILED')) {
    failure = new BuildFailure('CONTAINER_BUILD_FAILED', err.message);
  } else if (isCellaError(err, 'INVALID_ARGUMENT') || isCellaError(err, 'NOT_FOUND')) failure = new BuildFailure('CONTAINER_BUILD_FAILED', err.message);
  else failure = new BuildFailure('INTERNAL_PLATFORM_ERROR', (err as Error).message ?? String(err));
  return Object.assign(failure, { snapshotBuild });
}
