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

export class Throttle {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly scale: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one request of `op` for `caller`, or throws THROTTLED saying when to retry. */
  take(caller: string, op: Operation): void {
    if (this.scale <= 0) return;
    const rate = (CONTRACT_RATES[op] ?? DEFAULT_RATE) * this.scale;
    const key = `${caller}\0${op}`;
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: rate, at: t };
    b.tokens = Math.min(rate, b.tokens + ((t - b.at) / 1000) * rate);
    b.at = t;
    this.buckets.set(key, b);
    if (b.tokens < 1) {
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - b.tokens) / rate));
      throw new CellaError('THROTTLED', `${op} is limited to ${rate} requests per second per caller`, {
        details: { retryAfterSeconds, serviceCode: 'cella', quotaCode: `api-rate-${op}` },
      });
    }
    b.tokens -= 1;
  }
}
