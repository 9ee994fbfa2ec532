/**
 * The one codec for every List's `nextToken`: URL-safe base64 of the JSON
 * `[list, position]`. A List accepts only a token in the exact form it
 * issues, naming that List and holding a position of the List's shape;
 * anything else is refused, never read as "from the start".
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { CellaError } from '../contract/index.js';

const Closed = { additionalProperties: false } as const;

/** A place in a list held in memory: the index of the next item. */
export const OffsetPosition = Type.Object({ o: Type.Integer({ minimum: 1 }) }, Closed);
/** A place in the MicroVMs, oldest first: the last item's creation time and id. */
export const VmPosition = Type.Object({ c: Type.Integer({ minimum: 0 }), i: Type.String({ minLength: 1 }) }, Closed);
/** A place in a list ordered by name: the last item's name. */
export const NamePosition = Type.Object({ n: Type.String({ minLength: 1 }) }, Closed);

const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function encodeCursor<T extends TSchema>(list: string, shape: T, position: Static<T>): string {
  // A position that would not decode is a bug here, not the caller's mistake.
  if (!Value.Check(shape, position)) throw new Error(`cursor of ${list}: position ${JSON.stringify(position)} does not fit its shape`);
  return Buffer.from(JSON.stringify([list, position])).toString('base64url');
}

/** The position in `token`, or INVALID_ARGUMENT if `list` did not issue it. */
export function decodeCursor<T extends TSchema>(list: string, shape: T, token: string): Static<T> {
  const refuse = (): CellaError => new CellaError('INVALID_ARGUMENT', `nextToken is not one that ${list} issued: pass back the nextToken of the previous page`);
  if (!BASE64URL.test(token)) throw refuse();
  const bytes = Buffer.from(token, 'base64url');
  // Only the canonical spelling: Node's decoder skips stray characters and trailing bits.
  if (bytes.toString('base64url') !== token) throw refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || parsed[0] !== list || !Value.Check(shape, parsed[1])) throw refuse();
  return parsed[1];
}
