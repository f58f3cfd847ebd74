/**
 * The planner: from a parsed live table and a requested change, the minimal
 * `iptables-restore --noflush` script that reaches the requested state.
 *
 * Ownership. A rule whose `--comment` parses as a marker is managed; every other rule is
 * foreign. Foreign rules are never replaced, moved or deleted, except in a chain listed in
 * `purgeUnmanaged`, where they are deleted. Managed rules that the change does not name are
 * left where they are, even when they are out of order or duplicated, because another
 * resource owns them.
 *
 * Placement. The managed rules of a chain are kept sorted by `compareMarkers` (order, then id).
 * A rule that must be inserted lands:
 * - just above the first managed rule of the chain that sorts after it, so foreign rules that
 *   sit between the previous managed rule and that one stay above the new rule;
 * - else, when no managed rule sorts after it, just below the last managed rule of the chain,
 *   so foreign rules that follow that rule stay below the new rule;
 * - else, when the chain contains no other managed rule, at the top of the chain (position 1),
 *   above every foreign rule.
 * A managed rule that is already between the right managed neighbours stays where it is, even
 * when foreign rules have been added around it since. It counts as out of order only when
 * another managed rule of its chain is on the wrong side of it. Of the named rules that are out
 * of order, the planner moves the fewest (a delete, then an insert at the place).
 *
 * Minimality. An upserted rule that is in order and equal to the live rule (by `sameRule`)
 * produces no step. One that is in order but differs is replaced in place (`-R CHAIN N`). Of
 * several live copies of one marker id, the planner keeps the copy that saves the most steps
 * (one that is in order and equal, else one that is in order) and deletes the others. Chains
 * are flushed (`-F`) only when they contain rules, and created (`-N`) only when absent. An
 * insertion at the end of a chain is the rule's own `-A` line.
 *
 * Script. One `*table ... COMMIT` transaction, so iptables-restore applies all of it or none.
 * The planner never writes a chain declaration (`:NAME - [0:0]`), because iptables-restore
 * flushes a declared chain even with `--noflush`. Positions in `-D`, `-R` and `-I` refer to the
 * state the preceding lines of the same script leave behind. Steps come in this order: chain
 * creations; then per chain (live chains in dump order, then new chains by name) its deletions
 * from the bottom up, its replacements, its insertions in marker order; then flushes and
 * deletions of chains. The output depends only on the inputs, not on the order of the arrays in
 * the change.
 */
import { IptablesError, quoteForMessage } from "../errors";
import { ruleTarget } from "./managed";
import type { Marker } from "./marker";
import { indexSnapshot, planChain, type ChainPlan, type Snapshot } from "./plan-chain";
import { normalizeRequest, type PlanRequest } from "./plan-request";
import { BUILTIN_CHAINS, type SaveRule, type SaveTable, type TableName } from "./types";

export { MAX_CHAIN_NAME_LENGTH, validateChainName } from "./plan-request";

/** A managed rule as it should be in the table. */
export interface DesiredRule {
  /** Id and order; the same marker must appear in `line`. */
  readonly marker: Marker;
  /** The chain the rule belongs in; the same chain must follow `-A` in `line`. */
  readonly chain: string;
  /** The canonical line, as iptables-save prints it: `-A CHAIN ... -m comment --comment "pulumi-iptables:id:order" -j X`. */
  readonly line: string;
  /**
   * True when the rule is new to its owner: a live rule that carries the same marker id but is
   * not this rule (by `sameRule`) belongs to someone else, and the plan fails with PLAN_CONFLICT
   * instead of replacing it. A live copy equal to this rule is taken over.
   */
  readonly create?: boolean;
}

