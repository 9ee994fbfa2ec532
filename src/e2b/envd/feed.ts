/**
 * A queue between a producer of events (a guest process, a watch) and one
 * server stream: the stream waits for the next event, a keepalive when the
 * producer is silent for an interval, or the end of the request.
 */
export type Next<T> = { kind: 'value'; value: T } | { kind: 'idle' } | { kind: 'end'; error?: Error };

export class Feed<T> {
  private readonly items: T[] = [];
  private ended: { error?: Error } | undefined;
  private wake: (() => void) | undefined;

  push(value: T): void {
    if (this.ended) return;
    this.items.push(value);
    this.wake?.();
  }

  /** No more values after those queued; with `error`, the stream fails once they are taken. */
  end(error?: Error): void {
    this.ended ??= error ? { error } : {};
    this.wake?.();
  }

  /** The next value; 'idle' after `idleMs` without one (when given); 'end' once ended and drained, or when `signal` aborts. */
  async next(signal: AbortSignal, idleMs?: number): Promise<Next<T>> {
    for (;;) {
      if (this.items.length) return { kind: 'value', value: this.items.shift() as T };
      if (this.ended) return { kind: 'end', ...this.ended };
      if (signal.aborted) return { kind: 'end' };
      let timer: NodeJS.Timeout | undefined;
      let idle = false;
      let onAbort: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        onAbort = resolve;
        signal.addEventListener('abort', onAbort, { once: true });
        if (idleMs !== undefined) timer = setTimeout(() => ((idle = true), resolve()), idleMs);
      });
      this.wake = undefined;
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
      if (idle && !this.items.length && !this.ended) return { kind: 'idle' };
    }
  }
}
