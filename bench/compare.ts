/**
 * Comparative benchmark: this library against Ansible, Puppet and the SSH floor, on the same
 * lab hosts in one run. Needs root (lab hosts are network namespaces) and installs Ansible and
 * Puppet from Debian with apt-get when they are missing.
 *
 *   npm run bench:compare -- [--hosts 10] [--max-runs 5] [--full] [--tools floor,ansible,...]
 *
 * BENCHMARKS.md records the figures and explains each column.
 */
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createLab, type Lab, type LabHost } from "../src/lab";
import { ansibleTool } from "./compare/ansible";
import { measureCell, type CellResult, type RunPlan } from "./compare/cells";
import { floorTool, runOnce } from "./compare/floor";
import { installPackages } from "./compare/install";
import { libraryTool, type LibraryTool } from "./compare/library";
import {
  measureLibraryDetails,
  printLibraryDetails,
  refreshTarget,
  type LibraryDetails,
} from "./compare/library-details";
import { puppetTool } from "./compare/puppet";
import { variant, type VariantName } from "./compare/recipe";
import { cellTargets, printCells, printTargets } from "./compare/report";
import { formatSpread, spread } from "./compare/stats";
import type { Tool } from "./compare/tool";

const USAGE = `usage: npm run bench:compare -- [options]
  --hosts N       lab hosts for the parallel cells (default 10)
  --max-runs N    most runs per cell (default 5; cells stop earlier to fit the time budget)
  --full          also run Ansible and Puppet on the large variant on N hosts (an estimated 15-30 min more)
  --tools LIST    comma-separated subset of: floor,library,ansible,puppet (default all)
  --variants LIST comma-separated subset of: recipe,large (default both)`;

const TOOL_NAMES = ["floor", "library", "ansible", "puppet"] as const;
type ToolName = (typeof TOOL_NAMES)[number];

interface Options {
  readonly hosts: number;
  readonly maxRuns: number;
  readonly full: boolean;
  readonly tools: readonly ToolName[];
  readonly variants: readonly VariantName[];
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      hosts: { type: "string", default: "10" },
      "max-runs": { type: "string", default: "5" },
      full: { type: "boolean", default: false },
      tools: { type: "string", default: TOOL_NAMES.join(",") },
      variants: { type: "string", default: "recipe,large" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }

  const hosts = Number(values.hosts);
  const maxRuns = Number(values["max-runs"]);
  if (!Number.isInteger(hosts) || hosts < 2 || hosts > 100) {
    throw new Error(`--hosts must be an integer from 2 to 100, not "${values.hosts}"`);
  }
  if (!Number.isInteger(maxRuns) || maxRuns < 1) {
    throw new Error(`--max-runs must be a positive integer, not "${values["max-runs"]}"`);
  }

  const tools = values.tools.split(",").map((name) => name.trim());
  const unknown = tools.filter((name) => !(TOOL_NAMES as readonly string[]).includes(name));
  if (unknown.length > 0) {
    throw new Error(`unknown tool "${unknown[0]}" in --tools: use ${TOOL_NAMES.join(", ")}`);
  }

  const variants = values.variants.split(",").map((name) => name.trim());
  const unknownVariant = variants.find((name) => name !== "recipe" && name !== "large");
  if (unknownVariant !== undefined) {
    throw new Error(`unknown variant "${unknownVariant}" in --variants: use recipe, large`);
  }
  return {
    hosts,
    maxRuns,
    full: values.full,
    tools: tools as ToolName[],
    variants: variants as VariantName[],
  };
}

/**
 * Chooses how many runs a cell gets. The recipe cells carry the targets, so they get at least
 * two runs and more time.
 */
