/** Per-VM queues: operations on one VM never interleave; operations on different VMs run side by side. */
import { isCellaError } from '../contract/index.js';

export class VmQueues {
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly log: (line: string) => void) {}

  /** Runs `job` after every job queued for `id` so far, whether they failed or not. */
  enqueue<T>(id: string, job: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const p = prev.then(job, job);
    const tail = p.catch((err: unknown) => {
      if (!isCellaError(err)) this.log(`MicroVM ${id}: ${(err as Error).stack ?? String(err)}`);
    });
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return p;
  }

  /** Waits for the jobs queued so far. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.queues.values()]);
  }
}
