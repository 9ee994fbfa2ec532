/**
 * Docker's word processing for the instructions it substitutes in (moby's
 * shell lexer, `ProcessWord`): quote removal, escapes and `$VAR` expansion in
 * one pass. Single quotes are literal; inside double quotes the escape
 * character only escapes `"`, `$` and itself; `$` not followed by a name is
 * literal; an unset variable expands to ''.
 */

/** A variable's value, or undefined when it is not set. */
export type Lookup = (name: string) => string | undefined;

export class ExpandError extends Error {}

export function expandWord(word: string, lookup: Lookup, escapeChar = '\\'): string {
  return new Lexer(word, lookup, escapeChar).until(null);
}

const NAME = /[0-9]+|[A-Za-z_][A-Za-z0-9_]*/y;

class Lexer {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly lookup: Lookup,
    private readonly escapeChar: string,
  ) {}

  /** Processes up to `stop` (consumed) or the end; `stop` is '}' inside `${…}`. */
  until(stop: string | null): string {
    let out = '';
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos]!;
      if (ch === stop) {
        this.pos++;
        return out;
      }
      if (ch === "'") out += this.singleQuoted();
      else if (ch === '"') out += this.doubleQuoted();
      else if (ch === '$') out += this.dollar();
      else if (ch === this.escapeChar) {
        this.pos++;
        if (this.pos < this.text.length) out += this.text[this.pos++];
      } else {
        out += ch;
        this.pos++;
      }
    }
    if (stop !== null) throw new ExpandError(`missing '${stop}' in ${JSON.stringify(this.text)}`);
    return out;
  }

  private singleQuoted(): string {
    const end = this.text.indexOf("'", this.pos + 1);
    if (end < 0) throw new ExpandError(`unmatched single quote in ${JSON.stringify(this.text)}`);
    const out = this.text.slice(this.pos + 1, end);
    this.pos = end + 1;
    return out;
  }

  private doubleQuoted(): string {
    this.pos++;
    let out = '';
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos]!;
      if (ch === '"') {
        this.pos++;
        return out;
      }
      if (ch === '$') {
        out += this.dollar();
        continue;
      }
      this.pos++;
      const next = this.text[this.pos];
      if (ch === this.escapeChar && (next === '"' || next === '$' || next === this.escapeChar)) {
        out += next;
        this.pos++;
      } else {
        out += ch;
      }
    }
    throw new ExpandError(`unmatched double quote in ${JSON.stringify(this.text)}`);
  }

  private dollar(): string {
    this.pos++;
    if (this.text[this.pos] !== '{') {
      const name = this.name();
      return name === '' ? '$' : (this.lookup(name) ?? '');
    }
    this.pos++;
    const name = this.name();
    if (name === '') throw new ExpandError(`bad substitution in ${JSON.stringify(this.text)}`);
    const value = this.lookup(name);
    if (this.text[this.pos] === '}') {
      this.pos++;
      return value ?? '';
    }
    // `:-` and `:+` test for set and non-empty; `-` and `+` only for set.
    const colon = this.text[this.pos] === ':';
    if (colon) this.pos++;
    const op = this.text[this.pos];
    if (op === undefined) throw new ExpandError(`missing '}' in ${JSON.stringify(this.text)}`);
    if (op !== '-' && op !== '+') {
      throw new ExpandError(`unsupported substitution \${${name}${colon ? ':' : ''}${op}…} in ${JSON.stringify(this.text)}`);
    }
    this.pos++;
    const word = this.until('}');
    const set = value !== undefined && (!colon || value !== '');
    if (op === '-') return set ? value : word;
    return set ? word : '';
  }

  /** A variable name; positional parameters (`$1`) count as names and are never set. */
  private name(): string {
    NAME.lastIndex = this.pos;
    const match = NAME.exec(this.text);
    if (match === null) return '';
    this.pos += match[0].length;
    return match[0];
  }
}
