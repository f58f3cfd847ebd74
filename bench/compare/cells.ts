/**
 * One cell of the comparison: a tool, a variant and a set of hosts, measured over several runs.
 * Each run resets the hosts and the tool, times a first apply, then times a second apply that
 * must change nothing, and checks the hosts' filter tables after each.
 */
import { performance } from "node:perf_hooks";
import type { Lab, LabHost } from "../../src/lab";
import { compareLines, readManagedLines, resetHosts, sshConnectionCounts } from "./hosts";
import type { Variant } from "./recipe";
import { spread, type Spread } from "./stats";
import type { ApplyReport, Pass, Tool, ToolKey } from "./tool";

export interface RunPlan {
  /** Runs at least this many times. */
  readonly minRuns: number;
  /** Runs at most this many times. */
  readonly maxRuns: number;
  /** Starts another run (past minRuns) only when it is expected to end within this budget. */
  readonly budgetMs: number;
}

export interface PassResult {
  readonly times: Spread;
  /** The tool's report of the last run. */
  readonly report: ApplyReport;
  /** True when every run's report stated that nothing changed. */
  readonly unchangedEveryRun: boolean;
  /** SSH connections the busiest host accepted in the last run. */
  readonly connectionsPerHost: number;
  /** The first difference from the expected lines in any run, or undefined when none. */
  readonly mismatch?: string;
}

export interface CellResult {
  readonly tool: ToolKey;
  readonly toolName: string;
  readonly variant: Variant["name"];
  readonly hosts: number;
  readonly runs: number;
  readonly first: PassResult;
  readonly second: PassResult;
}

interface PassRun {
  readonly ms: number;
  readonly report: ApplyReport;
  readonly connections: number;
  readonly mismatch?: string;
}

export async function measureCell(
  lab: Lab,
  tool: Tool,
  hosts: readonly LabHost[],
  target: Variant,
  plan: RunPlan,
): Promise<CellResult> {
  const firsts: PassRun[] = [];
  const seconds: PassRun[] = [];
  const started = performance.now();

  for (;;) {
    await resetHosts(lab, hosts);
    await tool.reset(lab, hosts, target);
    firsts.push(await measurePass(lab, tool, hosts, target, "first"));
    seconds.push(await measurePass(lab, tool, hosts, target, "second"));

    const elapsed = performance.now() - started;
    const perRun = elapsed / firsts.length;
    if (firsts.length >= plan.maxRuns) break;
    if (firsts.length >= plan.minRuns && elapsed + perRun > plan.budgetMs) break;
  }

  return {
    tool: tool.key,
    toolName: tool.name,
    variant: target.name,
    hosts: hosts.length,
    runs: firsts.length,
    first: summarise(firsts),
    second: summarise(seconds),
  };
}

async function measurePass(
  lab: Lab,
  tool: Tool,
  hosts: readonly LabHost[],
  target: Variant,
  pass: Pass,
): Promise<PassRun> {
  const before = await sshConnectionCounts(lab, hosts);
  const start = performance.now();
  const report = await tool.apply(lab, hosts, target, pass);
  const ms = performance.now() - start;
  const after = await sshConnectionCounts(lab, hosts);

  const lines = await readManagedLines(lab, hosts);
  const mismatch = compareLines(hosts, lines, (host) => tool.expectedLines(target, host));
  const connections = Math.max(...after.map((count, i) => count - before[i]));
  return { ms, report, connections, mismatch };
}

function summarise(runs: readonly PassRun[]): PassResult {
  const last = runs[runs.length - 1];
  return {
    times: spread(runs.map((run) => run.ms)),
    report: last.report,
    unchangedEveryRun: runs.every((run) => run.report.unchanged),
    connectionsPerHost: last.connections,
    mismatch: runs.find((run) => run.mismatch !== undefined)?.mismatch,
  };
}