/** A change to one table. Every field may be left out, which requests nothing of that kind. */
export interface TableChange {
  /** User chains to create when absent (`-N NAME`). */
  readonly createChains?: readonly string[];
  /**
   * User chains to create that must not exist yet: one already in the table, or named twice,
   * fails the plan with PLAN_CONFLICT, because another owner has it.
   */
  readonly newChains?: readonly string[];
  /**
   * Chains that must exist (built-in, in the table, or created by this change), such as a chain
   * another tool owns. A missing one fails the plan with PLAN_CONFLICT before any step.
   */
  readonly requireChains?: readonly string[];
  /**
   * Owned chains to delete when present: their managed rules are flushed and the chain removed
   * (`-F NAME`, `-X NAME`). Foreign rules in them are a conflict unless the chain is also in
   * `purgeUnmanaged`.
   */
  readonly deleteChains?: readonly string[];
  /** Managed rules to add, replace or move to their place. */
  readonly upsertRules?: readonly DesiredRule[];
  /** Marker ids whose rules are deleted wherever they are in the table. */
  readonly deleteRules?: readonly string[];
  /** User chains whose foreign (unmarked) rules are deleted. */
  readonly purgeUnmanaged?: readonly string[];
}

/** One line of the restore script, with why it is there. */
export interface PlanStep {
  /** The script line, such as `-I RATE-LIMIT 2 -p tcp ...` or `-X OLD-CHAIN`. */
  readonly line: string;
  /** A short phrase for logs and errors, such as "replace changed rule". */
  readonly reason: string;
  /** The marker id of the managed rule the step writes or deletes, if any. */
  readonly markerId?: string;
  /** The chain the step acts on. */
  readonly chain?: string;
}

/** The plan for one table. */
export interface TablePlan {
  readonly table: TableName;
  readonly steps: readonly PlanStep[];
  /** "" when there is nothing to do; else "*<table>\n<step lines>\nCOMMIT\n" for iptables-restore --noflush. */
  readonly script: string;
}

export interface PlanOptions {
  readonly table: TableName;
  /**
   * Tells whether a live rule already is the desired rule.
   * @default text equality of `live.text` and `desired.line`
   */
  readonly sameRule?: (live: SaveRule, desired: DesiredRule) => boolean;
}

/**
 * Plans the minimal `iptables-restore --noflush` script that turns `live` into the state
 * `change` requests. `live` is the table as `iptables-save -t <table>` printed it, or undefined
 * when the table is absent.
 *
 * Throws IptablesError INVALID_INPUT when the change is malformed: a chain name iptables
 * rejects, a line whose chain or marker differs from its fields, an id both upserted and
 * deleted, and the like. Throws PLAN_CONFLICT when the live table forbids the change. That is
 * the case for a rule in a chain that does not exist, foreign rules left in a chain to delete,
 * rules that would still jump to a deleted chain, and a jump loop a built-in chain would reach.
 */
export function planTableChange(
  live: SaveTable | undefined,
  change: TableChange,
  options: PlanOptions,
): TablePlan {
  const request = normalizeRequest(live, change, options);
  const snapshot = indexSnapshot(live, request.table);
  checkRuleChainsExist(request, snapshot);

  const deletedChains = request.deleteChains.filter((name) => snapshot.rules.has(name));
  checkForeignRulesInDeletedChains(request, snapshot, deletedChains);

  const keptChains = [
    ...snapshot.chainOrder.filter((name) => !deletedChains.includes(name)),
    ...request.createChains.filter((name) => !snapshot.rules.has(name)),
  ];
  const chainPlans = keptChains.map((chain) => planChain(chain, request, snapshot));
  checkReferencesToDeletedChains(request.table, chainPlans, request.deleteChains);
  checkJumpLoops(request.table, chainPlans);

  const steps: PlanStep[] = [];
  for (const name of request.createChains) {
    if (!snapshot.rules.has(name)) {
      steps.push({ line: `-N ${name}`, reason: "create chain", chain: name });
    }
  }
  for (const plan of chainPlans) steps.push(...renderChainSteps(plan));
  // Every flush comes before the first -X, so chains that jump to each other can go together.
  for (const name of deletedChains) {
    if (snapshot.rules.get(name)!.length > 0) {
      steps.push({ line: `-F ${name}`, reason: "flush chain before deleting it", chain: name });
    }
  }
  for (const name of deletedChains) {
    steps.push({ line: `-X ${name}`, reason: "delete chain", chain: name });
  }

  const script =
    steps.length === 0
      ? ""
      : `*${request.table}\n${steps.map((step) => `${step.line}\n`).join("")}COMMIT\n`;
  return { table: request.table, steps, script };
}

// ---------------------------------------------------------------------------------------------
// Conflicts with the live table

