/**
 * Moving device state (and, for suspends, dirty RAM) between QEMU and files.
 * QEMU 7.2 has no `file:` migration URI, so cellad stands at the other end of
 * a unix socket: no shell (`exec:`) and the stream can be filtered on the way.
 */
import { createReadStream } from 'node:fs';
import { chown, mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CellaError, fromErrno } from '../contract/index.js';
import { jailPath, type Jail, type QemuProcess, type QmpClient } from '../vmm/index.js';
import { filterMigrationStream, type FilterStats, type KeepPage } from './migration-stream.js';

/** Migration stays bounded by the disk, not by QEMU's 32 MiB/s default. */
const UNLIMITED_BANDWIDTH = 2 ** 40;

interface MigrationStatus {
  status?: string;
  'error-desc'?: string;
}

export async function setMigrationCaps(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
}

async function waitMigration(qmp: QmpClient, qemu: QemuProcess, what: string): Promise<void> {
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    if (!qemu.alive) throw new CellaError('QEMU_EXITED', `${what}: ${qemu.describeExit()}`);
    const s = await qmp.execute<MigrationStatus>('query-migrate');
    if (s.status === 'completed') return;
    if (s.status === 'failed' || s.status === 'cancelled') {
      throw new CellaError('QEMU_FAILED', `${what} failed: ${s['error-desc'] ?? s.status}`);
    }
    await sleep(delay);
  }
}

/**
 * Writes `file` through `fill` (given a handle on a temporary name, it returns
 * the bytes written), then makes it durable: data synced, renamed into place,
 * folder synced. The rename is what says the file is complete (ADR 0007).
 */
export async function writeDurably<T>(file: string, fill: (out: FileHandle) => Promise<T>): Promise<T> {
  const tmp = `${file}.tmp`;
  const out = await open(tmp, 'w');
  try {
    const result = await fill(out);
    await out.datasync();
    await out.close();
    await rename(tmp, file);
    // It must outlive a power cut too.
    const dir = await open(path.dirname(file), 'r');
    await dir.sync().finally(() => dir.close());
    return result;
  } catch (err) {
    await out.close().catch(() => {});
    await rm(tmp, { force: true });
    throw fromErrno(err);
  }
}

/**
 * Saves the stopped VM's state into `file` (durably, see writeDurably) as a
 * migration stream. With `keep`, RAM pages it rejects are left out.
 * `socketPath` must be inside a jailed QEMU's chroot; the socket is handed to
 * its uid, which may connect to it but not replace it (the folder stays root's).
 */
export async function saveState(
  qmp: QmpClient,
  qemu: QemuProcess,
  jail: Jail | undefined,
  socketPath: string,
  file: string,
  keep: KeepPage = () => true,
): Promise<FilterStats> {
  await rm(socketPath, { force: true });
  const server = net.createServer();
  try {
    return await writeDurably(file, async (out) => {
      const connected = new Promise<net.Socket>((resolve, reject) => {
        server.once('connection', resolve);
        server.once('error', reject);
      });
      await new Promise<void>((resolve, reject) => server.listen(socketPath, resolve).once('error', reject));
      if (jail) await chown(socketPath, jail.uid, jail.gid);
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': UNLIMITED_BANDWIDTH });
      await setMigrationCaps(qmp);
      await qmp.execute('migrate', { uri: `unix:${jailPath(jail, socketPath)}` });
      const socket = await Promise.race([
        connected,
        qemu.waitExit().then(() => {
          throw new CellaError('QEMU_EXITED', `QEMU exited before saving state: ${qemu.describeExit()}`);
        }),
      ]);
      // Coalesce small records into large writes.
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (!pendingBytes) return;
        const bufs = pending;
        pending = [];
        pendingBytes = 0;
        await out.writev(bufs);
      };
      // Synchronous but for the flushes: the filter then awaits nothing per page.
      const stats = await filterMigrationStream(
        socket,
        (b) => {
          pending.push(b);
          pendingBytes += b.length;
          return pendingBytes >= 4 << 20 ? flush() : undefined;
        },
        keep,
      );
      await flush();
      await waitMigration(qmp, qemu, 'saving state');
      return stats;
    });
  } finally {
    server.close();
    await rm(socketPath, { force: true });
  }
}

/**
 * Has the stopped QEMU save its device state alone (no RAM) and returns it.
 * QEMU writes it by path, inside its chroot and as its uid: the file is made
 * for it beforehand (the folder stays root's, so it can create nothing), and
 * removed once read. Like the end of a migration, this flushes and releases
 * its disk until a `cont`.
 */
export async function saveDevices(qmp: QmpClient, jail: Jail | undefined, file: string): Promise<Buffer> {
  await rm(file, { force: true });
  const fh = await open(file, 'wx', 0o600);
  try {
    if (jail) await fh.chown(jail.uid, jail.gid);
  } finally {
    await fh.close();
  }
  try {
    await qmp.execute('xen-save-devices-state', { filename: jailPath(jail, file), live: true });
    return await readFile(file);
  } catch (err) {
    throw fromErrno(err);
  } finally {
    await rm(file, { force: true });
  }
}

/**
 * Feeds `file` (or its bytes `range`, inclusive) to a QEMU started with `-incoming defer` and waits until it is
 * loaded (VM paused). QEMU listens on `socketPath`, after it dropped to its uid:
 * the socket's folder (inside its chroot) is its own for the time of the load
 * only, then removed, so a QEMU that later runs guest code can create no files.
 */
export async function loadState(
  qmp: QmpClient,
  qemu: QemuProcess,
  jail: Jail | undefined,
  socketPath: string,
  file: string,
  range: { start: number; end?: number } = { start: 0 },
): Promise<void> {
  const socketDir = path.dirname(socketPath);
  await rm(socketDir, { recursive: true, force: true });
  await mkdir(socketDir, { mode: 0o700 });
  if (jail) await chown(socketDir, jail.uid, jail.gid);
  await setMigrationCaps(qmp);
  await qmp.execute('migrate-incoming', { uri: `unix:${jailPath(jail, socketPath)}` });
  const socket = net.createConnection(socketPath);
  const sent = new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    createReadStream(file, { highWaterMark: 1 << 20, ...range })
      .once('error', reject)
      .pipe(socket)
      .once('finish', resolve);
  });
  try {
    await Promise.race([
      sent,
      qemu.waitExit().then(() => {
        throw new CellaError('QEMU_EXITED', qemu.describeExit());
      }),
    ]);
    await waitMigration(qmp, qemu, 'loading state');
  } catch (err) {
    socket.destroy();
    // QEMU exits when it cannot load a stream: that is a bad snapshot, not a crash.
    const reason = qemu.alive ? (err as Error).message : qemu.describeExit();
    throw new CellaError('SNAPSHOT_CORRUPT', `cannot restore ${file}: ${reason}`, { cause: err });
  } finally {
    await rm(socketDir, { recursive: true, force: true });
  }
}
