/**
 * One image build, start to end: fetch the code artifact, unpack it safely,
 * parse the Dockerfile, resolve FROM to a root disk, run the file-system
 * steps in a builder VM (each finished step frozen as a cached layer),
 * flatten the result into the version's ext4, boot it, wait for the app
 * (ready hook or port), capture the snapshot, and run the validate hook on a
 * clone of it. Everything the user needs to know goes to the build log.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { extractZip, fetchArtifact, findDockerfile, type S3Settings } from '../archive/index.js';
import { allocatedBytes, createOverlay, ext4FromDir } from '../disk/index.js';
import { cacheKeyOf, commandOf, emptyConfig, parseDockerfile, planSteps, resolveConfig, type ContainerConfig, type PlannedStep, type Step } from '../dockerfile/index.js';
import { BUILD_MOUNT, type BuilderVm, type Engine } from '../engine/index.js';
import { type Arns, BuildFailure, DEFAULT_HOOK_PORT, guestSize, HOOK_PATH, isCellaError } from '../contract/index.js';
import { crashPoint, run } from '../host/index.js';
import { GUEST, type NetworkPolicy } from '../net/index.js';
import { pullImage } from '../oci/index.js';
import type { ImageConfig, ImageVersionRecord, SnapshotBuild } from '../store/index.js';
import { baseTree, listBases, type GuestArtifacts } from '../setup/index.js';
import { resolveUser } from './users.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BUSYBOX = '/bin/busybox';
/** Root disks are sparse: room for what RUN steps install and the app writes, paid for only when used. */
const ROOT_DISK_MIB = 4096;
const STEP_TIMEOUT_MS = 30 * 60_000;
const DEFAULT_IMAGE_HOOK_TIMEOUT_S = 30;
/** Without a ready hook, the app's port must accept within this. */
const PORT_TIMEOUT_MS = 120_000;

export interface BuildSettings {
  dataDir: string;
  /** FROM may name a managed base by its ARN. */
  arns: Arns;
  /** What RUN steps may reach, from the image's egress connectors. */
  resolveEgress: (connectors: string[] | undefined) => Promise<NetworkPolicy>;
  /** The guest artifacts: the managed bases are theirs. */
  guest: GuestArtifacts;
  s3?: S3Settings;
  insecureRegistries?: string[];
}

export interface BuildInput {
  buildId: string;
  imageArn: string;
  imageName: string;
  version: ImageVersionRecord;
  /** The image's tier: its baseline. The snapshot is captured at the tier's peak (guestSize). */
  memoryMiB: number;
}

export interface BuildOutcome {
  runtime: ImageConfig;
  snapshotBuild: SnapshotBuild;
}

type Say = (line: string) => void;

/** What a build needs of the engine: a builder VM, a snapshot, and a clone to validate it. */
export type BuildEngine = Pick<Engine, 'startBuilder' | 'createSnapshot' | 'launch' | 'terminate'>;

export function cacheDirs(dataDir: string): { layers: string; bases: string; blobs: string } {
  const root = path.join(dataDir, 'cache');
  return { layers: path.join(root, 'layers'), bases: path.join(root, 'bases'), blobs: path.join(root, 'oci-blobs') };
}

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
      top = await runSteps(engine, { planned, sources, toRun, parent: top, parentKey, parentFormat: lastCached ? 'qcow2' : 'raw', disk, work, layers, total, network }, say);
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

// ---------- base images ----------

interface ResolvedBase {
  /** Raw ext4 the first layer stands on. */
  disk: string;
  /** Identity of that disk's content: the root of every step's cache key. */
  key: string;
  config: ContainerConfig;
}

/**
 * FROM names a managed base (`debian-12-python`, or its ARN) or an OCI
 * image reference, pulled from its registry.
 */