function checkRuleChainsExist(request: PlanRequest, snapshot: Snapshot): void {
  const builtins = BUILTIN_CHAINS[request.table];
  for (const desired of request.upserts) {
    const chain = desired.rule.chain;
    if (
      snapshot.rules.has(chain) ||
      builtins.includes(chain) ||
      request.createChains.includes(chain)
    ) {
      continue;
    }
    throw new IptablesError(
      "PLAN_CONFLICT",
      `cannot place rule ${quoteForMessage(desired.rule.marker.id)} in chain "${chain}" of the ` +
        `${request.table} table: the chain does not exist on the host. Create it first (with a ` +
        `Chain resource, or by starting the tool that owns it, such as Docker for DOCKER-USER), ` +
        `or put the rule in an existing chain`,
      { details: { chain, markerId: desired.rule.marker.id, table: request.table } },
    );
  }
}

function checkForeignRulesInDeletedChains(
  request: PlanRequest,
  snapshot: Snapshot,
  deletedChains: readonly string[],
): void {
  for (const chain of deletedChains) {
    if (request.purge.has(chain)) continue;
    const foreign = snapshot.rules.get(chain)!.filter((entry) => entry.marker === undefined);
    if (foreign.length === 0) continue;
    throw new IptablesError(
      "PLAN_CONFLICT",
      `cannot delete chain "${chain}" from the ${request.table} table: it holds ` +
        `${foreign.length} rule(s) that pulumi-iptables does not manage: ` +
        `${listRules(foreign.map((entry) => entry.rule.text))}; remove them first, or set ` +
        `purgeUnmanaged on the chain to delete them with it`,
      { details: { chain, table: request.table, rules: foreign.map((entry) => entry.rule.text) } },
    );
  }
}

function checkReferencesToDeletedChains(
  table: TableName,
  plans: readonly ChainPlan[],
  deletedChains: readonly string[],
): void {
  if (deletedChains.length === 0) return;
  const deleted = new Set(deletedChains);
  const referencing = new Map<string, string[]>();
  for (const plan of plans) {
    for (const rule of finalRules(plan)) {
      const target = ruleTarget(rule);
      if (target === undefined || !deleted.has(target)) continue;
      const list = referencing.get(target) ?? [];
      list.push(rule.text);
      referencing.set(target, list);
    }
  }
  for (const chain of deletedChains) {
    const rules = referencing.get(chain);
    if (rules === undefined) continue;
    throw new IptablesError(
      "PLAN_CONFLICT",
      `cannot delete chain "${chain}" from the ${table} table: ${rules.length} rule(s) would ` +
        `still jump to it: ${listRules(rules)}; delete those rules in the same change, or keep ` +
        `the chain`,
      { details: { chain, table, rules } },
    );
  }
}

/**
 * Raises PLAN_CONFLICT when a built-in chain would reach a loop of jumps or gotos once the plan
 * is applied. The kernel rejects such a rule set: iptables-restore 1.8.9 fails with "Too many
 * links" on iptables-nft and "line N failed" on iptables-legacy. Loops that no built-in chain
 * reaches are accepted by both backends, so they are left alone here too.
 */
function checkJumpLoops(table: TableName, plans: readonly ChainPlan[]): void {
  const chains = new Set(plans.map((plan) => plan.chain));
  // For each chain, the chains it jumps to, each with the first rule that jumps there.
  const edges = new Map<string, Map<string, string>>();
  for (const plan of plans) {
    const targets = new Map<string, string>();
    for (const rule of finalRules(plan)) {
      const target = ruleTarget(rule);
      if (target !== undefined && chains.has(target) && !targets.has(target)) {
        targets.set(target, rule.text);
      }
    }
    edges.set(plan.chain, targets);
  }

  // Depth-first search: reaching a chain that is still on the path closes a loop.
  const finished = new Set<string>();
  const path: string[] = [];
  const findLoop = (chain: string): string[] | undefined => {
    path.push(chain);
    for (const target of edges.get(chain)!.keys()) {
      const onPath = path.indexOf(target);
      if (onPath !== -1) return [...path.slice(onPath), target];
      if (finished.has(target)) continue;
      const loop = findLoop(target);
      if (loop !== undefined) return loop;
    }
    path.pop();
    finished.add(chain);
    return undefined;
  };

  for (const chain of BUILTIN_CHAINS[table]) {
    if (!chains.has(chain) || finished.has(chain)) continue;
    const loop = findLoop(chain);
    if (loop === undefined) continue;
    const rules = loop.slice(0, -1).map((chain, index) => edges.get(chain)!.get(loop[index + 1])!);
    throw new IptablesError(
      "PLAN_CONFLICT",
      `cannot apply the change to the ${table} table: built-in chain ${chain} would reach the ` +
        `jump loop ${loop.join(" -> ")}, which the kernel rejects; the loop is made by ` +
        `${listRules(rules)}; change or delete one of these rules`,
      { details: { table, from: chain, loop, rules } },
    );
  }
}

