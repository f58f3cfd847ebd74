/**
 * The printed results: one Markdown table row per cell, then the targets as measured ratios.
 */
import type { CellResult, PassResult } from "./cells";
import type { VariantName } from "./recipe";
import { formatMs, formatRatio, formatSpread } from "./stats";
import type { ToolKey } from "./tool";

export function printCells(cells: readonly CellResult[]): void {
  console.log("");
  console.log(
    "| tool | variant | hosts | runs | first apply, median (range) | second apply, median (range) " +
      "| second apply reported | filter table as expected | SSH connections per host (first/second) |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |");
  for (const cell of cells) {
    console.log(
      `| ${cell.toolName} | ${cell.variant} | ${cell.hosts} | ${cell.runs} ` +
        `| ${formatSpread(cell.first.times)} | ${formatSpread(cell.second.times)} ` +
        `| ${secondReport(cell.second)} | ${linesVerdict(cell)} ` +
        `| ${cell.first.connectionsPerHost}/${cell.second.connectionsPerHost} |`,
    );
  }
}

function secondReport(second: PassResult): string {
  const verdict = second.unchangedEveryRun ? "no change" : "CHANGED";
  return `${verdict} (${second.report.summary})`;
}

function linesVerdict(cell: CellResult): string {
  const mismatch = cell.first.mismatch ?? cell.second.mismatch;
  if (mismatch === undefined) return "yes";
  const when = cell.first.mismatch !== undefined ? "after first apply" : "after second apply";
  return `NO, ${when}: ${mismatch.replace(/\|/g, "\\|")}`;
}

export interface TargetCheck {
  readonly label: string;
  /** The measured ratio, or undefined when a cell it needs was not measured. */
  readonly ratio?: number;
  readonly limit: number;
  readonly kind: "at most" | "at least";
  readonly detail: string;
}

/** Median first-apply time of a cell, when it was measured. */
function firstMedian(
  cells: readonly CellResult[],
  tool: ToolKey,
  variantName: VariantName,
  hosts: number,
): number | undefined {
  return cells.find((c) => c.tool === tool && c.variant === variantName && c.hosts === hosts)?.first
    .times.median;
}

function ratioCheck(
  label: string,
  numerator: number | undefined,
  denominator: number | undefined,
  limit: number,
  kind: TargetCheck["kind"],
): TargetCheck {
  if (numerator === undefined || denominator === undefined) {
    return { label, limit, kind, detail: "not measured" };
  }
  return {
    label,
    ratio: numerator / denominator,
    limit,
    kind,
    detail: `${formatMs(numerator)} / ${formatMs(denominator)}`,
  };
}

/** Builds the targets that need only the cells. The library's refresh target comes from its module. */
export function cellTargets(cells: readonly CellResult[], hosts: number): TargetCheck[] {
  const library = firstMedian(cells, "library", "recipe", hosts);
  return [
    ratioCheck(
      `recipe on ${hosts} hosts, first apply: library / floor`,
      library,
      firstMedian(cells, "floor", "recipe", hosts),
      2,
      "at most",
    ),
    ratioCheck(
      `recipe on ${hosts} hosts, first apply: Ansible / library`,
      firstMedian(cells, "ansible", "recipe", hosts),
      library,
      10,
      "at least",
    ),
    ratioCheck(
      `recipe on ${hosts} hosts, first apply: Puppet / library`,
      firstMedian(cells, "puppet", "recipe", hosts),
      library,
      10,
      "at least",
    ),
    ratioCheck(
      `first apply on ${hosts} hosts: library large / library recipe`,
      firstMedian(cells, "library", "large", hosts),
      library,
      1.5,
      "at most",
    ),
  ];
}

export function printTargets(checks: readonly TargetCheck[]): void {
  console.log("");
  console.log("| target | measured | limit | verdict |");
  console.log("| --- | ---: | ---: | --- |");
  for (const check of checks) {
    const limit = `${check.kind} ${formatRatio(check.limit)}`;
    if (check.ratio === undefined) {
      console.log(`| ${check.label} | ${check.detail} | ${limit} | not measured |`);
      continue;
    }
    const met = check.kind === "at most" ? check.ratio <= check.limit : check.ratio >= check.limit;
    console.log(
      `| ${check.label} | ${formatRatio(check.ratio)} (${check.detail}) | ${limit} ` +
        `| ${met ? "met" : "MISSED"} |`,
    );
  }
}
