/**
 * One declarative map per table: each field of the record, its column, and
 * how its value is kept there (its kind). Rows are written and read through
 * the map by every Store (SQLite and in-memory alike), so there is no
 * hand-written row mapper or hand-listed INSERT to fall out of step.
 */

/** A value as the database keeps it. */
export type SqlValue = string | number | Buffer | null;

/** A row keyed by column name, as the database returns it. */
export type Row = Record<string, unknown>;

export interface Column<T> {
  readonly name: string;
  encode(value: T): SqlValue;
  decode(value: unknown): T;
}

/** Every field of R, each with its column. */
export type Columns<R> = { readonly [K in keyof R]-?: Column<R[K]> };

export interface Table<R> {
  readonly name: string;
  readonly columns: Columns<R>;
  /** The fields of the primary key. */
  readonly key: readonly (keyof R & string)[];
  /** The fields a put of an existing key replaces (an upsert); without it, a put of an existing key is a duplicate. */
  readonly mutable?: readonly (keyof R & string)[];
}

// The kinds. Scalars come back as SQLite stored them; the schema's column types say what that is.
export const text = <T extends string = string>(name: string): Column<T> => ({ name, encode: (v) => v, decode: (v) => v as T });
export const int = (name: string): Column<number> => ({ name, encode: (v) => v, decode: (v) => v as number });
/** A number that need not be whole (REAL). */
export const real = int;
export const json = <T>(name: string): Column<T> => ({ name, encode: (v) => JSON.stringify(v), decode: (v) => JSON.parse(v as string) as T });
/** 0 or 1 in an INTEGER column. */
export const bool = (name: string): Column<boolean> => ({ name, encode: (v) => (v ? 1 : 0), decode: (v) => v === 1 });
/** Copied both ways: a caller's buffer is never shared with the store. */
export const blob = (name: string): Column<Buffer> => ({ name, encode: (v) => Buffer.from(v), decode: (v) => Buffer.from(v as Uint8Array) });

export function nullable<T>(c: Column<T>): Column<T | null> {
  return { name: c.name, encode: (v) => (v === null ? null : c.encode(v)), decode: (v) => (v === null || v === undefined ? null : c.decode(v)) };
}

export function fieldsOf<R>(t: Table<R>): (keyof R & string)[] {
  // The map lists every field of R (Columns<R> has no optional keys), so its keys are R's.
  return Object.keys(t.columns) as (keyof R & string)[];
}

export function encodeRow<R>(t: Table<R>, rec: R): Record<string, SqlValue> {
  const row: Record<string, SqlValue> = {};
  for (const f of fieldsOf(t)) row[t.columns[f].name] = t.columns[f].encode(rec[f]);
  return row;
}

export function decodeRow<R>(t: Table<R>, row: Row): R {
  const rec: Partial<R> = {};
  for (const f of fieldsOf(t)) rec[f] = t.columns[f].decode(row[t.columns[f].name]);
  // Every field was just set from the map, which covers all of R.
  return rec as R;
}

/** Encodes the fields a patch sets (undefined ones are left as they are). */
export function encodePatch<R>(t: Table<R>, patch: NoInfer<Partial<R>>): Array<[column: string, value: SqlValue]> {
  const out: Array<[string, SqlValue]> = [];
  for (const f of fieldsOf(t)) {
    const v = patch[f];
    if (v !== undefined) out.push([t.columns[f].name, t.columns[f].encode(v)]);
  }
  return out;
}
