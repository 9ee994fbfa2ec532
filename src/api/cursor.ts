/**
 * The one cursor codec for every List (the wire calls a cursor `nextToken`):
 * URL-safe base64 of the JSON `[list, position]`. A List accepts only a
 * cursor in the exact form it issues, naming that List and holding a
 * position of the List's shape; anything else is refused, never read as
 * "from the start". Below it, the two ways a List makes its pages.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { CellaError, type Operation } from '../contract/index.js';

const Closed = { additionalProperties: false } as const;

/** A place in a list held in memory: the index of the next item. */
export const OffsetPosition = Type.Object({ o: Type.Integer({ minimum: 1 }) }, Closed);
/** A place in the MicroVMs, oldest first: the last item's creation time and id. */
export const VmPosition = Type.Object({ c: Type.Integer({ minimum: 0 }), i: Type.String({ minLength: 1 }) }, Closed);
/** A place in a list ordered by name: the last item's name. */
export const NamePosition = Type.Object({ n: Type.String({ minLength: 1 }) }, Closed);

/** What each List's cursor holds: its place in the List's order. */
export const CURSORS = {
  ListMicrovms: VmPosition,
  ListMicrovmImages: NamePosition,
  ListMicrovmImageVersions: OffsetPosition,
  ListMicrovmImageBuilds: OffsetPosition,
  ListManagedMicrovmImages: OffsetPosition,
  ListManagedMicrovmImageVersions: OffsetPosition,
  ListNetworkConnectors: OffsetPosition,
  ListAccessKeys: OffsetPosition,
} as const satisfies Record<Exclude<Extract<Operation, `List${string}`>, 'ListTags'>, TSchema>;
/** The paged Lists (ListTags answers one map). */
export type Listing = keyof typeof CURSORS;
export type PositionOf<L extends Listing> = Static<(typeof CURSORS)[L]>;
type OffsetListing = { [L in Listing]: (typeof CURSORS)[L] extends typeof OffsetPosition ? L : never }[Listing];

/** A List's answer: a page of items and, while more is left, the cursor to the next. */
export interface Page<U> {
  items: U[];
  nextToken?: string;
}

/** Where a request to `op` starts: the position in its cursor, or undefined for an operation that is no List or a first page. */
export function startOf(op: Operation, cursor: string | undefined): unknown {
  const shape: TSchema | undefined = (CURSORS as Partial<Record<Operation, TSchema>>)[op];
  return shape && cursor !== undefined ? decodeCursor(op, shape, cursor) : undefined;
}

/** A page of a short list held in memory, in its order; the cursor holds the offset of the next item. */
export function offsetPage<T, U>(list: OffsetListing, after: PositionOf<OffsetListing> | undefined, limit: number, all: T[], view: (t: T) => U): Page<U> {
  const offset = after?.o ?? 0;
  const items = all.slice(offset, offset + limit).map(view);
  return { items, ...(offset + limit < all.length ? { nextToken: encodeCursor(list, OffsetPosition, { o: offset + limit }) } : {}) };
}

/** A page of a list read in order from `after`, `fetched` holding one item more than `limit` when more is left; the cursor holds the last item's place. */
export function keysetPage<L extends Listing, T>(list: L, limit: number, fetched: T[], positionOf: (last: T) => PositionOf<L>): Page<T> {
  const items = fetched.slice(0, limit);
  const last = items[items.length - 1];
  return { items, ...(fetched.length > limit && last !== undefined ? { nextToken: encodeCursor(list, CURSORS[list], positionOf(last)) } : {}) };
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function encodeCursor<T extends TSchema>(list: string, shape: T, position: Static<T>): string {
  // A position that would not decode is a bug here, not the caller's mistake.
  if (!Value.Check(shape, position)) throw new Error(`cursor of ${list}: position ${JSON.stringify(position)} does not fit its shape`);
  return Buffer.from(JSON.stringify([list, position])).toString('base64url');
}

/** The position in `cursor`, or INVALID_ARGUMENT if `list` did not issue it. */
export function decodeCursor<T extends TSchema>(list: string, shape: T, cursor: string): Static<T> {
  const refuse = (): CellaError => new CellaError('INVALID_ARGUMENT', `nextToken is not one that ${list} issued: pass back the nextToken of the previous page`);
  if (!BASE64URL.test(cursor)) throw refuse();
  const bytes = Buffer.from(cursor, 'base64url');
  // Only the canonical spelling: Node's decoder skips stray characters and trailing bits.
  if (bytes.toString('base64url') !== cursor) throw refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || parsed[0] !== list || !Value.Check(shape, parsed[1])) throw refuse();
  return parsed[1];
}
