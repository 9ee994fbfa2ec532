/**
 * Per caller and operation token buckets: the contract's API rates (§7:
 * rate/burst per second), multiplied by the server's `apiRateScale`
 * (default 10: a self-hosted box is one tenant's; 0 turns throttling off).
 * Beyond them the API answers 429 ThrottlingException with Retry-After.
 */
import type { Operation } from '../contract/index.js';
import { TokenBuckets } from '../limits/index.js';

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
