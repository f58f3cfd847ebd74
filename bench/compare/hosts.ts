/**
 * Lab host steps outside the timed applies: wiping the filter table, reading back the managed
 * lines, and counting the SSH connections each host accepted. All of it runs
 * through `lab.exec` (no SSH), so none of it shows in the counts.
 */
import type { Lab, LabHost } from "../../src/lab";

/** A filter table with nothing in it: iptables-restore without --noflush replaces the table. */
const EMPTY_FILTER =
  "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/** Counts TCP SYNs to port 22: a rule with no target only counts. */
const SSH_COUNTER = ["-p", "tcp", "--dport", "22", "--syn"];

const BUILT_IN_FILTER_CHAINS = new Set(["INPUT", "FORWARD", "OUTPUT"]);

async function execOrThrow(
  lab: Lab,
  host: LabHost,
  argv: readonly string[],
  input?: string,
): Promise<string> {
  const result = await lab.exec(host, argv, { input, timeoutMs: 60_000 });
  if (result.code !== 0) {
    throw new Error(
      `${argv.join(" ")} on lab host ${host.name} failed with exit code ${result.code}: ` +
        result.stderr.trim(),
    );
  }
  return result.stdout;
}

/** Empties each host's filter table and (re)installs the SSH connection counter. */
export async function resetHosts(lab: Lab, hosts: readonly LabHost[]): Promise<void> {
  await Promise.all(
    hosts.map(async (host) => {
      await execOrThrow(lab, host, ["iptables-restore"], EMPTY_FILTER);
      const present = await lab.exec(host, [
        "iptables",
        "-t",
        "raw",
        "-C",
        "PREROUTING",
        ...SSH_COUNTER,
      ]);
      if (present.code !== 0) {
        await execOrThrow(lab, host, ["iptables", "-t", "raw", "-A", "PREROUTING", ...SSH_COUNTER]);
      }
    }),
  );
}

/** SSH connections each host has accepted since its counter was installed. */
export async function sshConnectionCounts(lab: Lab, hosts: readonly LabHost[]): Promise<number[]> {
  return Promise.all(
    hosts.map(async (host) => {
      const text = await execOrThrow(lab, host, ["iptables-save", "-c", "-t", "raw"]);
      const line = text
        .split("\n")
        .find((l) => l.includes("-A PREROUTING") && l.includes("--dport 22"));
      const match = line === undefined ? null : /^\[(\d+):\d+\]/.exec(line);
      if (match === null) {
        throw new Error(`the SSH connection counter is missing on lab host ${host.name}`);
      }
      return Number(match[1]);
    }),
  );
}

/**
 * Extracts the filter table's user chain declarations (as ":NAME", policy and counters dropped) and its
 * rules, in iptables-save order. On a host reset with `resetHosts`, these are exactly the lines
 * the tool under test wrote.
 */
export function managedLines(save: string): string[] {
  const lines: string[] = [];
  let inFilter = false;
  for (const line of save.split("\n")) {
    if (line.startsWith("*")) inFilter = line === "*filter";
    else if (!inFilter) continue;
    else if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0];
      if (!BUILT_IN_FILTER_CHAINS.has(name)) lines.push(`:${name}`);
    } else if (line.startsWith("-A ")) lines.push(line);
  }
  return lines;
}

/** Reads each host's filter table and returns its managed lines. */
export async function readManagedLines(lab: Lab, hosts: readonly LabHost[]): Promise<string[][]> {
  return Promise.all(
    hosts.map(async (host) =>
      managedLines(await execOrThrow(lab, host, ["iptables-save", "-t", "filter"])),
    ),
  );
}

/**
 * Compares what each host contains with what the tool should have written. Returns undefined when
 * every host matches, else what differs on the first host that differs: lines missing, lines
 * extra, or the same lines in another order.
 */
export function compareLines(
  hosts: readonly LabHost[],
  actual: readonly (readonly string[])[],
  expectedOn: (host: LabHost) => readonly string[],
): string | undefined {
  for (const [i, lines] of actual.entries()) {
    const expected = expectedOn(hosts[i]);
    if (lines.length === expected.length && lines.every((line, n) => line === expected[n])) {
      continue;
    }
    const missing = expected.filter((line) => !lines.includes(line));
    const extra = lines.filter((line) => !expected.includes(line));
    const parts = [
      ...missing.slice(0, 2).map((line) => `missing ${JSON.stringify(line)}`),
      ...extra.slice(0, 2).map((line) => `extra ${JSON.stringify(line)}`),
    ];
    const more = missing.length + extra.length - parts.length;
    if (more > 0) parts.push(`${more} more`);
    if (parts.length === 0) parts.push("same lines in another order");
    return `${hosts[i].name}: ${parts.join("; ")}`;
  }
  return undefined;
}
