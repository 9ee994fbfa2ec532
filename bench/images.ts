/**
 * npm run bench:images [-- --quick]
 *
 * Image builds through a real cellad: a small Python HTTP app (Dockerfile on
 * the managed debian-12-python base, whose root disk is already prepared)
 * built from scratch, then the same zip rebuilt with every step cached, and
 * the snapshot's sizes. Prints JSON lines (see ./report.ts); asserts nothing.
 */
import { Arns } from '../src/contract/index.js';
import { rmSync } from 'node:fs';
import { zipDirectory } from '../src/archive/index.js';
import { startServer } from '../src/server/index.js';
import { API_KEY, createImage, shutdown } from '../test/control-helpers.js';
import { PY_APP, PY_DOCKERFILE } from '../test/fixtures/pyapp.js';
import { tempDataDir } from '../test/helpers.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { reporter } from './report.js';

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

const quick = process.argv.includes('--quick');
const N = quick ? 1 : 3;
/** The targets. */
const TARGET_BUILD_S = 60;
const TARGET_REBUILD_S = 10;

const dataDir = tempDataDir('bench-images');
const server = await startServer({ dataDir, port: 0, proxyPort: 0, apiRateScale: 0, apiKey: API_KEY, log: () => {} });
const emit = reporter(() => ({ accel: server.engine.accel.accel }));
const request = {
  baseImageArn: ARNS.managedImage('debian-12-python'),
  resources: [{ minimumMemoryInMiB: 512 }],
  hooks: { port: 8080, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 120 } },
};

/** The app's zip; `salt` changes the first RUN so no layer of an earlier build matches. */
async function appZip(salt: string): Promise<Buffer> {
  const dir = path.join(dataDir, `ctx-${salt}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'Dockerfile'), PY_DOCKERFILE.replace('\nRUN ', `\nRUN echo ${salt} > /etc/build-salt && `));
  writeFileSync(path.join(dir, 'app.py'), PY_APP);
  const zip = await zipDirectory(dir);
  rmSync(dir, { recursive: true, force: true });
  return zip;
}

async function timed(name: string, zip: Buffer): Promise<{ s: number; sizes: Record<string, number> }> {
  const t0 = performance.now();
  const { build, log } = await createImage(server.url, name, request, zip);
  const s = (performance.now() - t0) / 1000;
  if (build.buildState !== 'SUCCESSFUL') throw new Error(`build ${name} failed:\n${log}`);
  return { s, sizes: build.snapshotBuild ?? {} };
}

try {
  // Prepares the base's root disk once, as a host that has built on it before.
  await timed('warmup', await appZip('warmup'));
  const fresh: number[] = [];
  const cached: number[] = [];
  let sizes: Record<string, number> = {};
  for (let i = 0; i < N; i++) {
    const zip = await appZip(`run-${i}`);
    const first = await timed(`app-${i}`, zip);
    fresh.push(first.s);
    sizes = first.sizes;
    cached.push((await timed(`app-${i}-again`, zip)).s);
  }
  emit('build_python_app_cached_base', 's', fresh, TARGET_BUILD_S, 'lower');
  emit('rebuild_python_app_all_steps_cached', 's', cached, TARGET_REBUILD_S, 'lower');
  for (const [k, v] of Object.entries(sizes)) emit(`snapshot_${k}`, 'bytes', [v], null, 'lower', { mib: Math.round((v / 1048576) * 10) / 10 });
} finally {
  await shutdown(server);
  rmSync(dataDir, { recursive: true, force: true });
}
