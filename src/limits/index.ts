/**
 * Rate limits as token buckets, shared by the API (per caller and operation)
 * and the endpoint proxy (per MicroVM). Beyond a bucket's rate the caller
 * gets THROTTLED (429 ThrottlingException) with the seconds to wait.
 */
import { CellaError } from '../contract/index.js';

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets by key: `rate` per second sustained, `rate` at once. */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Takes one token from `key`'s bucket, or throws THROTTLED saying when to retry. */
  take(key: string, rate: number, message: string, quotaCode: string): void {
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: rate, at: t };
    b.tokens = Math.min(rate, b.tokens + ((t - b.at) / 1000) * rate);
    b.at = t;
    this.buckets.set(key, b);
    if (b.tokens < 1) {
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - b.tokens) / rate));
      throw new CellaError('THROTTLED', message, { details: { retryAfterSeconds, serviceCode: 'cella', quotaCode } });
    }
    b.tokens -= 1;
  }

  /** Forgets a key (its owner is gone). */
  drop(key: string): void {
    this.buckets.delete(key);
  }
}
