/**
 * The choice of table changes that get the dead-man switch: those that can affect new
 * connections to the host, and so could lock the operator out of SSH.
 */
import { ruleTarget } from "../netfilter/managed";
import type { TablePlan } from "../netfilter/plan";
import { splitArgs } from "../netfilter/tokenize";
import type { SaveTable, TableName } from "../netfilter/types";

/**
 * The dead-man switch policy. "auto" arms the rollback when the change touches a chain reachable
 * from a built-in chain that the host's own traffic passes. "always" arms it whenever the plan
 * has steps, and "never" does not arm it.
 */
export type RollbackMode = "auto" | "always" | "never";

/**
 * Built-in chains that packets of an SSH session to this host pass: the incoming connection
 * (PREROUTING, INPUT) and the host's replies (OUTPUT, POSTROUTING). FORWARD carries only
 * traffic that passes through the host.
 */
export const ENTRY_CHAINS: Readonly<Record<TableName, readonly string[]>> = {
  filter: ["INPUT", "OUTPUT"],
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
  mangle: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
  raw: ["PREROUTING", "OUTPUT"],
  security: ["INPUT", "OUTPUT"],
};

/** Commands of a restore line that name a chain as their first argument. */
const CHAIN_COMMANDS = new Set(["-A", "-I", "-R", "-D", "-N", "-X", "-F", "-Z", "-P", "-E"]);
/** Commands of a restore line that add a rule, and with it a jump. */
const RULE_COMMANDS = new Set(["-A", "-I", "-R"]);

/** Tells whether applying `plan` to `live` needs the dead-man switch under `mode`. */
export function needsRollback(
  mode: RollbackMode,
  live: SaveTable | undefined,
  plan: TablePlan,
): boolean {
  if (plan.steps.length === 0 || mode === "never") return false;
  if (mode === "always") return true;

  // Jumps before and after the change both count: a rule that is removed may be the one that
  // accepted SSH, and a rule that is added may send SSH into a chain this plan also changes.
  const jumps = new Map<string, Set<string>>();
  const addJump = (from: string, to: string | undefined): void => {
    if (to === undefined) return;
    const targets = jumps.get(from) ?? new Set<string>();
    targets.add(to);
    jumps.set(from, targets);
  };
  for (const rule of live?.rules ?? []) addJump(rule.chain, ruleTarget(rule));
  const touched = new Set<string>();
  for (const step of plan.steps) {
    const args = splitArgs(step.line);
    const chain = step.chain ?? (CHAIN_COMMANDS.has(args[0]) ? args[1] : undefined);
    if (chain !== undefined) touched.add(chain);
    if (chain !== undefined && RULE_COMMANDS.has(args[0])) addJump(chain, ruleTarget({ args }));
  }

  const reachable = new Set<string>(ENTRY_CHAINS[plan.table]);
  const queue = [...reachable];
  while (queue.length > 0) {
    const chain = queue.pop()!;
    for (const target of jumps.get(chain) ?? []) {
      if (reachable.has(target)) continue;
      reachable.add(target);
      queue.push(target);
    }
  }
  return [...touched].some((chain) => reachable.has(chain));
}
