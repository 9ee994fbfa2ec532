/**
 * clientToken: a request that carries one makes its resource once. A repeat
 * with the same parameters answers what the first made; the same token with
 * other parameters is IDEMPOTENCY_CONFLICT.
 */
import { createHash } from 'node:crypto';
import { CellaError } from '../contract/index.js';
import type { Store, Tx } from '../store/index.js';

export type Idempotent = { clientToken?: string } & Record<string, unknown>;

/**
 * Makes a request's resource once: a repeat answers what the first made
 * (`replay`, its id). `prepare` runs outside the transaction (checks,
 * reads); `make` runs in it, with the token's record, after the token is
 * looked up again there: of two requests with one token at once, the second
 * replays the first.
 */
export async function once<P, T>(
  store: Store,
  scope: string,
  body: Idempotent,
  prepare: () => P | Promise<P>,
  make: (tx: Tx, prepared: P) => Promise<T>,
  idOf: (made: T) => string,
): Promise<{ made: T } | { replay: string }> {
  const prior = await replayOf(store, scope, body);
  if (prior) return { replay: prior };
  const prepared = await prepare();
  return store.tx(async (tx) => {
    const again = await replayOf(tx, scope, body);
    if (again) return { replay: again };
    const made = await make(tx, prepared);
    if (body.clientToken) await tx.putIdempotent(scope, body.clientToken, requestHash(body), idOf(made));
    return { made };
  });
}

/** The resource an earlier request with this clientToken made, if any; the token with other parameters is a conflict. */
async function replayOf(db: Tx, scope: string, body: Idempotent): Promise<string | undefined> {
  if (!body.clientToken) return undefined;
  const prior = await db.findIdempotent(scope, body.clientToken);
  if (!prior) return undefined;
  if (prior.hash !== requestHash(body)) {
    throw new CellaError('IDEMPOTENCY_CONFLICT', `clientToken ${body.clientToken} was already used with different parameters`, {
      details: { resourceId: body.clientToken, resourceType: 'ClientToken' },
    });
  }
  return prior.resourceId;
}

/** Stable over key order, so the same request always hashes the same. */
function requestHash(body: Record<string, unknown>): string {
  const canon = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .filter((k) => k !== 'clientToken')
            .map((k) => [k, canon((v as Record<string, unknown>)[k])]),
        )
      : Array.isArray(v)
        ? v.map(canon)
        : v;
  return createHash('sha256')
    .update(JSON.stringify(canon(body)))
    .digest('hex');
}
