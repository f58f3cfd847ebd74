/**
 * Test helpers that run the traffic generator inside lab hosts and read netfilter state there.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import type { Lab, LabHost } from "../../src/lab";
import { parseSave } from "../../src/netfilter/parse";
import type { Attempt, AttemptReport, HoldReport, Outcome } from "./generator";

const GENERATOR_PATH = join(__dirname, "generator.ts");

/** The command that runs the generator in `mode`, with TypeScript loaded through tsx. */
function generatorArgv(mode: string, args: readonly string[]): string[] {
  return [process.execPath, "--require", require.resolve("tsx/cjs"), GENERATOR_PATH, mode, ...args];
}

/** Builds the nsenter prefix that runs a command in a host's network, mount and UTS namespaces. */
function enterHost(host: LabHost): string[] {
  return ["nsenter", `--target=${host.sshdPid}`, "--net", "--mount", "--uts", "--"];
}

export interface EchoServer {
  readonly pid: number;
  /** Kills the server by its PID and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts the generator's echo server on `port` of `host` and waits until it listens.
 * The server exits by itself after `lifetimeMs`, so a crashed test leaves nothing running for long.
 */
export function startEchoServer(
  host: LabHost,
  port: number,
  lifetimeMs = 120_000,
): Promise<EchoServer> {
  // nsenter without --fork execs the program, so the child's PID is the server's PID.
  const child: ChildProcess = spawn(
    enterHost(host)[0],
    [
      ...enterHost(host).slice(1),
      ...generatorArgv("serve", ["--port", String(port), "--lifetime-ms", String(lifetimeMs)]),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, "SIGTERM");
    }
    await exited;
  };

  return new Promise((resolve, reject) => {
    let stderr = "";
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`echo server on ${host.name}:${port} did not start in 10 s: ${stderr}`));
    }, 10_000);
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    child.stdout?.once("data", () => {
      clearTimeout(timer);
      resolve({ pid: child.pid ?? 0, stop });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`echo server on ${host.name}:${port} exited with ${code}: ${stderr}`));
    });
  });
}

/** Runs one bounded generator mode inside `host` and returns its JSON report. */
async function runGenerator<T>(
  lab: Lab,
  host: LabHost,
  mode: string,
  args: readonly string[],
): Promise<T> {
  const result = await lab.exec(host, generatorArgv(mode, args), { timeoutMs: 45_000 });
  if (result.code !== 0) {
    throw new Error(
      `traffic generator "${mode}" on ${host.name} failed (${result.code}): ${result.stderr}`,
    );
  }
  return JSON.parse(result.stdout.trim().split("\n").pop() ?? "") as T;
}

export interface FloodOptions {
  readonly target: string;
  readonly port: number;
  readonly durationMs: number;
  readonly maxAttempts: number;
  readonly concurrency: number;
  readonly timeoutMs: number;
  /** Local addresses to cycle through; the kernel chooses when left out. */
  readonly sources?: readonly string[];
}

export function flood(lab: Lab, host: LabHost, options: FloodOptions): Promise<AttemptReport> {
  return runGenerator(lab, host, "flood", [
    "--target",
    options.target,
    "--port",
    String(options.port),
    "--duration-ms",
    String(options.durationMs),
    "--max-attempts",
    String(options.maxAttempts),
    "--concurrency",
    String(options.concurrency),
    "--timeout-ms",
    String(options.timeoutMs),
    ...(options.sources ?? []).flatMap((source) => ["--source", source]),
  ]);
}

export interface PaceOptions {
  readonly target: string;
  readonly port: number;
  readonly ratePerSecond: number;
  readonly durationMs: number;
  readonly timeoutMs: number;
}

export function pace(lab: Lab, host: LabHost, options: PaceOptions): Promise<AttemptReport> {
  return runGenerator(lab, host, "pace", [
    "--target",
    options.target,
    "--port",
    String(options.port),
    "--rate",
    String(options.ratePerSecond),
    "--duration-ms",
    String(options.durationMs),
    "--timeout-ms",
    String(options.timeoutMs),
  ]);
}

export interface HoldOptions {
  readonly target: string;
  readonly port: number;
  readonly durationMs: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

export function hold(lab: Lab, host: LabHost, options: HoldOptions): Promise<HoldReport> {
  return runGenerator(lab, host, "hold", [
    "--target",
    options.target,
    "--port",
    String(options.port),
    "--duration-ms",
    String(options.durationMs),
    "--interval-ms",
    String(options.intervalMs),
    "--timeout-ms",
    String(options.timeoutMs),
  ]);
}

/** Runs a command in `host` and raises with its stderr when it fails. */
export async function execOrThrow(
  lab: Lab,
  host: LabHost,
  argv: readonly string[],
  input?: string,
): Promise<string> {
  const result = await lab.exec(host, argv, input === undefined ? {} : { input });
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} on ${host.name} failed (${result.code}): ${result.stderr}`);
  }
  return result.stdout;
}

/** Packet counters of every rule of `chain` in the filter table, in rule order. */
export async function chainCounters(
  lab: Lab,
  host: LabHost,
  family: "ipv4" | "ipv6",
  chain: string,
): Promise<{ packets: number; rule: string }[]> {
  const program = family === "ipv4" ? "iptables-save" : "ip6tables-save";
  const dump = parseSave(await execOrThrow(lab, host, [program, "-c", "-t", "filter"]));
  const filter = dump.tables.find((table) => table.name === "filter");
  return (filter?.rules ?? [])
    .filter((rule) => rule.chain === chain)
    .map((rule) => ({ packets: Number(rule.counters?.packets ?? 0n), rule: rule.text }));
}

/** One line of /proc/net/ipt_hashlimit/NAME (or ip6t_hashlimit): an entry and its bucket. */
export interface HashlimitEntryLine {
  /** The masked source address, as the kernel prints it. */
  readonly source: string;
  readonly credit: bigint;
  readonly creditCap: bigint;
  readonly cost: bigint;
}

/** Reads the live entries of hashlimit table `name` on `host`. */
export async function hashlimitEntries(
  lab: Lab,
  host: LabHost,
  family: "ipv4" | "ipv6",
  name: string,
): Promise<HashlimitEntryLine[]> {
  const directory = family === "ipv4" ? "ipt_hashlimit" : "ip6t_hashlimit";
  const text = await execOrThrow(lab, host, ["cat", `/proc/net/${directory}/${name}`]);
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      // "<seconds left> <src>:<port>-><dst>:<port> <credit> <credit_cap> <cost>"
      const fields = line.trim().split(/\s+/);
      const source = fields[1].split("->")[0].replace(/:\d+$/, "");
      return {
        source,
        credit: BigInt(fields[2]),
        creditCap: BigInt(fields[3]),
        cost: BigInt(fields[4]),
      };
    });
}

/** Counts attempts by outcome. */
export function countOutcomes(report: AttemptReport, source?: string): Record<Outcome, number> {
  const counts: Record<Outcome, number> = { connected: 0, refused: 0, timeout: 0, error: 0 };
  for (const attempt of report.attempts) {
    if (source === undefined || attempt.source === source) counts[attempt.outcome]++;
  }
  return counts;
}

/** Seconds from the first to the last attempt. */
export function spanSeconds(attempts: readonly Attempt[]): number {
  if (attempts.length === 0) return 0;
  return (attempts[attempts.length - 1].atMs - attempts[0].atMs) / 1000;
}