/** The managed base FROM names (a name, or its ARN), or FROM as it is; an ARN of another region or account fails the build. */
function managedBaseName(from: string, line: number, arns: Arns): string {
  try {
    return arns.managedImageName(from, 'FROM') ?? from;
  } catch (err) {
    if (!isCellaError(err, 'INVALID_ARGUMENT')) throw err;
    throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${err.message}`);
  }
}

async function resolveBase(from: string, line: number, settings: BuildSettings, work: string, say: Say): Promise<ResolvedBase> {
  const bases = cacheDirs(settings.dataDir).bases;
  mkdirSync(bases, { recursive: true });
  const managed = listBases(settings.guest.dir).find((b) => b.name === managedBaseName(from, line, settings.arns));
  if (managed) {
    // A base rebuilt by setup (new inputs or --force) is a new root disk.
    const key = sha256(`managed\0${managed.name}\0${managed.inputsSha256}\0${managed.createdAt}`);
    const disk = path.join(bases, `${managed.name}-${key.slice(0, 16)}.ext4`);
    if (!existsSync(disk)) {
      say(`  preparing the root disk of the managed base ${managed.name}`);
      await ext4Atomic(baseTree(settings.guest, managed.name), disk);
    }
    return { disk, key, config: { ...emptyConfig(), env: { PATH: DEFAULT_PATH, ...managed.env } } };
  }
  if (/^scratch$/i.test(from)) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: FROM scratch is not supported: start from a managed base or an image`);
  say(`  pulling ${from}`);
  const tree = path.join(work, 'base-tree');
  let pulled;
  try {
    pulled = await pullImage(from, tree, {
      cacheDir: cacheDirs(settings.dataDir).blobs,
      ...(settings.insecureRegistries ? { insecureRegistries: settings.insecureRegistries } : {}),
      log: (l) => say(`  ${l}`),
    });
  } catch (err) {
    if (err instanceof BuildFailure) throw new BuildFailure(err.reason, `Dockerfile line ${line}: FROM ${from}: ${err.message}`);
    throw err;
  }
  const key = sha256(`oci\0${pulled.digest}`);
  const disk = path.join(bases, `oci-${key.slice(0, 16)}.ext4`);
  if (!existsSync(disk)) await ext4Atomic(tree, disk);
  rmSync(tree, { recursive: true, force: true });
  const config = { ...pulled.config, env: { PATH: DEFAULT_PATH, ...pulled.config.env } };
  return { disk, key, config };
}

async function ext4Atomic(tree: string, out: string): Promise<void> {
  const tmp = `${out}.partial`;
  rmSync(tmp, { force: true });
  await ext4FromDir(tree, tmp, ROOT_DISK_MIB, 'cella-root', { inodeRatio: 65536 });
  renameSync(tmp, out);
}

// ---------- layers ----------

function changesFiles(step: Step): boolean {
  return step.kind === 'RUN' || step.kind === 'COPY' || step.kind === 'ADD' || step.kind === 'WORKDIR';
}

function layerFile(layers: string, key: string): string {
  return path.join(layers, `${key}.qcow2`);
}

/**
 * A layer is reusable once its marker exists (written only after the builder
 * froze it) and so is every layer below it: each is a qcow2 on its parent,
 * and the cache's pruning (./cache.ts) may have taken a parent. A marker
 * that does not name its parent (older cellads wrote none) is not trusted.
 */
function layerDone(layers: string, key: string): boolean {
  const marker = readMarker(layers, key);
  if (!marker || !existsSync(layerFile(layers, key)) || marker.parent === undefined) return false;
  return marker.parent === null || layerDone(layers, marker.parent);
}

/** Marks a layer as just used: the cache's pruning takes the least recently used first. */
function touchLayer(layers: string, key: string): void {
  const now = new Date();
  try {
    utimesSync(path.join(layers, `${key}.json`), now, now);
  } catch {
    // gone meanwhile: the next build makes it again
  }
}

function readMarker(layers: string, key: string): { parent?: string | null } | undefined {
  try {
    return JSON.parse(readFileSync(path.join(layers, `${key}.json`), 'utf8')) as { parent?: string | null };
  } catch {
    return undefined;
  }
}

