/** Following an image build: its log on stderr as it happens, then the outcome. */
import type { CellaClient, ImageBuild, ImageVersionStarted } from '../client/index.js';
import { keyValues, type Io } from './args.js';
import { mib, printJson } from './remote.js';

/** Unless --no-wait: the build log on stderr as it happens, then the outcome; exit 1 if the build FAILED. */
export async function followBuild(c: CellaClient, started: ImageVersionStarted, io: Io, json: boolean, wait: boolean): Promise<number> {
  const { name, imageVersion: version, buildId } = started;
  if (!wait) {
    if (json) printJson(io, started);
    else {
      io.out(
        keyValues([
          ['image', name],
          ['version', version],
          ['build', buildId],
          ['state', started.state],
        ]),
      );
      io.err(`follow the build with: cella image logs ${name} --version ${version} -f\n`);
    }
    return 0;
  }
  if (!json) {
    io.err(`building ${name} version ${version} (build ${buildId})\n`);
    // Chunks may split a character; the decoder keeps the partial one for the next.
    const text = new TextDecoder();
    await c.buildLog(name, version, buildId, { follow: true, onChunk: (chunk) => io.err(text.decode(chunk, { stream: true })) });
  }
  // The log ends with the build; the wait covers the moment between the two.
  const build = await c.waitForBuild(name, version, buildId, { intervalMs: 1000 });
  if (json) printJson(io, build);
  else io.out(describeBuild(name, build));
  if (build.buildState === 'SUCCESSFUL') return 0;
  if (!json) io.err(`\ncella: the build of ${name} version ${version} FAILED: ${failure(build)}\n`);
  return 1;
}

export const failure = (b: ImageBuild): string => [b.stateReason ?? 'no reason given', b.stateReasonMessage].filter(Boolean).join(': ');

function describeBuild(name: string, b: ImageBuild): string {
  const s = b.snapshotBuild;
  const sizes = s
    ? [
        s.memorySnapshotSizeInBytes !== undefined ? `memory ${mib(s.memorySnapshotSizeInBytes)}` : '',
        s.diskSnapshotSizeInBytes !== undefined ? `disk ${mib(s.diskSnapshotSizeInBytes)}` : '',
        s.codeInstallSizeInBytes !== undefined ? `code ${mib(s.codeInstallSizeInBytes)}` : '',
      ].filter(Boolean)
    : [];
  return keyValues([
    ['image', name],
    ['version', b.imageVersion],
    ['build', b.buildId],
    ['state', b.buildState],
    ['reason', b.buildState === 'FAILED' ? failure(b) : undefined],
    ['snapshot', sizes.length > 0 ? sizes.join(', ') : undefined],
  ]);
}
