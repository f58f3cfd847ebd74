/**
 * The rule comparison the planner uses on a host: semantic, so that a rule iptables-save prints
 * in another spelling than the desired line is not replaced on every apply.
 */
import type { DesiredRule } from "../netfilter/plan";
import type { RuleContext, SaveRule } from "../netfilter/types";

/** Builds the planner's `sameRule` for one family, table and backend. */
export function sameRuleFor(
  _context: RuleContext,
): (live: SaveRule, desired: DesiredRule) => boolean {
  // TODO: compare with the netfilter layer's semantic sameRule once it exists; text equality
  // replaces a rule whose saved spelling differs from the desired line on every apply.
  return (live, desired) => live.text === desired.line;
}
