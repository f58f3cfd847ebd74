/**
 * Telling managed rules from foreign ones in a parsed dump.
 *
 * A managed rule carries its marker as the value of a `--comment` option (see marker.ts). Every
 * other rule is foreign, including a rule whose comment only looks like a marker but does not
 * parse as one.
 */
import { parseMarker, type Marker } from "./marker";
import type { SaveRule } from "./types";

/**
 * Finds the marker among a rule's `--comment` values, or returns undefined for a foreign rule.
 * When a rule carries several markers, the last one counts, because the library writes its
 * marker as the last match of the rule.
 */
export function ruleMarker(rule: Pick<SaveRule, "args">): Marker | undefined {
  const args = rule.args;
  for (let index = args.length - 2; index >= 0; index--) {
    if (args[index] !== "--comment") continue;
    const marker = parseMarker(args[index + 1]);
    if (marker !== undefined) return marker;
  }
  return undefined;
}

/**
 * Options whose value is free text, so a value such as "-j" is not read as an option.
 * NOTE: a value "-j" or "-g" of an option missing from this list is still misread as a jump.
 */
const FREE_TEXT_OPTIONS = new Set([
  "--comment",
  "--log-prefix",
  "--nflog-prefix",
  "--string",
  "--hex-string",
]);

/**
 * Returns the chain or target a rule passes packets to (`-j`, `--jump`, `-g`, `--goto`), or
 * undefined when the rule has none.
 */
export function ruleTarget(rule: Pick<SaveRule, "args">): string | undefined {
  const args = rule.args;
  for (let index = 0; index < args.length - 1; index++) {
    const arg = args[index];
    if (FREE_TEXT_OPTIONS.has(arg)) {
      index++;
    } else if (arg === "-j" || arg === "--jump" || arg === "-g" || arg === "--goto") {
      return args[index + 1];
    }
  }
  return undefined;
}
