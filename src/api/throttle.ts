/**
 * Per caller and operation token buckets: the contract's API rates (§7:
 * rate/burst per second), multiplied by the server's `apiRateScale`
 * (default 10: a self-hosted box is one tenant's; 0 turns throttling off).
 * Beyond them the API answers 429 ThrottlingException with Retry-After.
 */
import { CellaError } from '../errors/index.js';
import type { Operation } from './routes.js';

/** requests per second, sustained and burst; operations not listed get DEFAULT_RATE. */
export const CONTRACT_RATES: Partial<Record<Operation, number>> = {
  RunMicrovm: 5,
  ResumeMicrovm: 5,
  SuspendMicrovm: 2,
  TerminateMicrovm: 10,
  GetMicrovm: 100,
  CreateMicrovmAuthToken: 50,
  CreateMicrovmShellAuthToken: 5,
};
const DEFAULT_RATE = 100;

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

export class Throttle {
  private readonly buckets: TokenBuckets;

  constructor(
    private readonly scale: number,
    now: () => number = Date.now,
  ) {
    this.buckets = new TokenBuckets(now);
  }

  /** Takes one request of `op` for `caller`, or throws THROTTLED saying when to retry. */
  take(caller: string, op: Operation): void {
    if (this.scale <= 0) return;
    const rate = (CONTRACT_RATES[op] ?? DEFAULT_RATE) * this.scale;
    this.buckets.take(`${caller}\0${op}`, rate, `${op} is limited to ${rate} requests per second per caller`, `api-rate-${op}`);
  }
}
