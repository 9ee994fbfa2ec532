/**
 * Application logs per VM, kept outside the VM's folder so they outlive it:
 * `<data>/logs/vms/<id>.log` (stdout and stderr interleaved as the guest
 * sent them). Followers get what is in the file, then live output until the
 * VM terminates.
 */
import { EventEmitter } from 'node:events';
import { closeSync, createReadStream, existsSync, fstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';

/** A VM's log is rotated past this size; with the one older file kept, a VM holds at most twice this on disk. */
export const MAX_VM_LOG_BYTES = 64 * 1024 * 1024;

export interface LogSource {
  on(event: 'data', fn: (stream: 'stdout' | 'stderr', data: Buffer) => void): unknown;
  removeListener(event: 'data', fn: (stream: 'stdout' | 'stderr', data: Buffer) => void): unknown;
}

export class LogHub {
  private readonly live = new EventEmitter();
  private readonly attached = new Map<string, () => void>();
  private readonly lastData = new Map<string, number>();
  readonly dir: string;

  constructor(
    dataDir: string,
    private readonly maxBytes = MAX_VM_LOG_BYTES,
  ) {
    this.dir = path.join(dataDir, 'logs', 'vms');
    mkdirSync(this.dir, { recursive: true });
    this.live.setMaxListeners(0);
  }

  file(vmId: string): string {
    return path.join(this.dir, `${vmId}.log`);
  }

  /**
   * Appends a running VM's output to its file and relays it to followers.
   * Writes are synchronous, so the file's size is the exact offset that
   * separates what a follower reads from the file from what it gets live.
   */
  attach(vmId: string, source: LogSource): void {
    this.attached.get(vmId)?.();
    const file = this.file(vmId);
    let fd = openSync(file, 'a');
    let offset = fstatSync(fd).size;
    const fn = (_stream: 'stdout' | 'stderr', data: Buffer): void => {
      try {
        if (offset > 0 && offset + data.length > this.maxBytes) {
          // Rotated, so an app that prints without end cannot fill the host's disk: the older half is kept as .1.
          closeSync(fd);
          renameSync(file, `${file}.1`);
          fd = openSync(file, 'a');
          offset = 0;
        }
        writeSync(fd, data);
      } catch {
        return;
      }
      offset += data.length;
      this.lastData.set(vmId, Date.now());
      this.live.emit(vmId, data, offset);
    };
    source.on('data', fn);
    this.attached.set(vmId, () => {
      source.removeListener('data', fn);
      closeSync(fd);
    });
  }

  /**
   * Resolves once the VM's output has been quiet for `quietMs` from now (at most `maxMs`): the app's last words,
   * printed while a hook answered, travel on another channel than the answer and may still be on their way.
   */
  async settle(vmId: string, quietMs = 50, maxMs = 300): Promise<void> {
    const start = Date.now();
    const end = start + maxMs;
    for (;;) {
      const wait = Math.max(this.lastData.get(vmId) ?? 0, start) + quietMs - Date.now();
      if (wait <= 0 || Date.now() >= end || !this.attached.has(vmId)) return;
      await new Promise((r) => setTimeout(r, Math.min(wait, end - Date.now())));
    }
  }

  /** No more output will come for this VM: its file is closed and followers end. */
  end(vmId: string): void {
    this.attached.get(vmId)?.();
    this.attached.delete(vmId);
    this.lastData.delete(vmId);
    this.live.emit(`${vmId}:end`);
  }

  /** Writes the log so far to `write`, then (if `follow`) live output until the VM ends or `signal` aborts. */
  async stream(vmId: string, opts: { follow: boolean; isLive: () => Promise<boolean>; signal: AbortSignal }, write: (chunk: Buffer) => void): Promise<void> {
    const file = this.file(vmId);
    const pending: Array<[Buffer, number]> = [];
    let relay: (b: Buffer, end: number) => void = (b, end) => pending.push([b, end]);
    const onData = (b: Buffer, end: number): void => relay(b, end);
    let wake: (() => void) | undefined;
    let ended = false;
    const onEnd = (): void => {
      ended = true;
      wake?.();
    };
    if (opts.follow) {
      this.live.on(vmId, onData);
      this.live.once(`${vmId}:end`, onEnd);
    }
    try {
      if (existsSync(`${file}.1`)) for await (const chunk of createReadStream(`${file}.1`)) write(chunk as Buffer);
      const size = existsSync(file) ? statSync(file).size : 0;
      if (size > 0) {
        for await (const chunk of createReadStream(file, { end: size - 1 })) write(chunk as Buffer);
      }
      if (!opts.follow) return;
      // Live chunks that ended within what the file already gave are not sent twice.
      for (const [b, end] of pending.splice(0)) if (end > size) write(b.subarray(Math.max(0, b.length - (end - size))));
      relay = (b) => write(b);
      // Asked before `ended` is read: the VM may end while the answer comes.
      const live = await opts.isLive();
      if (ended || !live) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
        opts.signal.addEventListener('abort', () => resolve(), { once: true });
        if (opts.signal.aborted) resolve();
      });
    } finally {
      this.live.removeListener(vmId, onData);
      this.live.removeListener(`${vmId}:end`, onEnd);
    }
  }
}

export interface PruneLimits {
  /** Files not written for this long go. */
  maxAgeMs: number;
  /** Then the oldest go until what is left holds at most this. */
  maxTotalBytes: number;
}

/**
 * Removes the files of `dir` that `keep` does not claim once they are older
 * than the limit, then the oldest of them until the folder is within its
 * bound. Returns how many went.
 */
export function pruneDir(dir: string, limits: PruneLimits, keep: (name: string) => boolean = () => false, now = Date.now()): number {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const files = names
    .map((name) => {
      try {
        const st = statSync(path.join(dir, name));
        return st.isFile() ? { name, bytes: st.size, mtime: st.mtimeMs } : undefined;
      } catch {
        return undefined;
      }
    })
    .filter((f): f is { name: string; bytes: number; mtime: number } => f !== undefined)
    .sort((a, b) => a.mtime - b.mtime);
  let total = files.reduce((sum, f) => sum + f.bytes, 0);
  let removed = 0;
  for (const f of files) {
    if (keep(f.name)) continue;
    if (now - f.mtime < limits.maxAgeMs && total <= limits.maxTotalBytes) continue;
    rmSync(path.join(dir, f.name), { force: true });
    total -= f.bytes;
    removed++;
  }
  return removed;
}
