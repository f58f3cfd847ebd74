/**
 * The tokenizer for rule text, following the quoting of iptables-restore 1.8.9
 * (`add_param_to_argv` in iptables/xshared.c) and of iptables-save (`xtables_save_string`).
 *
 * - Spaces and tabs separate tokens. Runs of them count as one separator.
 * - A double quote opens a quoted section. Inside it, a backslash takes the next character
 *   literally (iptables-save escapes `"`, `'` and `\`), and the next double quote closes the
 *   section and ends the token, so `""` is an empty token.
 * - Outside quotes, backslashes and single quotes are ordinary characters.
 *
 * The lexer imports nothing above it, so both the dump parser and the rule canonicaliser use it.
 */
import { IptablesError, quoteForMessage } from "../errors";

/** One token of a rule line. */
export interface Token {
  /** The token with quotes removed and escapes resolved. */
  readonly value: string;
  /** 0-based offset of the token's first character in the line. */
  readonly start: number;
  /** Whether any part of the token was quoted. */
  readonly quoted: boolean;
}

/**
 * Splits one line of rule text into tokens.
 *
 * Throws an IptablesError with code PARSE_UNTERMINATED_QUOTE when a quoted section is not
 * closed; `details.column` is the 1-based column of the opening quote.
 */
export function tokenize(line: string): Token[] {
  const values: string[] = [];
  const quoted: boolean[] = [];
  const starts: number[] = [];
  scanTokens(line, values, quoted, starts);
  const tokens: Token[] = new Array<Token>(values.length);
  for (let i = 0; i < values.length; i++) {
    tokens[i] = { value: values[i], start: starts[i], quoted: quoted[i] };
  }
  return tokens;
}

/** Scans the tokens of a line into parallel arrays. Throws like `tokenize`. */
function scanTokens(
  line: string,
  values: string[],
  quotedFlags: boolean[],
  starts: number[],
): void {
  const length = line.length;
  let i = 0;

  while (i < length) {
    let code = line.charCodeAt(i);
    if (code === 32 || code === 9) {
      i++;
      continue;
    }

    const start = i;
    let value = "";
    let quoted = false;
    let runStart = i;

    // Scan one token. Unquoted runs are copied with one slice, which keeps long dumps fast.
    while (i < length) {
      code = line.charCodeAt(i);
      if (code === 32 || code === 9) break;
      if (code !== 34) {
        i++;
        continue;
      }

      value += line.slice(runStart, i);
      quoted = true;
      const quoteColumn = i;
      i++;
      let closed = false;
      while (i < length) {
        // Copy the run up to the next quote or backslash in one slice.
        let end = i;
        while (end < length) {
          code = line.charCodeAt(end);
          if (code === 34 || code === 92) break;
          end++;
        }
        value += line.slice(i, end);
        i = end;
        if (i >= length) break;
        if (code === 92 && i + 1 < length) {
          value += line[i + 1];
          i += 2;
        } else if (code === 34) {
          closed = true;
          i++;
          break;
        } else {
          value += line[i];
          i++;
        }
      }
      if (!closed) {
        throw new IptablesError(
          "PARSE_UNTERMINATED_QUOTE",
          `the quote opened at column ${quoteColumn + 1} is never closed in ` +
            `${quoteForMessage(line)}; close it with a double quote, and escape a literal ` +
            `double quote inside it as \\"`,
          { details: { column: quoteColumn + 1, excerpt: excerptAt(line, quoteColumn) } },
        );
      }
      // iptables-restore ends the token at the closing quote, even if text follows.
      runStart = i;
      break;
    }

    value += line.slice(runStart, i);
    values.push(value);
    quotedFlags.push(quoted);
    starts.push(start);
  }
}

/** Token values of a line and, when the line has quotes, which of them were quoted. */
export interface SplitLine {
  readonly values: string[];
  readonly quoted?: readonly boolean[];
}

/** Splits one line of rule text into token values and their quoting. See `tokenize`. */
export function splitArgsQuoted(line: string): SplitLine {
  const plain = splitPlain(line);
  if (plain !== undefined) return { values: plain };
  const values: string[] = [];
  const quoted: boolean[] = [];
  scanTokens(line, values, quoted, []);
  return { values, quoted };
}

