/**
 * Reading iptables-restore's error output, naming the plan step it rejected and explaining why.
 *
 * iptables-restore 1.8.9 (both backends) reports a line it cannot parse with its reason and
 * then "Error occurred at line: N". When the kernel rejects the transaction, iptables-nft-restore
 * prints "line N: RULE_APPEND failed (Invalid argument): rule in chain X" and
 * iptables-legacy-restore only "line N failed", where N is the COMMIT line. Line 1 of a plan
 * script is `*table`, so line N is step N - 2, and the last line is COMMIT, where the kernel
 * checks the transaction as a whole. When the message blames COMMIT or no line, a name it
 * quotes can still point to the step.
 */
import { IptablesError, quoteForMessage, tailLines } from "../errors";
import type { PlanStep, TablePlan } from "../netfilter/plan";
import { splitArgs } from "../netfilter/tokenize";
import type { Family } from "../netfilter/types";

/** Returns the 1-based input line iptables-restore blamed, if its message names one. */
export function rejectedLine(stderr: string): number | undefined {
  const match = /\bline:?\s*(\d+)/i.exec(stderr);
  return match === null ? undefined : Number(match[1]);
}

/** Returns the plan step that produced script line `line`, if that line is a step. */
export function stepAtLine(plan: TablePlan, line: number): PlanStep | undefined {
  return plan.steps[line - 2];
}

/**
 * Finds the one step that contains a name the error message quotes, such as the chain in
 * "Chain 'X' does not exist", which iptables-nft-restore reports at the COMMIT line.
 */
export function stepNamedIn(plan: TablePlan, stderr: string): PlanStep | undefined {
  const names = [...stderr.matchAll(/['`]([^'`\s]+)'/g)].map((match) => match[1]);
  if (names.length === 0) return undefined;
  const candidates = plan.steps.filter((step) => {
    const args = safeSplit(step.line);
    return names.some((name) => args.includes(name));
  });
  return candidates.length === 1 ? candidates[0] : undefined;
}

function safeSplit(line: string): string[] {
  try {
    return splitArgs(line);
  } catch {
    return [];
  }
}

/**
 * Returns the lines of iptables-restore's error output that explain the rejection, joined by
 * " | ". Program prefixes, blank lines, line numbers and the usage hint are left out, because
 * the message names the line itself. Empty when iptables-restore printed only a line number,
 * as iptables-legacy-restore 1.8.9 does for a rule the kernel refuses ("line 3 failed").
 */
export function restoreExplanation(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((line) =>
      line.replace(/^ip6?tables(?:-nft|-legacy)?-restore(?: v[\w.]+ \([\w_]+\))?:/, ""),
    )
    .map((line) => line.replace(/^\s*line \d+:\s*/i, "").trim())
    .filter((line) => line !== "")
    .filter((line) => !/^Error occurred at line: \d+$/i.test(line))
    .filter((line) => !/^line \d+ failed$/i.test(line))
    .filter((line) => !/^Try `ip6?tables/.test(line));
  // A final period would stand before the "; nothing was changed" of the message.
  return tailLines(lines.join("\n"), 3).replace(/\n/g, " | ").replace(/\.$/, "");
}

/** APPLY_REJECTED for a transaction iptables-restore refused, which it left unapplied. */
export function applyRejected(
  where: string,
  family: Family,
  plan: TablePlan,
  exitCode: string,
  stderr: string,
): IptablesError {
  const explanation = restoreExplanation(stderr);
  const line = rejectedLine(stderr);
  const step =
    (line === undefined ? undefined : stepAtLine(plan, line)) ?? stepNamedIn(plan, stderr);
  const transaction = `the ${family} ${plan.table} transaction`;
  // Lines after the steps are COMMIT, or the built-in chains declared just before it.
  const atCommit = step === undefined && line !== undefined && line >= plan.steps.length + 2;

  let rejected: string;
  if (step !== undefined) {
    rejected = describeStep(plan, step, ` of ${transaction}`);
  } else if (atCommit) {
    rejected = `${transaction} at COMMIT, where the kernel checks it as a whole`;
  } else {
    rejected = transaction;
  }

  let reason = explanation;
  if (explanation === "") {
    reason = `iptables-restore gave no reason (exit code ${exitCode}); ${unexplainedHint(plan, step, atCommit)}`;
  } else if (isVague(explanation)) {
    reason = `${explanation}; ${unexplainedHint(plan, step, atCommit)}`;
  }

  return new IptablesError(
    "APPLY_REJECTED",
    `iptables-restore on ${where} rejected ${rejected}: ${reason}; nothing was changed`,
    {
      details: {
        family,
        table: plan.table,
        line: step === undefined ? line : plan.steps.indexOf(step) + 2,
        markerId: step?.markerId,
        chain: step?.chain,
        step: step?.line,
        exitCode,
        stderr: tailLines(stderr, 20),
      },
    },
  );
}

/** `line N[ of TRANSACTION] (chain C, rule ID, REASON: "LINE")`, N being the script line. */
function describeStep(plan: TablePlan, step: PlanStep, ofTransaction = ""): string {
  const position = plan.steps.indexOf(step) + 2;
  const owner = step.markerId === undefined ? "" : `, rule ${step.markerId}`;
  const chain = step.chain === undefined ? "" : `chain ${step.chain}`;
  return (
    `line ${position}${ofTransaction} (${chain}${owner}${chain || owner ? ", " : ""}` +
    `${step.reason}: ${quoteForMessage(step.line, 300)})`
  );
}

/**
 * Tells whether iptables' explanation is only an errno text, as iptables-nft-restore prints when
 * the kernel rejects a rule ("RULE_APPEND failed (Invalid argument): rule in chain X").
 */
function isVague(explanation: string): boolean {
  return /^[A-Z_]+ failed \((Invalid argument|Operation not supported)\)/.test(explanation);
}

/**
 * Returns the next step for a rejection iptables does not explain. The kernel rejects, without
 * a reason, a target or match that the table or chain does not allow (REJECT in nat, MASQUERADE
 * outside nat POSTROUTING) or that the kernel lacks.
 */
function unexplainedHint(plan: TablePlan, step: PlanStep | undefined, atCommit: boolean): string {
  const chain = step?.chain === undefined ? "" : ` and chain ${step.chain}`;
  const check =
    `check that each target and match is valid in the ${plan.table} table${chain}, and that the ` +
    `host's kernel has the modules they need (for example, REJECT is invalid in nat, and ` +
    `MASQUERADE is valid only in nat POSTROUTING)`;
  if (step !== undefined || !atCommit) return check;

  // At COMMIT the kernel names no line, so the message names the one rule the transaction adds or replaces.
  const added = plan.steps.filter((candidate) => /^-[AIR] /.test(candidate.line));
  if (added.length !== 1) return check;
  return `the only rule it adds or replaces is ${describeStep(plan, added[0])}; ${check}`;
}
