/**
 * The building blocks the contract's schema files share: bounded strings
 * and integers, closed objects, and the fields several resources carry.
 * Not exported by the door: callers see only the shapes built from them.
 */
import { Type } from '@sinclair/typebox';

export const Str = (min: number, max: number, extra: Record<string, unknown> = {}) => Type.String({ minLength: min, maxLength: max, ...extra });
export const Int = (min: number, max?: number) => Type.Integer(max === undefined ? { minimum: min } : { minimum: min, maximum: max });
export const Port = Int(1, 65535);
export const Closed = { additionalProperties: false } as const;
export const VersionString = Str(1, 2048, { pattern: '^\\S+$' });
const ConnectorArn = Str(1, 2048, { pattern: '^arn:' });
export const ConnectorArns = Type.Array(ConnectorArn, { maxItems: 10 });
export const Tags = Type.Record(Str(1, 128), Type.String({ maxLength: 256 }), { maxProperties: 50 });
/** A list's paging fields, as every List operation takes them. */
export const Paging = { maxResults: Type.Optional(Int(1, 50)), nextToken: Type.Optional(Str(1, 2048)) };