function runPlan(variantName: VariantName, maxRuns: number): RunPlan {
  return variantName === "recipe"
    ? { minRuns: Math.min(2, maxRuns), maxRuns, budgetMs: 60_000 }
    : { minRuns: 1, maxRuns, budgetMs: 30_000 };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const started = performance.now();
  const log = (line: string): void => console.error(`[${elapsed(started)}] ${line}`);
  console.log(
    `load average at start: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );

  if (options.tools.includes("ansible") || options.tools.includes("puppet")) {
    installPackages(log);
  }

  const lab = await createLab({ name: `bench-compare-${process.pid}`, hosts: options.hosts });
  const tools: Tool[] = [];
  const stop = async (): Promise<void> => {
    for (const tool of tools.splice(0)) await tool.close().catch(() => undefined);
    await lab.destroy();
  };
  const onSignal = (): void => {
    void stop().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    log(`lab ${lab.name}: ${lab.hosts.length} hosts up`);
    console.log(`one SSH session running "true" on one lab host: ${await sshBaseline(lab)}`);
    tools.push(...buildTools(options.tools, lab));
    const { cells, details } = await runCells(lab, tools, options, log);
    printCells(cells);
    if (details !== undefined) printLibraryDetails(details);
    const floorRead = cells.find(
      (c) => c.tool === "floor" && c.variant === "recipe" && c.hosts === options.hosts,
    )?.second.times.median;
    printTargets([...cellTargets(cells, options.hosts), refreshTarget(details, floorRead)]);
  } finally {
    await stop();
    console.log(
      `load average at end: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}; ` + `total ${elapsed(started)}`,
    );
  }
}

/**
 * Times one SSH session that runs `true`, five times. It shows what every SSH command costs on
 * this machine before any tool runs, including root's shell startup files on the lab host.
 */
async function sshBaseline(lab: Lab): Promise<string> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    await runOnce(lab.hosts[0], "true");
    times.push(performance.now() - start);
  }
  return `${formatSpread(spread(times))}, median of 5`;
}

function buildTools(names: readonly ToolName[], lab: Lab): Tool[] {
  const tools: Tool[] = [];
  for (const name of names) {
    if (name === "floor") tools.push(floorTool());
    if (name === "library") tools.push(libraryTool());
    if (name === "ansible") tools.push(ansibleTool(lab.hosts));
    if (name === "puppet") tools.push(puppetTool());
  }
  return tools;
}

async function runCells(
  lab: Lab,
  tools: readonly Tool[],
  options: Options,
  log: (line: string) => void,
): Promise<{ cells: CellResult[]; details?: LibraryDetails }> {
  const cells: CellResult[] = [];
  let details: LibraryDetails | undefined;
  const scales: readonly (readonly LabHost[])[] = [lab.hosts.slice(0, 1), lab.hosts];
  for (const variantName of options.variants) {
    const target = variant(variantName);
    for (const tool of tools) {
      for (const hosts of scales) {
        const heavy = isHeavy(tool, variantName, hosts.length);
        if (heavy && !options.full) {
          log(`${tool.name}, ${variantName}, ${hosts.length} hosts: skipped (pass --full)`);
          continue;
        }
        log(`${tool.name}, ${variantName}, ${hosts.length} hosts ...`);
        const plan = heavy
          ? { minRuns: 1, maxRuns: 1, budgetMs: 0 }
          : runPlan(variantName, options.maxRuns);
        const cell = await measureCell(lab, tool, hosts, target, plan);
        cells.push(cell);
        log(`  ${cell.runs} runs, first ${Math.round(cell.first.times.median)} ms`);

        if (tool.key === "library" && variantName === "recipe" && hosts.length > 1) {
          log(`${tool.name}: no-change up with refresh, and single operations ...`);
          details = await measureLibraryDetails(lab, tool as LibraryTool, hosts, target, 3);
        }
      }
    }
  }
  return { cells, details };
}

/**
 * Tells whether a cell is Ansible or Puppet on the large variant on many hosts. Each takes
 * about a minute per apply on one host, and here all hosts share the machine's 2 cores.
 */
function isHeavy(tool: Tool, variantName: VariantName, hosts: number): boolean {
  return variantName === "large" && hosts > 1 && (tool.key === "ansible" || tool.key === "puppet");
}

function elapsed(since: number): string {
  const seconds = Math.round((performance.now() - since) / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