/** Returns the rules a chain contains once its plan is applied, in no particular order. */
function finalRules(plan: ChainPlan): { text: string; args: readonly string[] }[] {
  const rules: { text: string; args: readonly string[] }[] = [];
  plan.live.forEach((entry, index) => {
    if (plan.deletes.has(index)) return;
    const replacement = plan.replaces.get(index);
    rules.push(
      replacement === undefined
        ? entry.rule
        : { text: replacement.rule.line, args: replacement.args },
    );
  });
  for (const insert of plan.inserts) {
    rules.push({ text: insert.desired.rule.line, args: insert.desired.args });
  }
  return rules;
}

function listRules(texts: readonly string[], max = 5): string {
  const shown = texts.slice(0, max).map((text) => quoteForMessage(text, 160));
  const more = texts.length > max ? ` and ${texts.length - max} more` : "";
  return `${shown.join(", ")}${more}`;
}

// ---------------------------------------------------------------------------------------------
// Script lines

/** A rule of the chain while the script is written: a live rule, or an inserted one. */
interface Position {
  readonly liveIndex?: number;
  /** Rank in the target order, for managed rules. */
  readonly rank?: number;
}

function renderChainSteps(plan: ChainPlan): PlanStep[] {
  const { chain } = plan;
  const steps: PlanStep[] = [];

  // Bottom up, so each position is the one in the snapshot.
  const deleted = [...plan.deletes.keys()].sort((a, b) => b - a);
  for (const index of deleted) {
    const deletion = plan.deletes.get(index)!;
    steps.push({
      line: `-D ${chain} ${index + 1}`,
      reason: deletion.reason,
      chain,
      ...markerField(deletion.markerId),
    });
  }

  const rules: Position[] = [];
  plan.live.forEach((_entry, index) => {
    if (!plan.deletes.has(index)) rules.push({ liveIndex: index, rank: plan.ranks.get(index) });
  });

  const replaced = [...plan.replaces.keys()].sort((a, b) => a - b);
  for (const index of replaced) {
    const desired = plan.replaces.get(index)!;
    const position = rules.findIndex((rule) => rule.liveIndex === index) + 1;
    steps.push({
      line: `-R ${chain} ${position}${desired.body}`,
      reason: "replace changed rule",
      chain,
      markerId: desired.rule.marker.id,
    });
  }

  for (const insert of plan.inserts) {
    const at = insertionIndex(rules, insert.rank);
    const id = insert.desired.rule.marker.id;
    // At the end of the chain, the rule's own line appends it.
    const line =
      at === rules.length
        ? insert.desired.rule.line
        : `-I ${chain} ${at + 1}${insert.desired.body}`;
    steps.push({ line, reason: insert.reason, chain, markerId: id });
    rules.splice(at, 0, { rank: insert.rank });
  }
  return steps;
}

/** Returns the 0-based index where a managed rule of `rank` goes, by the placement rules above. */
function insertionIndex(rules: readonly Position[], rank: number): number {
  const after = rules.findIndex((rule) => rule.rank !== undefined && rule.rank > rank);
  if (after !== -1) return after;
  for (let index = rules.length - 1; index >= 0; index--) {
    if (rules[index].rank !== undefined) return index + 1;
  }
  return 0;
}

function markerField(markerId: string | undefined): { markerId?: string } {
  return markerId === undefined ? {} : { markerId };
}
