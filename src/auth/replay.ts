/**
 * Which SigV4 signatures were already served, so a captured request cannot
 * be sent again. A signature is only valid within the skew window around its
 * `x-amz-date`, so it is remembered that long and no longer; memory is
 * bounded by `max` entries. When full, the oldest is forgotten and the
 * guard raises its floor to that entry's date: anything signed at or before
 * the floor is refused (as too old), so a forgotten signature can never
 * come back.
 */
export type Claim = 'fresh' | 'replayed' | 'forgotten';

export class ReplayGuard {
  /** Signature → its x-amz-date (ms), in the order they were served. */
  private readonly seen = new Map<string, number>();
  private floor = -Infinity;

  constructor(
    private readonly windowMs: number,
    private readonly max: number,
  ) {}

  /** Records `signature` as served unless it was (or may have been) served already. */
  claim(signature: string, signedAt: number, now: number): Claim {
    for (const [sig, at] of this.seen) {
      if (at + this.windowMs >= now) break;
      this.seen.delete(sig);
    }
    if (this.seen.has(signature)) return 'replayed';
    if (signedAt <= this.floor) return 'forgotten';
    if (this.seen.size >= this.max) {
      const [oldest, at] = this.seen.entries().next().value as [string, number];
      this.seen.delete(oldest);
      this.floor = Math.max(this.floor, at);
      if (signedAt <= this.floor) return 'forgotten';
    }
    this.seen.set(signature, signedAt);
    return 'fresh';
  }

  get size(): number {
    return this.seen.size;
  }
}
