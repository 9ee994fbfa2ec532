/** The file-system steps (RUN, COPY/ADD, WORKDIR) run in a builder VM, each finished step frozen as a layer. */
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createOverlay, ext4FromDir } from '../disk/index.js';
import type { PlannedStep, Step } from '../dockerfile/index.js';
import { BUILD_MOUNT, type BuilderVm } from '../engine/index.js';
import { BuildFailure, isCellaError } from '../contract/index.js';
import { crashPoint, run } from '../host/index.js';
import type { NetworkPolicy } from '../net/index.js';
import { DEFAULT_PATH, type BuildEngine, type Say } from './build-spec.js';
import { layerDone, layerFile, markDone } from './layers.js';
import { resolveUser } from './users.js';

const BUSYBOX = '/bin/busybox';
const STEP_TIMEOUT_MS = 30 * 60_000;

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
export async function runSteps(engine: BuildEngine, r: StepRun, say: Say): Promise<string> {
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
  const result = await vm
    .exec(
      { argv, env, cwd, uid: ids.uid, gid: ids.gid },
      {
        timeoutMs: STEP_TIMEOUT_MS,
        onOutput: (_stream, data) => {
          const text = data.toString('utf8');
          tail = (tail + text).slice(-4096);
          for (const line of text.replace(/\n$/, '').split('\n')) say(line);
        },
      },
    )
    .catch((err: unknown) => {
      if (isCellaError(err, 'AGENT_TIMEOUT'))
        throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${step.line}: ${step.kind} did not finish within ${STEP_TIMEOUT_MS / 60000} minutes`);
      if (isCellaError(err, 'AGENT_ERROR'))
        throw new BuildFailure('CONTAINER_BUILD_FAILED', `Dockerfile line ${step.line}: ${step.kind} could not start: ${err.message}`);
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
