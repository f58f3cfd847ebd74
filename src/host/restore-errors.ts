/**
 * Reading iptables-restore's error output and naming the plan step it rejected.
 *
 * iptables-restore 1.8 reports the failing input line as "line N failed" (legacy, and nft
 * at commit) or "line N: <reason>" (nft while parsing); older versions print
 * "Error occurred at line: N". Line 1 of a plan script is `*table`, so line N is step N - 2,
 * and the last line is COMMIT, where the kernel rejects the transaction as a whole.
 */
import { IptablesError, quoteForMessage, tailLines } from "../errors";
import type { PlanStep, TablePlan } from "../netfilter/plan";
import type { Family } from "../netfilter/types";

/** The 1-based input line iptables-restore blamed, if its message names one. */
export function rejectedLine(stderr: string): number | undefined {
  const match = /\bline:?\s*(\d+)/i.exec(stderr);
  return match === null ? undefined : Number(match[1]);
}

/** The plan step that produced script line `line`, if that line is a step. */
export function stepAtLine(plan: TablePlan, line: number): PlanStep | undefined {
  return plan.steps[line - 2];
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
  const step = line === undefined ? undefined : stepAtLine(plan, line);
  const transaction = `the ${family} ${plan.table} transaction`;

  let what: string;
  if (step !== undefined) {
    const owner = step.markerId === undefined ? "" : `, rule ${step.markerId}`;
    const chain = step.chain === undefined ? "" : `chain ${step.chain}`;
    what =
      `line ${line} of ${transaction} (${chain}${owner}${chain || owner ? ", " : ""}` +
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
        line,
        markerId: step?.markerId,
        chain: step?.chain,
        step: step?.line,
        exitCode,
        stderr: tailLines(stderr, 20),
      },
    },
  );
}
