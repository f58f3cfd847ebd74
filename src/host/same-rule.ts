/**
 * The rule comparison the planner uses on a host: semantic, so that a rule iptables-save prints
 * in another spelling than the desired line is not replaced on every apply.
 */
import { sameRule } from "../netfilter/canonical";
import type { DesiredRule } from "../netfilter/plan";
import type { RuleContext, SaveRule } from "../netfilter/types";

/** Builds the planner's `sameRule` for one family, table and backend. */
export function sameRuleFor(
  context: RuleContext,
): (live: SaveRule, desired: DesiredRule) => boolean {
  return (live, desired) => {
    try {
      return sameRule(live.text, desired.line, context);
    } catch {
      // A live rule this library cannot model (edited by hand, say) is not the desired rule,
      // so the planner replaces it with the desired line.
      return live.text === desired.line;
    }
  };
}
