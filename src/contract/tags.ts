/**
 * Tags on images and connectors: the limits Lambda's tag API holds them
 * to (at most 50 per resource; keys 1–128 and values 0–256 characters of
 * letters, digits, spaces and `_ . : / = + - @`; keys starting with `aws:`
 * are reserved). Checked in one place for CreateMicrovmImage and TagResource.
 */
import { CellaError } from './errors.js';

export const MAX_TAGS = 50;
export const MAX_TAG_KEY_CHARS = 128;
export const MAX_TAG_VALUE_CHARS = 256;

const CHARS = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

/** A tag key (also as UntagResource's `tagKeys` names it): INVALID_ARGUMENT if it breaks a limit. */
export function checkTagKey(key: string, what: string): void {
  const n = [...key].length;
  if (n < 1 || n > MAX_TAG_KEY_CHARS)
    throw new CellaError('INVALID_ARGUMENT', `${what}: tag key "${key.slice(0, 140)}" must be 1 to ${MAX_TAG_KEY_CHARS} characters`);
  if (!CHARS.test(key)) throw new CellaError('INVALID_ARGUMENT', `${what}: tag key "${key}" may hold only letters, digits, spaces and _ . : / = + - @`);
  if (/^aws:/i.test(key)) throw new CellaError('INVALID_ARGUMENT', `${what}: tag key "${key}" starts with aws:, which is reserved`);
}

/** A resource's whole set of tags: INVALID_ARGUMENT naming the first limit it breaks. */
export function checkTags(tags: Record<string, string>, what: string): void {
  const keys = Object.keys(tags);
  if (keys.length > MAX_TAGS) throw new CellaError('INVALID_ARGUMENT', `${what}: ${keys.length} tags; a resource holds at most ${MAX_TAGS}`);
  for (const key of keys) {
    checkTagKey(key, what);
    const value = tags[key] as string;
    if ([...value].length > MAX_TAG_VALUE_CHARS)
      throw new CellaError('INVALID_ARGUMENT', `${what}: the value of tag "${key}" is longer than ${MAX_TAG_VALUE_CHARS} characters`);
    if (!CHARS.test(value))
      throw new CellaError('INVALID_ARGUMENT', `${what}: the value of tag "${key}" may hold only letters, digits, spaces and _ . : / = + - @`);
  }
}