/** Splits one line of rule text into token values. See `tokenize`. */
export function splitArgs(line: string): string[] {
  const plain = splitPlain(line);
  if (plain !== undefined) return plain;
  const values: string[] = [];
  scanTokens(line, values, [], []);
  return values;
}

/**
 * Splits a line of single-space-separated words without quotes or tabs in one pass, which is
 * what almost every line of a dump is; returns undefined for any other line.
 */
function splitPlain(line: string): string[] | undefined {
  const values: string[] = [];
  const length = line.length;
  let start = 0;
  for (let i = 0; i < length; i++) {
    const code = line.charCodeAt(i);
    if (code === 32) {
      if (i === start) return undefined;
      values.push(line.slice(start, i));
      start = i + 1;
    } else if (code === 34 || code === 9) {
      return undefined;
    }
  }
  if (start < length) values.push(line.slice(start));
  else if (length > 0) return undefined;
  return values;
}

/** Characters iptables-save prints without quotes (`xtables_save_string` in libxtables). */
const BARE_WORD = /^[A-Za-z0-9_-]+$/;

/**
 * Quotes a value as iptables-save prints it: bare when it is a non-empty run of letters,
 * digits, `_` and `-`; otherwise in double quotes with `"`, `'` and `\` escaped by a backslash.
 */
export function quoteArg(value: string): string {
  if (BARE_WORD.test(value)) return value;
  return `"${value.replace(/["'\\]/g, (ch) => `\\${ch}`)}"`;
}

/**
 * 1 for each ASCII character that `quoteArg` prints without quoting (see BARE_WORD), by code.
 * A table lookup costs less than a call per character before V8 optimises the callers.
 */
const BARE_WORD_CODES = new Uint8Array(128);
for (let code = 0; code < 128; code++) {
  const bare =
    (code >= 48 && code <= 57) ||
    (code >= 65 && code <= 90) ||
    (code >= 97 && code <= 122) ||
    code === 95 ||
    code === 45;
  BARE_WORD_CODES[code] = bare ? 1 : 0;
}

/**
 * Returns the length of the value that `text.slice(start, end)` stands for when it is written
 * exactly as `quoteArg` prints that value, or -1 when `quoteArg` would print the value
 * differently (or the text is not one token).
 */
export function savedArgLength(text: string, start: number, end: number): number {
  if (text.charCodeAt(start) !== 34 /* '"' */) {
    if (end <= start) return -1;
    for (let i = start; i < end; i++) if (BARE_WORD_CODES[text.charCodeAt(i)] !== 1) return -1;
    return end - start;
  }
  if (end - start < 2 || text.charCodeAt(end - 1) !== 34) return -1;
  let length = 0;
  let bare = true;
  for (let i = start + 1; i < end - 1; i++) {
    let code = text.charCodeAt(i);
    if (code === 34 || code === 39 /* "'" */) return -1;
    if (code === 92 /* "\\" */) {
      code = text.charCodeAt(++i);
      if (i >= end - 1 || (code !== 34 && code !== 39 && code !== 92)) return -1;
    }
    if (bare && BARE_WORD_CODES[code] !== 1) bare = false;
    length++;
  }
  // quoteArg prints a non-empty bare word without quotes.
  return bare && length > 0 ? -1 : length;
}

/** Joins values into rule text that `tokenize` splits back into the same values. */
export function joinArgs(values: readonly string[]): string {
  return values.map(quoteArg).join(" ");
}

/** Returns the text around a 0-based column with a caret line under it, for error messages. */
export function excerptAt(line: string, column: number, width = 60): string {
  const from = Math.max(0, column - Math.floor(width / 2));
  const to = Math.min(line.length, from + width);
  const prefix = from > 0 ? "..." : "";
  const suffix = to < line.length ? "..." : "";
  const text = `${prefix}${line.slice(from, to)}${suffix}`;
  const caret = " ".repeat(prefix.length + column - from) + "^";
  return `${text}\n${caret}`;
}
