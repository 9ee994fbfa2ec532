/**
 * The data directory cellad owns: made usable, locked to one cellad, and
 * bound to the region and account its ARNs were issued under.
 */
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { type Arns, CellaError } from '../contract/index.js';
import { processStartTime } from '../engine/index.js';
import type { Store } from '../store/index.js';

/** Creates the data directory if needed and makes sure it is a directory this process may write. */
export function prepareDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true });
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new CellaError('INVALID_ARGUMENT', `data directory ${dataDir} cannot be used: ${(err as Error).message}`);
  }
}

/**
 * One cellad per data directory: a second would fight the first over its VMs.
 * The lock file names its holder by pid and start time, so neither a reused
 * pid nor a holder that died but was not reaped yet (a zombie) keeps it.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'cellad.pid');
  const me = `${process.pid} ${processStartTime(process.pid) ?? ''}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, me);
      closeSync(fd);
      return () => {
        if (existsSync(file) && readFileSync(file, 'utf8') === me) rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new CellaError('INVALID_ARGUMENT', `cannot lock ${dataDir}: ${(err as Error).message}`);
      const [pid, startTime] = readFileSync(file, 'utf8').trim().split(' ');
      const owner = Number(pid);
      const live = processStartTime(owner);
      if (owner > 0 && live !== undefined && (!startTime || live === startTime)) {
        throw new CellaError('INVALID_STATE', `another cellad (pid ${owner}) already serves ${dataDir}`);
      }
      // The previous owner is gone (kill -9, a zombie not yet reaped, a reused pid): its lock is stale.
      rmSync(file, { force: true });
    }
  }
  throw new CellaError('INVALID_STATE', `could not lock ${dataDir}`);
}

/** Where the store keeps the region and account its ARNs were issued under. */
const ARN_HOME = 'arn-home';

/**
 * The data directory's ARNs name the region and account it was first
 * started with (a database from before ARNs had them was migrated to the
 * defaults). A start with another region or account would leave every
 * stored ARN unknown to the API, so it is refused, saying how to start.
 */
export async function checkArnHome(store: Store, arns: Arns): Promise<void> {
  const home = `${arns.region}:${arns.accountId}`;
  const saved = (await store.getSecret(ARN_HOME))?.toString();
  if (saved === undefined) return store.putSecret(ARN_HOME, Buffer.from(home));
  if (saved !== home) {
    const [region, account] = saved.split(':');
    throw new CellaError(
      'INVALID_ARGUMENT',
      `the data directory's resources are in region ${region}, account ${account}: start with --region ${region} --account-id ${account}, or use another --data-dir`,
    );
  }
}