/** `parent`: the key of the layer it is a qcow2 on, null for a base disk. */
function markDone(layers: string, key: string, step: PlannedStep, parent: string | null): void {
  writeFileSync(path.join(layers, `${key}.json`), JSON.stringify({ step: step.step.text, line: step.step.line, parent, createdAt: new Date().toISOString() }));
}

/**
 * Each step's key chains its parent's: the same step on a different base or
 * after a different step is a different layer. COPY/ADD keys include the
 * content of their sources; RUN keys the environment, directory, user and egress.
 */
function stepKeys(baseKey: string, planned: PlannedStep[], ctx: string, network: NetworkPolicy): { keys: string[]; sources: Map<number, string[]> } {
  let prev = baseKey;
  const sources = new Map<number, string[]>();
  const keys = planned.map((p, i) => {
    const h = createHash('sha256').update(prev).update('\0').update(cacheKeyOf(p.step)).update('\0');
    h.update(JSON.stringify({ env: p.env, cwd: p.workingDir, user: p.user }));
    // What a RUN could reach is part of what it made: other egress, another layer.
    if (p.step.kind === 'RUN') h.update(JSON.stringify(network.egress));
    if (p.step.kind === 'COPY' || p.step.kind === 'ADD') {
      const files = p.step.sources.flatMap((src) => expandSources(ctx, src, p.step.line));
      for (const f of files) hashTree(h, ctx, f);
      sources.set(i, files);
    }
    prev = h.digest('hex');
    return prev;
  });
  return { keys, sources };
}

function hashTree(h: ReturnType<typeof createHash>, root: string, rel: string): void {
  const abs = path.join(root, rel);
  const st = lstatSync(abs);
  h.update(`${rel}\0${st.mode}\0`);
  if (st.isSymbolicLink()) h.update(readlinkSync(abs));
  else if (st.isFile()) h.update(readFileSync(abs));
  else if (st.isDirectory()) for (const child of readdirSync(abs).sort()) hashTree(h, root, path.join(rel, child));
}

