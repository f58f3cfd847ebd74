/**
 * Figures only this library gets: the time of a no-change `pulumi up --refresh` on every host,
 * the SSH connections it opens, and the commands each resource operation sends.
 */
import type { Lab, LabHost } from "../../src/lab";
import { sshConnectionCounts } from "./hosts";
import { refreshUp, type LibraryTool, type RefreshUpResult } from "./library";
import { measureRuleOperations, type OperationCost } from "./operations";
import type { Variant } from "./recipe";
import type { TargetCheck } from "./report";
import { formatMs, formatSpread, spread, type Spread } from "./stats";

export interface LibraryDetails {
  readonly hosts: number;
  readonly providerStartMs: number;
  readonly refreshUp: Spread;
  /** The last refresh-up run. */
  readonly lastRefreshUp: RefreshUpResult;
  /** SSH connections the busiest host accepted during the last refresh-up. */
  readonly refreshUpConnectionsPerHost: number;
  readonly operations: readonly OperationCost[];
}

/**
 * Measures the details on hosts where `tool` has just applied `target` (its deployment has
 * the state), leaving the hosts as they were.
 */
export async function measureLibraryDetails(
  lab: Lab,
  tool: LibraryTool,
  hosts: readonly LabHost[],
  target: Variant,
  runs: number,
): Promise<LibraryDetails> {
  const deployment = tool.deployment;
  if (deployment === undefined) throw new Error("the library has no deployment to measure");

  const results: RefreshUpResult[] = [];
  let connections = 0;
  for (let run = 0; run < runs; run++) {
    const before = await sshConnectionCounts(lab, hosts);
    const { result, deployment: used } = await refreshUp(deployment, hosts, target);
    await used.close();
    const after = await sshConnectionCounts(lab, hosts);
    connections = Math.max(...after.map((count, i) => count - before[i]));
    results.push(result);
  }

  const operations = await measureRuleOperations(deployment, hosts[0]);
  return {
    hosts: hosts.length,
    providerStartMs: tool.providerStartMs,
    refreshUp: spread(results.map((r) => r.ms)),
    lastRefreshUp: results[results.length - 1],
    refreshUpConnectionsPerHost: connections,
    operations,
  };
}

export function printLibraryDetails(details: LibraryDetails): void {
  const last = details.lastRefreshUp;
  console.log("");
  console.log(`This library, recipe on ${details.hosts} hosts:`);
  console.log(
    `- no-change up with refresh (${last.reads} reads at once, then up): ` +
      `${formatSpread(details.refreshUp)} over ${details.refreshUp.count} runs; ` +
      `drift: ${last.drifted.length === 0 ? "none" : last.drifted.join("; ")}; ` +
      `up reported ${last.report.summary}; ` +
      `${details.refreshUpConnectionsPerHost} SSH connections per host`,
  );
  console.log(
    `- provider server start, before each timed up and not part of it: ` +
      formatMs(details.providerStartMs),
  );
  console.log("");
  console.log("| operation on one rule | time | commands | new SSH connections | commands sent |");
  console.log("| --- | ---: | ---: | --- | --- |");
  for (const cost of details.operations) {
    const connections = cost.connections.length === 0 ? "none" : cost.connections.join(", ");
    const names = cost.commandNames.map((name) => `\`${name.replace(/\|/g, "\\|")}\``);
    console.log(
      `| ${cost.operation} | ${formatMs(cost.ms)} | ${cost.commands} | ${connections} ` +
        `| ${names.join(", ") || "-"} |`,
    );
  }
}

/** Builds the no-change target: refresh-up against the floor's one read of each host. */
export function refreshTarget(
  details: LibraryDetails | undefined,
  floorRead: number | undefined,
): TargetCheck {
  const label = `no-change up with refresh on ${details?.hosts ?? "N"} hosts: library / floor read`;
  if (details === undefined || floorRead === undefined) {
    return { label, limit: 1.5, kind: "at most", detail: "not measured" };
  }
  const ms = details.refreshUp.median;
  return {
    label,
    ratio: ms / floorRead,
    limit: 1.5,
    kind: "at most",
    detail: `${formatMs(ms)} / ${formatMs(floorRead)}`,
  };
}
