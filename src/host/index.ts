import { execFile } from 'node:child_process';
import { CellaError, type ErrorCode } from '../contract/index.js';

/** Runs a host command with an argument array (never a shell); rejects with its stderr. */
export function run(file: string, args: string[], opts: { input?: string; code?: ErrorCode; timeoutMs?: number; cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const detail = (stderr || err.message).trim();
        reject(new CellaError(opts.code ?? 'COMMAND_FAILED', `${file} ${args.join(' ')}: ${detail}`, { cause: err }));
      } else resolve(stdout);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export { CRASH_POINTS, crashPoint, type CrashPoint } from './crash.js';
