/**
 * Reading iptables-restore's error output and naming the plan step it rejected.
 *
 * iptables-restore 1.8 reports the failing input line as "line N failed" (legacy, and nft
 * at commit) or "line N: <reason>" (nft while parsing); older versions print
 * "Error occurred at line: N". Line 1 of a plan script is `*table`, so line N is step N - 2,
 * and the last line is COMMIT, where the kernel rejects the transaction as a whole. When the
 * message blames COMMIT or no line, a name it quotes can still point to the step.
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

/** APPLY_REJECTED for a transaction iptables-restore refused, which it left unapplied. */
export function applyRejected(
  where: string,
  family: Family,
  plan: TablePlan,
  exitCode: string,
  stderr: string,
): IptablesError {
  const reason = tailLines(stderr.trim(), 3).replace(/\n/g, " | ") || `exit code ${exitCode}`;
  const line = rejectedLine(stderr);
  const step =
    (line === undefined ? undefined : stepAtLine(plan, line)) ?? stepNamedIn(plan, stderr);
  const transaction = `the ${family} ${plan.table} transaction`;

  let what: string;
  if (step !== undefined) {
    const position = plan.steps.indexOf(step) + 2;
    const owner = step.markerId === undefined ? "" : `, rule ${step.markerId}`;
    const chain = step.chain === undefined ? "" : `chain ${step.chain}`;
    what =
      `line ${position} of ${transaction} (${chain}${owner}${chain || owner ? ", " : ""}` +
      `${step.reason}: ${quoteForMessage(step.line, 300)})`;
  } else if (line !== undefined && line === plan.steps.length + 2) {
    what = `${transaction} at COMMIT, where the kernel checks it as a whole`;
  } else {
    what = transaction;
  }

  return new IptablesError(
    "APPLY_REJECTED",
    `iptables-restore on ${where} rejected ${what}: ${reason}; nothing was changed`,
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
