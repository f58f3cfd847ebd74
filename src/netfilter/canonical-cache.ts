/**
 * A cache of rule shapes whose lines are already canonical, so that reading back a dump of many
 * similar rules does not run the full canonicaliser on every line.
 *
 * When the full canonicaliser returns a line unchanged, `rememberCanonical` stores the line as a
 * template. The values of some options become slots, each with a test from the option's owner.
 * A test accepts only values the owner reads and prints back exactly as written, whatever the
 * other slots contain. Every other token keeps its exact text. A later line that is the template
 * with each slot filled by one token passing its test is canonical too:
 * - The canonicaliser reads both lines alike up to the first slot, where it takes the token as
 *   that option's value again (slot values never start with "-" and are never a lone "!").
 *   Nothing it decides later depends on a slot value except through the slot's own test, so
 *   it loads the same matches and target and gives every slot to the same option.
 * - Each slot's test then guarantees that its value prints back as written and changes
 *   nothing else, so the whole line prints back unchanged.
 * `isKnownCanonical` returns true only for such lines. Every other line, including every line
 * the canonicaliser would reject, takes the full path, so errors never come from here.
 */
import type { SavedValueTest } from "./model";
import { tokenize } from "./tokenize";

/**
 * A test of a slot's value. It must accept only one token as iptables-save prints it: no space,
 * tab or double quote outside a pair of quotes around the whole token.
 */
type SlotTest = SavedValueTest;

/** A remembered canonical line: `literals[0]`, slot 0, `literals[1]`, ..., `literals[n]`. */
interface Template {
  readonly literals: readonly string[];
  readonly tests: readonly SlotTest[];
}

/** Templates stored before the cache is emptied and starts again; a rule set has a few dozen. */
const MAX_TEMPLATES = 2048;
/** Templates per bucket; more come from untested values that vary from line to line. */
const MAX_TEMPLATES_PER_BUCKET = 16;
/** Longer lines are not remembered, which bounds the cache at about 4 MiB of template text. */
const MAX_LINE_LENGTH = 2048;
/** Rule contexts are numbered from 0 to 19: two families, five tables and two backends. */
const MAX_CONTEXTS = 32;

/**
 * Per rule context: templates by `keyHash` of the line's text up to its first possible slot.
 * Lines of different keys can share a bucket, and `fills` compares the whole text.
 */
const buckets: ReadonlyArray<Map<number, Template[]>> = Array.from(
  { length: MAX_CONTEXTS },
  () => new Map(),
);
let templateCount = 0;

const SPACE = 32;
const QUOTE = 34;
const BANG = 33;
const DASH = 45;
const BACKSLASH = 92;

/**
 * Returns where the first token that may be a slot starts: the first token after "-A CHAIN"
 * that follows an option other than -p, -m, -j and -g, does not start with "-" and is not a
 * lone "!". Returns the line's length when there is none, and -1 for a quote that never closes.
 * Only the bucket depends on this; a template still has to match the whole line.
 */
function firstSlotStart(line: string): number {
  const length = line.length;
  let previousStart = -1;
  let previousEnd = -1;
  let start = 0;
  for (let index = 0; start < length; index++) {
    const first = line.charCodeAt(start);
    let end: number;
    if (first === QUOTE) {
      end = quotedTokenEnd(line, start);
      if (end < 0) return -1;
    } else {
      end = line.indexOf(" ", start);
      if (end < 0) end = length;
    }
    if (
      index >= 2 &&
      first !== DASH &&
      !(first === BANG && end === start + 1) &&
      line.charCodeAt(previousStart) === DASH &&
      !isStructuralShort(line, previousStart, previousEnd)
    ) {
      return start;
    }
    previousStart = start;
    previousEnd = end;
    start = end + 1;
  }
  return length;
}

/**
 * Hashes the text up to `keyEnd` from its length and a few characters: the chain's and those
 * of the option before the first slot.
 */
function keyHash(line: string, keyEnd: number): number {
  let hash = Math.imul(keyEnd, 0x01000193);
  hash = Math.imul(hash ^ line.charCodeAt(3), 0x01000193);
  hash = Math.imul(hash ^ line.charCodeAt(4), 0x01000193);
  hash = Math.imul(hash ^ line.charCodeAt(keyEnd >> 1), 0x01000193);
  hash = Math.imul(hash ^ line.charCodeAt(keyEnd - 2), 0x01000193);
  hash = Math.imul(hash ^ line.charCodeAt(keyEnd - 3), 0x01000193);
  return hash;
}

/** Tells whether a token is -p, -m, -j or -g, whose values decide how the rule is read. */
function isStructuralShort(line: string, start: number, end: number): boolean {
  if (end - start !== 2) return false;
  const letter = line.charCodeAt(start + 1);
  return letter === 112 || letter === 109 || letter === 106 || letter === 103;
}