/** COPY sources relative to the context, globs (`*`, `?`) expanded; never outside it. */
function expandSources(ctx: string, source: string, line: number): string[] {
  const rel = path.posix.normalize(source.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../')) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${source} is outside the build context`);
  if (!/[*?[]/.test(rel)) {
    const clean = rel === '.' ? '' : rel.replace(/\/$/, '');
    if (!existsLink(path.join(ctx, clean))) {
      throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: ${source} does not exist in the code artifact`);
    }
    return [clean];
  }
  const parts = rel.split('/');
  let found = [''];
  for (const part of parts) {
    const re = globRegExp(part);
    found = found.flatMap((dir) => {
      const abs = path.join(ctx, dir);
      if (!isDir(abs)) return [];
      return readdirSync(abs)
        .sort()
        .filter((n) => re.test(n))
        .map((n) => (dir ? `${dir}/${n}` : n));
    });
  }
  if (found.length === 0) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${line}: no file in the code artifact matches ${source}`);
  return found;
}

function globRegExp(part: string): RegExp {
  let re = '';
  for (const c of part) re += c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  return new RegExp(`^${re}$`);
}

function existsLink(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

// ---------- the builder VM ----------

interface StepRun {
  planned: PlannedStep[];
  /** COPY/ADD sources by step index, as the host expanded them. */
  sources: Map<number, string[]>;
  toRun: (PlannedStep & { key: string; index: number })[];
  parent: string;
  /** The key of the layer `parent` is, null for a base disk. */
  parentKey: string | null;
  parentFormat: 'raw' | 'qcow2';
  disk: string;
  work: string;
  layers: string;
  total: number;
  network: NetworkPolicy;
}

/** Runs the steps from the first uncached one; returns the last layer. */
async function runSteps(engine: BuildEngine, r: StepRun, say: Say): Promise<string> {
  // The build disk: the context plus a static busybox that COPY and user lookups use whatever the image holds.
  mkdirSync(path.join(r.disk, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, path.join(r.disk, 'bin', 'busybox'));
  const buildDisk = path.join(r.work, 'build.ext4');
  const mib = Math.ceil(Number((await run('du', ['-sm', '--apparent-size', r.disk])).split(/\s/)[0]) * 1.3) + 64;
  await ext4FromDir(r.disk, buildDisk, mib, 'cella-build');

  const first = r.toRun[0] as StepRun['toRun'][number];
  for (const s of r.toRun) {
    rmSync(layerFile(r.layers, s.key), { force: true });
    rmSync(path.join(r.layers, `${s.key}.json`), { force: true });
  }
  await createOverlay(r.parent, r.parentFormat, layerFile(r.layers, first.key));
  say(` ---> starting a builder VM (egress: ${describeEgress(r.network)})`);
  const vm = await engine.startBuilder({
    top: layerFile(r.layers, first.key),
    buildDisk,
    consoleLog: path.join(r.work, 'builder-console.log'),
    ...(r.network.egress === 'none' ? {} : { network: r.network }),
  });
  crashPoint('build:builder');
  let prev: StepRun['toRun'][number] | undefined;
  // Each layer is a qcow2 on the one before it in toRun; the first, on the cached layer (or base disk) below.
  const parentOf = (step: StepRun['toRun'][number]): string | null => {
    const i = r.toRun.indexOf(step);
    return i > 0 ? (r.toRun[i - 1] as StepRun['toRun'][number]).key : r.parentKey;
  };
  let passwd: { passwd: string; group: string } | undefined;
  const users = async (): Promise<{ passwd: string; group: string }> => {
    if (passwd) return passwd;
    const cat = async (f: string): Promise<string> => (await vm.exec({ argv: [`${BUILD_MOUNT}/bin/busybox`, 'cat', f] })).stdout.toString('utf8');
    return (passwd = { passwd: await cat('/etc/passwd'), group: await cat('/etc/group') });
  };
  try {
    let next = 0;
    for (let i = first.index; i < r.planned.length; i++) {
      const p = r.planned[i] as PlannedStep;
      say(`Step ${i + 2}/${r.total} : ${p.step.text}`);
      const s = r.toRun[next];
      if (!s || s.index !== i) continue;
      next++;
      if (prev) {
        await vm.commit(layerFile(r.layers, s.key));
        markDone(r.layers, prev.key, prev, parentOf(prev));
      }
      const t0 = Date.now();
      await execStep(vm, p, r.sources.get(i) ?? [], say, users);
      if (p.step.kind === 'RUN' || p.step.kind === 'COPY' || p.step.kind === 'ADD') passwd = undefined;
      say(` ---> done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      prev = s;
    }
    await vm.close();
    if (prev) markDone(r.layers, prev.key, prev, parentOf(prev));
    return layerFile(r.layers, (prev ?? first).key);
  } catch (err) {
    await vm.close();
    // The step that failed left a half layer: never reuse it.
    const failed = r.toRun.find((s) => !layerDone(r.layers, s.key));
    if (failed) rmSync(layerFile(r.layers, failed.key), { force: true });
    throw err;
  }
}

type Users = () => Promise<{ passwd: string; group: string }>;

function describeEgress(p: NetworkPolicy): string {
  if (typeof p.egress === 'string') return p.egress;
  return [...p.egress.cidrs, ...p.egress.domains].join(', ');
}

async function execStep(vm: BuilderVm, p: PlannedStep, sources: string[], say: Say, users: Users): Promise<void> {
  const step = p.step;
  const bb = `${BUILD_MOUNT}/bin/busybox`;
  let argv: string[];
  let ids: { uid: number; gid: number } = { uid: 0, gid: 0 };
  let env: Record<string, string> = { PATH: DEFAULT_PATH };
  let cwd = '/';
  switch (step.kind) {
    case 'RUN': {
      const u = await users();
      ids = resolveUser(p.user, u.passwd, u.group, step.line);
      argv = step.argv;
      env = { PATH: DEFAULT_PATH, ...p.env };
      // The directory exists: WORKDIR made it, or the base has it.
      cwd = p.workingDir;
      break;
    }
    case 'WORKDIR':
      argv = [bb, 'mkdir', '-p', step.path];
      break;
    case 'COPY':
    case 'ADD':
      argv = [bb, 'sh', '-c', copyScript(step, sources, p.workingDir, bb)];
      break;
    // These change the planned state or the image config only: nothing runs in the builder.
    case 'ARG':
    case 'CMD':
    case 'ENTRYPOINT':
    case 'ENV':
    case 'EXPOSE':
    case 'LABEL':
    case 'USER':
      return;
  }
  let tail = '';
  const result = await vm.exec(
    { argv, env, cwd, uid: ids.uid, gid: ids.gid },
    {
      timeoutMs: STEP_TIMEOUT_MS,
      onOutput: (_stream, data) => {
        const text = data.toString('utf8');
        tail = (tail + text).slice(-4096);
        for (const line of text.replace(/\n$/, '').split('\n')) say(line);
      },
    },
  ).catch((err: unknown) => {
    if (isCellaError(err, 'AGENT_TIMEOUT')) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${step.line}: ${step.kind} did not finish within ${STEP_TIMEOUT_MS / 60000} minutes`);
    if (isCellaError(err, 'AGENT_ERROR')) throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${step.line}: ${step.kind} could not start: ${err.message}`);
    throw err;
  });
  if (result.exitCode === 0) return;
  if (/No space left on device/.test(tail)) {
    throw new BuildFailure('DISK_STORAGE_FULL', `Dockerfile line ${step.line}: ${step.kind} ran out of disk space`);
  }
  const how = result.exitCode === null ? `was killed by signal ${result.signal}` : `exited with code ${result.exitCode}`;
  throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${step.line}: ${step.text} ${how}`);
}

const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * COPY/ADD as a busybox script inside the builder (never on the host's view
 * of the image). Docker's rules: a directory source copies its contents; with
 * several sources or a trailing slash the destination is a directory.
 */
function copyScript(step: Extract<Step, { kind: 'COPY' | 'ADD' }>, sources: string[], workingDir: string, bb: string): string {
  // The host expanded and checked the sources (stepKeys); the guest sees the same tree.
  const ctxRoot = `${BUILD_MOUNT}/ctx`;
  const dest = path.posix.resolve(workingDir, step.dest);
  const intoDir = step.dest.endsWith('/') || sources.length > 1;
  const lines = ['set -e', `B=${q(bb)}`];
  const targets: string[] = [];
  for (const rel of sources) {
    const src = rel ? `${ctxRoot}/${rel}` : ctxRoot;
    const extract = step.kind === 'ADD' && 'extract' in step && step.extract === true;
    lines.push(`if [ -d ${q(src)} ] && [ ! -L ${q(src)} ]; then "$B" mkdir -p ${q(dest)}; "$B" cp -a ${q(src)}/. ${q(dest)}/;`);
    if (extract) lines.push(`elif true; then "$B" mkdir -p ${q(dest)}; "$B" tar -xf ${q(src)} -C ${q(dest)};`);
    if (intoDir) lines.push(`else "$B" mkdir -p ${q(dest)}; "$B" cp -a ${q(src)} ${q(dest)}/; fi`);
    else lines.push(`else "$B" mkdir -p ${q(path.posix.dirname(dest))}; "$B" cp -a ${q(src)} ${q(dest)}; fi`);
    targets.push(intoDir && rel ? `${dest}/${path.posix.basename(rel)}` : dest);
  }
  if (step.chown) lines.push(`"$B" chown -R ${q(step.chown)} ${[...new Set(targets)].map(q).join(' ')}`);
  if (step.chmod) lines.push(`"$B" chmod -R ${q(step.chmod)} ${[...new Set(targets)].map(q).join(' ')}`);
  return lines.join('\n');
}

/**
 * The guest's resolver is Cella's DNS forwarder at its gateway (the only
 * name service a connector lets it use), as Docker manages resolv.conf.
 * Written with debugfs: the host edits the image file without mounting it.
 */
async function setResolver(rootfs: string, work: string): Promise<void> {
  const conf = path.join(work, 'resolv.conf');
  writeFileSync(conf, `# written by Cella: DNS goes through the VM's network connectors\nnameserver ${GUEST.gateway}\n`);
  const script = path.join(work, 'resolv.debugfs');
  writeFileSync(script, `rm /etc/resolv.conf\nwrite ${conf} /etc/resolv.conf\n`);
  // debugfs reports a missing /etc/resolv.conf (or /etc) on stderr and goes on; its exit code says nothing useful.
  await run('debugfs', ['-w', '-f', script, rootfs]).catch(() => {});
}

// ---------- the app ----------

async function runtimeConfig(config: ContainerConfig, input: BuildInput, rootfs: string): Promise<ImageConfig> {
  const req = input.version.request;
  const command = commandOf(config);
  if (command.length === 0) throw new BuildFailure('CONTAINER_BUILD_FAILED', 'the Dockerfile has no ENTRYPOINT or CMD: nothing to start');
  let ids: { uid: number; gid: number } | undefined;
  if (config.user) {
    const read = async (f: string): Promise<string> => {
      try {
        return await run('debugfs', ['-R', `cat ${f}`, rootfs]);
      } catch {
        return '';
      }
    };
    ids = resolveUser(config.user, await read('/etc/passwd'), await read('/etc/group'), 0);
  }
  return {
    command,
    environmentVariables: {
      PATH: DEFAULT_PATH,
      ...config.env,
      ...req.environmentVariables,
      AWS_LAMBDA_MICROVM_IMAGE_ARN: input.imageArn,
      AWS_LAMBDA_MICROVM_IMAGE_NAME: input.imageName,
      AWS_LAMBDA_MICROVM_IMAGE_VERSION: input.version.version,
    },
    workingDirectory: config.workingDir || '/',
    ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    port: config.exposedPorts[0] ?? 8080,
    memoryMiB: input.memoryMiB,
    vcpus: guestSize(input.memoryMiB).vcpus,
    ...(req.hooks ? { hooks: req.hooks } : {}),
    ...(req.egressNetworkConnectors ? { egressNetworkConnectors: req.egressNetworkConnectors } : {}),
  };
}

/**
 * The image hooks: POST until 200 (snapshot now / passed); 503 or a refused
 * connection means not yet; anything else, or the timeout, fails the build.
 */
async function pollImageHook(address: { host: string; port: number }, hook: 'ready' | 'validate', timeoutS: number, check: () => void, say: Say): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  let last = '';
  for (;;) {
    check();
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new BuildFailure('CONTAINER_BUILD_FAILED', `${hook === 'ready' ? 'Ready' : 'Validate'} hook invocation timed out after PT${timeoutS}S${last ? ` (last: ${last})` : ''}`);
    }
    const status = await postHook(address, hook, left);
    if (status === 200) {
      say(`${hook} hook answered 200`);
      return;
    }
    if (typeof status === 'number' && status !== 503) throw new BuildFailure('CONTAINER_BUILD_FAILED', `the ${hook} hook answered HTTP ${status}`);
    const now = status === 503 ? 'HTTP 503 (not ready yet)' : status;
    if (now !== last) say(`${hook} hook: ${now}`);
    last = now;
    await sleep(100);
  }
}

/** The status, or why there was none (a string). */
function postHook(address: { host: string; port: number }, hook: string, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ ...address, method: 'POST', path: HOOK_PATH + hook, agent: false, headers: { 'content-length': 0 } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', (err) => resolve(err.message));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('no answer in time')));
    req.on('error', (err) => resolve(`not answering (${err.message})`));
    req.end();
  });
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

