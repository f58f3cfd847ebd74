/**
 * The semantic rule model: what the kernel holds for one rule, independent of how it was
 * spelled. `canonical.ts` builds it from command-line options and prints it as iptables-save
 * does; match and target modules plug into it through the interfaces below.
 */
import { IptablesError, quoteForMessage } from "../errors";
import type { Address } from "./addresses";
import type { Backend, Family, TableName } from "./types";

/** The context a rule is read and printed in. */
export interface RuleEnv {
  readonly family: Family;
  readonly table: TableName;
  readonly backend: Backend;
  /** The chain the rule is appended to. */
  readonly chain: string;
}

/** An address match (`-s`, `-d`) after masking. */
export interface NetworkMatch {
  readonly address: Address;
  readonly mask: Address;
  readonly invert: boolean;
}

/** An interface match (`-i`, `-o`); a trailing "+" matches every name with that prefix. */
export interface InterfaceMatch {
  readonly name: string;
  readonly invert: boolean;
}

/** The rule's protocol (`-p`) by number; 0 means any and is never printed. */
export interface ProtocolMatch {
  readonly number: number;
  readonly invert: boolean;
}

/** The part of a rule the kernel checks before any match module. */
export interface RuleHeader {
  readonly source?: NetworkMatch;
  readonly destination?: NetworkMatch;
  readonly inInterface?: InterfaceMatch;
  readonly outInterface?: InterfaceMatch;
  readonly protocol?: ProtocolMatch;
  /** IPv4 `-f` (second and later fragments), with its negation. */
  readonly fragment?: { readonly invert: boolean };
}

/** Tells how an option takes arguments and whether `!` may precede it. */
export interface OptionSpec {
  /** The canonical option name without dashes; aliases map to it. */
  readonly name: string;
  readonly args: 0 | 1 | 2;
  readonly invertible: boolean;
}

/**
 * One instance of a match module (one `-m NAME` in a rule). The canonicaliser feeds it the
 * options it owns, in command-line order, then calls `finish` once and `save` to print it.
 */
export interface MatchInstance {
  /** The module name as iptables-save prints it after `-m`. */
  readonly name: string;
  /** Options this instance accepts, by every spelling (without the leading dashes). */
  readonly options: ReadonlyMap<string, OptionSpec>;
  /** Applies one option. `args` has `spec.args` values. Throws a RULE_* IptablesError. */
  option(spec: OptionSpec, args: readonly string[], invert: boolean): void;
  /** Checks the finished match against the whole rule, as iptables and the kernel do. */
  finish(header: RuleHeader): void;
  /**
   * Returns the options as iptables-save prints them after `-m NAME`, each with its leading
   * space, or undefined when the backend keeps no trace of the match at all.
   */
  save(): string | undefined;
  /**
   * Returns a test for values of one option (by its canonical name), called after `save` on an
   * instance whose line printed back unchanged. A value passes only if this instance, with that
   * one value replaced, would accept it and print it back exactly as written (quotes included)
   * without changing anything else it prints. The test may rely on the instance's other options
   * only where those have no test of their own. Undefined when the option has no such test.
   */
  savedValueTest?(option: string): SavedValueTest | undefined;
}

/**
 * Tells whether `text.slice(start, end)`, one option value as a rule line writes it, passes a
 * `savedValueTest`. Tests take the line and bounds so that they need not copy the value.
 */
export type SavedValueTest = (text: string, start: number, end: number) => boolean;

/** One target (`-j`/`-g`) with its options; the same shape as a match. */
export interface TargetInstance {
  readonly name: string;
  readonly options: ReadonlyMap<string, OptionSpec>;
  option(spec: OptionSpec, args: readonly string[], invert: boolean): void;
  finish(header: RuleHeader): void;
  /** Returns the target options as iptables-save prints them after `-j NAME`. */
  save(): string;
  /** See `MatchInstance.savedValueTest`. */
  savedValueTest?(option: string): SavedValueTest | undefined;
}

/** Builds the option lookup of a module from `[names, args, invertible]` rows. */
export function optionTable(
  rows: ReadonlyArray<readonly [readonly string[], 0 | 1 | 2, boolean]>,
): ReadonlyMap<string, OptionSpec> {
  const table = new Map<string, OptionSpec>();
  for (const [names, args, invertible] of rows) {
    const spec: OptionSpec = { name: names[0], args, invertible };
    for (const name of names) table.set(name, spec);
  }
  return table;
}

/** Creates the error for an invalid option value. */
export function invalidValue(option: string, value: string, expected: string): IptablesError {
  return new IptablesError(
    "RULE_INVALID_VALUE",
    `--${option} ${quoteForMessage(value, 80)} is invalid: ${expected}`,
    { details: { option: `--${option}`, value } },
  );
}

/** Creates the error for a value outside the range the kernel or iptables accepts. */
export function outOfRange(option: string, value: string, range: string): IptablesError {
  return new IptablesError(
    "RULE_OUT_OF_RANGE",
    `--${option} ${quoteForMessage(value, 80)} is out of range: ${range}`,
    { details: { option: `--${option}`, value } },
  );
}

/** Creates the error for an option given twice where iptables allows it once. */
export function repeated(option: string): IptablesError {
  return new IptablesError(
    "RULE_SYNTAX",
    `--${option} is given twice; iptables accepts it once per match`,
    { details: { option: `--${option}` } },
  );
}

/** Creates the error for a combination iptables or the kernel rejects. */
export function invalidRule(option: string, reason: string): IptablesError {
  return new IptablesError("RULE_INVALID_VALUE", `--${option}: ${reason}`, {
    details: { option: `--${option}` },
  });
}

/**
 * Returns the number `text.slice(start, end)` writes in decimal without leading zeros, as
 * iptables-save prints numbers, or -1 when it is written otherwise or exceeds `max`.
 */
export function savedDecimal(text: string, start: number, end: number, max: number): number {
  if (end <= start || end - start > 10) return -1;
  if (text.charCodeAt(start) === 48 /* "0" */) return end - start === 1 ? 0 : -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value <= max ? value : -1;
}

/**
 * Tells whether `text.slice(start, end)` is a non-empty run of printable ASCII without spaces,
 * quotes, backslashes or "/", which iptables-save prints without quoting.
 */
export function isPlainName(text: string, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x21 || code > 0x7e || code === 34 || code === 39 || code === 47 || code === 92) {
      return false;
    }
  }
  return true;
}

/** Parses a C `strtoul` number in base 0 within [min, max], for option values. */
export function parseUnsigned(option: string, text: string, min: number, max: number): number {
  let value: number | undefined;
  if (/^0[xX][0-9a-fA-F]+$/.test(text)) value = Number.parseInt(text.slice(2), 16);
  else if (/^0[0-7]*$/.test(text))
    value = text.length === 1 ? 0 : Number.parseInt(text.slice(1), 8);
  else if (/^[1-9]\d*$/.test(text)) value = Number(text);
  if (value === undefined)
    throw invalidValue(option, text, `expected a number from ${min} to ${max}`);
  if (value < min || value > max) throw outOfRange(option, text, `use ${min} to ${max}`);
  return value;
}