/** Returns the end of a token that opens with a double quote, or -1 if it never closes. */
function quotedTokenEnd(line: string, start: number): number {
  // Without a backslash before it, the next quote closes the token. indexOf finds both without
  // a loop over characters, which matters before V8 optimises this function.
  const close = line.indexOf('"', start + 1);
  if (close < 0) return -1;
  const backslash = line.indexOf("\\", start + 1);
  if (backslash < 0 || backslash > close) return close + 1;
  let i = backslash;
  for (;;) {
    if (i >= line.length) return -1;
    const code = line.charCodeAt(i);
    if (code === QUOTE) return i + 1;
    i += code === BACKSLASH ? 2 : 1;
  }
}

/** Tells whether `line` is the template filled with tokens that pass the slot tests. */
function fills(line: string, template: Template): boolean {
  const { literals, tests } = template;
  const length = line.length;
  // `line.indexOf(literal, offset) === offset` checks whether the literal is at the offset. In
  // V8 (Node 20) it is several times faster than `startsWith`, which compares character by
  // character, and unlike a slice it allocates nothing.
  let position = literals[0].length;
  if (line.indexOf(literals[0], 0) !== 0) return false;

  for (let slot = 0; slot < tests.length; slot++) {
    const first = line.charCodeAt(position);
    let end: number;
    if (first === QUOTE) {
      end = quotedTokenEnd(line, position);
      if (end < 0 || (end < length && line.charCodeAt(end) !== SPACE)) return false;
    } else {
      end = line.indexOf(" ", position);
      if (end < 0) end = length;
      if (end === position || first === DASH || (first === BANG && end === position + 1)) {
        return false;
      }
    }
    if (!tests[slot](line, position, end)) return false;
    const literal = literals[slot + 1];
    if (line.indexOf(literal, end) !== end) return false;
    position = end + literal.length;
  }
  return position === length;
}

/**
 * Tells whether `line` is known to be canonical in the rule context numbered `context`: it fills
 * a remembered template of that context.
 */
export function isKnownCanonical(line: string, context: number): boolean {
  const byKey = buckets[context];
  if (byKey === undefined) return false;
  const keyEnd = firstSlotStart(line);
  if (keyEnd < 0) return false;
  const bucket = byKey.get(keyHash(line, keyEnd));
  if (bucket === undefined) return false;
  for (let i = 0; i < bucket.length; i++) {
    const template = bucket[i];
    if (!fills(line, template)) continue;
    // Keep the templates of the most recent lines first.
    if (i > 0) {
      bucket[i] = bucket[i - 1];
      bucket[i - 1] = template;
    }
    return true;
  }
  return false;
}

/**
 * Remembers `line`, which the full canonicaliser returned unchanged in the rule context numbered
 * `context`. `testFor` returns the test of the token at an index of the line's token list, or
 * undefined to keep that token's exact text.
 */
export function rememberCanonical(
  line: string,
  context: number,
  testFor: (tokenIndex: number) => SavedValueTest | undefined,
): void {
  if (line.length > MAX_LINE_LENGTH) return;
  const keyEnd = firstSlotStart(line);
  if (keyEnd < 0) return;
  const tokens = tokenize(line);
  const literals: string[] = [];
  const tests: SlotTest[] = [];
  let literalStart = 0;
  for (let t = 0; t < tokens.length; t++) {
    const test = testFor(t);
    if (test === undefined) continue;
    const start = tokens[t].start;
    const end = t + 1 < tokens.length ? tokens[t + 1].start - 1 : line.length;
    // A slot is one token between single spaces, after the key, and does not look like an
    // option or a negation.
    const first = line.charCodeAt(start);
    if (
      start < keyEnd ||
      end <= start ||
      (end < line.length && line.charCodeAt(end) !== SPACE) ||
      line.charCodeAt(start - 1) !== SPACE ||
      first === DASH ||
      (first === BANG && end === start + 1) ||
      !test(line, start, end)
    ) {
      return;
    }
    literals.push(line.slice(literalStart, start));
    tests.push(test);
    literalStart = end;
  }
  literals.push(line.slice(literalStart));

  const byKey = buckets[context];
  if (byKey === undefined) return;
  if (templateCount >= MAX_TEMPLATES) clearCanonicalCache();
  const key = keyHash(line, keyEnd);
  let bucket = byKey.get(key);
  if (bucket === undefined) {
    bucket = [];
    byKey.set(key, bucket);
  }
  if (bucket.length >= MAX_TEMPLATES_PER_BUCKET) return;
  bucket.push({ literals, tests });
  templateCount++;
}

/** Empties the cache. */
export function clearCanonicalCache(): void {
  for (const byKey of buckets) byKey.clear();
  templateCount = 0;
}
