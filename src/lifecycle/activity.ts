/** Endpoint activity and open streams per VM, in memory: what the idle policy measures idleness by. */
import type { VmRecord } from '../store/index.js';

export class Activity {
  /** Last endpoint activity per VM. */
  private readonly last = new Map<string, number>();
  private readonly streams = new Map<string, number>();

  constructor(private readonly now: () => number) {}

  /** Endpoint traffic: postpones the idle deadline (in memory; the timer writes it when it fires). */
  touch(id: string): void {
    this.last.set(id, this.now());
  }

  /** An open stream counts as activity for as long as it is open; call the result when it closes. */
  holdActive(id: string): () => void {
    this.streams.set(id, (this.streams.get(id) ?? 0) + 1);
    this.touch(id);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.touch(id);
      const n = (this.streams.get(id) ?? 1) - 1;
      if (n <= 0) this.streams.delete(id);
      else this.streams.set(id, n);
    };
  }

  /** Whether a stream to the VM is open: an open stream keeps it from idling. */
  streaming(id: string): boolean {
    return (this.streams.get(id) ?? 0) > 0;
  }

  /** The idle deadline the VM's policy gives from its last activity, or null without a policy. */
  idleDeadline(rec: VmRecord): number | null {
    const idle = rec.spec.idlePolicy?.maxIdleDurationSeconds;
    return idle === undefined ? null : (this.last.get(rec.id) ?? this.now()) + idle * 1000;
  }

  forget(id: string): void {
    this.last.delete(id);
  }
}
