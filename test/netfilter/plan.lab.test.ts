import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { parseSave } from "../../src/netfilter/parse";
import { planTableChange, type TableChange, type TablePlan } from "../../src/netfilter/plan";
import { RESERVED_CHAIN_NAMES, validateChainName } from "../../src/netfilter/plan-request";
import { splitArgs } from "../../src/netfilter/tokenize";
import type { Family, SaveTable } from "../../src/netfilter/types";
import {
  applyScript,
  chainsOf,
  checkRequestedState,
  compareText,
  dumpText,
  lineMarker,
  tableCaseArb,
  type ChainState,
} from "./plan-cases";

const LAB_NAME = "plan-lab";

/** Docker's and fail2ban's chains as they print them, with lab addresses in the rules. */
const FOREIGN_BASELINE = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -i lo -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 198.18.200.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A f2b-sshd -s 198.18.99.5/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
`;

const JUMP =
  '-A INPUT -p tcp -m tcp --dport 443 -m conntrack --ctstate NEW -m comment --comment "pulumi-iptables:web/jump:10" -j RATE-LIMIT';
const OK_50 =
  '-A RATE-LIMIT -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name web -m comment --comment "pulumi-iptables:web/ok:10" -j ACCEPT';
const OK_100 =
  '-A RATE-LIMIT -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name web -m comment --comment "pulumi-iptables:web/ok:10" -j ACCEPT';
const LOG_20 =
  '-A RATE-LIMIT -m limit --limit 1/sec -m comment --comment "pulumi-iptables:web/log:20" -j LOG --log-prefix "rate-limit: "';
const LOG_40 =
  '-A RATE-LIMIT -m limit --limit 1/sec -m comment --comment "pulumi-iptables:web/log:40" -j LOG --log-prefix "rate-limit: "';
const REJECT =
  '-A RATE-LIMIT -p tcp -m comment --comment "pulumi-iptables:web/reject:30" -j REJECT --reject-with tcp-reset';
const ALLOW_LAB =
  '-A RATE-LIMIT -s 198.18.0.0/15 -m comment --comment "pulumi-iptables:web/allow-lab:5" -j RETURN';
const BLOCK =
  '-A DOCKER-USER -s 198.18.50.0/24 -m comment --comment "pulumi-iptables:docker/block:5" -j DROP';
const FOREIGN_IN_OWNED = "-A RATE-LIMIT -s 198.18.77.0/24 -j DROP";

/** Builds an upserted rule from its line, reading chain and marker from the line itself. */
function upsert(line: string) {
  const chain = line.split(" ")[1];
  return { chain, marker: lineMarker(line)!, line };
}

const FIRST_CHANGE: TableChange = {
  createChains: ["RATE-LIMIT"],
  upsertRules: [JUMP, OK_50, LOG_20, REJECT, BLOCK].map(upsert),
};
const SECOND_CHANGE: TableChange = {
  createChains: ["RATE-LIMIT"],
  upsertRules: [JUMP, OK_100, LOG_40, REJECT, ALLOW_LAB, BLOCK].map(upsert),
};
const REMOVAL: TableChange = {
  deleteChains: ["RATE-LIMIT"],
  deleteRules: ["web/jump", "web/ok", "web/log", "web/reject", "web/allow-lab", "docker/block"],
};

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
});

afterAll(async () => {
  await lab?.destroy();
});

/** Runs a command in the lab host and returns its stdout, failing the test on a non-zero exit. */
async function run(host: LabHost, argv: string[], input?: string): Promise<string> {
  const result = await lab.exec(host, argv, input === undefined ? {} : { input });
  if (result.code !== 0) {
    throw new Error(
      `${argv.join(" ")} exited with ${result.code} on ${host.backend}: ${result.stderr}\n` +
        `input:\n${input ?? ""}`,
    );
  }
  return result.stdout;
}

function program(family: Family, name: "save" | "restore"): string {
  return `${family === "ipv6" ? "ip6tables" : "iptables"}-${name}`;
}

/** Replaces the filter table of a host with `dump`, as a full (flushing) restore does. */
async function loadTable(host: LabHost, family: Family, dump: string): Promise<void> {
  await run(host, [program(family, "restore")], dump);
}

async function readTable(host: LabHost, family: Family): Promise<SaveTable> {
  const dump = parseSave(await run(host, [program(family, "save"), "-t", "filter"]));
  return dump.tables[0];
}

function rulesOf(table: SaveTable, chain: string): string[] {
  return table.rules.filter((rule) => rule.chain === chain).map((rule) => rule.text);
}

/** Lists the chain headers (name and policy) and foreign rules of the chains the change does not own. */
function foreignView(table: SaveTable, change: TableChange): string[] {
  const owned = new Set([...(change.createChains ?? []), ...(change.deleteChains ?? [])]);
  const lines: string[] = [];
  for (const chain of table.chains) {
    if (owned.has(chain.name)) continue;
    lines.push(`:${chain.name} ${chain.policy ?? "-"}`);
    const purged = (change.purgeUnmanaged ?? []).includes(chain.name);
    for (const text of rulesOf(table, chain.name)) {
      if (lineMarker(text) === undefined && !purged) lines.push(text);
    }
  }
  return lines;
}

interface Applied {
  readonly before: SaveTable;
  readonly plan: TablePlan;
  readonly after: SaveTable;
}

/**
 * Plans `change` against the host's live filter table, applies the script with
 * iptables-restore --noflush, reads the table back, and checks that foreign chains and rules
 * are byte-identical and that planning again gives an empty plan.
 */
async function planAndApply(host: LabHost, family: Family, change: TableChange): Promise<Applied> {
  const before = await readTable(host, family);
  const plan = planTableChange(before, change, { table: "filter" });
  expect(plan.script.split("\n").filter((line) => line.startsWith(":"))).toEqual([]);
  if (plan.script !== "") await run(host, [program(family, "restore"), "--noflush"], plan.script);

  const after = await readTable(host, family);
  expect(foreignView(after, change)).toEqual(foreignView(before, change));
  expect(planTableChange(after, change, { table: "filter" }).script).toBe("");
  return { before, plan, after };
}

describe.each(["nft", "legacy"] as const)("planTableChange on iptables-%s", (backend) => {
  const host = (): LabHost => lab.hosts.find((candidate) => candidate.backend === backend)!;

  it("prints the fixture lines as written", async () => {
    await loadTable(host(), "ipv4", FOREIGN_BASELINE);
    const live = await readTable(host(), "ipv4");
    const expected = parseSave(FOREIGN_BASELINE).tables[0];
    expect(live.rules.map((rule) => rule.text)).toEqual(expected.rules.map((rule) => rule.text));
    expect(live.chains.map((chain) => chain.name)).toEqual(expected.chains.map((c) => c.name));
  });

  it("manages rules among Docker and fail2ban chains", async () => {
    await loadTable(host(), "ipv4", FOREIGN_BASELINE);

    // Create the owned chain, fill it and jump to it.
    const first = await planAndApply(host(), "ipv4", FIRST_CHANGE);
    expect(first.plan.steps[0].line).toBe("-N RATE-LIMIT");
    expect(rulesOf(first.after, "INPUT")).toEqual([
      JUMP,
      "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd",
      "-A INPUT -i lo -j ACCEPT",
    ]);
    expect(rulesOf(first.after, "RATE-LIMIT")).toEqual([OK_50, LOG_20, REJECT]);
    expect(rulesOf(first.after, "DOCKER-USER")).toEqual([BLOCK, "-A DOCKER-USER -j RETURN"]);

    // Replace one rule in place, move one, insert one.
    const second = await planAndApply(host(), "ipv4", SECOND_CHANGE);
    expect(second.plan.steps.map((step) => step.line.split(" ").slice(0, 3).join(" "))).toEqual([
      "-D RATE-LIMIT 2",
      "-R RATE-LIMIT 1",
      "-I RATE-LIMIT 1",
      "-A RATE-LIMIT -m",
    ]);
    expect(rulesOf(second.after, "RATE-LIMIT")).toEqual([ALLOW_LAB, OK_100, REJECT, LOG_40]);

    // Another tool adds a duplicate above, a copy of the jump below, and a foreign rule.
    await run(host(), ["iptables", "-I", "RATE-LIMIT", "1", ...splitArgs(REJECT).slice(2)]);
    await run(host(), ["iptables", ...splitArgs(JUMP)]);
    await run(host(), [
      "iptables",
      "-I",
      "RATE-LIMIT",
      "4",
      ...splitArgs(FOREIGN_IN_OWNED).slice(2),
    ]);
    const repaired = await planAndApply(host(), "ipv4", SECOND_CHANGE);
    expect(repaired.plan.steps.map((step) => step.reason)).toEqual([
      "delete duplicate of a managed rule",
      "delete duplicate of a managed rule",
    ]);
    expect(rulesOf(repaired.after, "INPUT")[0]).toBe(JUMP);
    expect(rulesOf(repaired.after, "INPUT")).toHaveLength(3);
    expect(rulesOf(repaired.after, "RATE-LIMIT")).toEqual([
      ALLOW_LAB,
      OK_100,
      FOREIGN_IN_OWNED,
      REJECT,
      LOG_40,
    ]);

    // Purging removes the foreign rule from the owned chain only.
    const purged = await planAndApply(host(), "ipv4", {
      ...SECOND_CHANGE,
      purgeUnmanaged: ["RATE-LIMIT"],
    });
    expect(purged.plan.steps.map((step) => step.line)).toEqual(["-D RATE-LIMIT 3"]);

    // Deleting the chain while its jump stays is a conflict, and changes nothing.
    expect(() =>
      planTableChange(purged.after, { deleteChains: ["RATE-LIMIT"] }, { table: "filter" }),
    ).toThrow(/jump to it/);

    // Removing everything gives back the foreign baseline, byte for byte.
    const removed = await planAndApply(host(), "ipv4", REMOVAL);
    expect(removed.plan.steps.at(-1)!.line).toBe("-X RATE-LIMIT");
    const baseline = parseSave(FOREIGN_BASELINE).tables[0];
    expect(removed.after.rules.map((rule) => rule.text)).toEqual(
      baseline.rules.map((rule) => rule.text),
    );
    expect(removed.after.chains.map((chain) => `${chain.name} ${chain.policy}`)).toEqual(
      baseline.chains.map((chain) => `${chain.name} ${chain.policy}`),
    );
  });

  it("manages an IPv6 rule beside fail2ban", async () => {
    const baseline = [
      "*filter",
      ":INPUT ACCEPT [0:0]",
      ":FORWARD ACCEPT [0:0]",
      ":OUTPUT ACCEPT [0:0]",
      ":f2b-sshd - [0:0]",
      "-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd",
      "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT",
      "-A f2b-sshd -s fd6c:6162:0:99::5/128 -j REJECT --reject-with icmp6-port-unreachable",
      "-A f2b-sshd -j RETURN",
      "COMMIT",
      "",
    ].join("\n");
    const ssh =
      '-A INPUT -s fd6c:6162:0:7::/64 -p tcp -m tcp --dport 22 -m comment --comment "pulumi-iptables:ssh6:10" -j ACCEPT';
    await loadTable(host(), "ipv6", baseline);

    const added = await planAndApply(host(), "ipv6", { upsertRules: [upsert(ssh)] });
    expect(rulesOf(added.after, "INPUT")[0]).toBe(ssh);

    const removed = await planAndApply(host(), "ipv6", { deleteRules: ["ssh6"] });
    expect(removed.after.rules.map((rule) => rule.text)).toEqual(
      parseSave(baseline).tables[0].rules.map((rule) => rule.text),
    );
  });

  it("reaches random states with iptables-restore", async () => {
    const cases = tableCaseArb.filter(({ chains, change }) => {
      try {
        planTableChange(parseSave(dumpText("filter", chains)).tables[0], change, {
          table: "filter",
        });
        return true;
      } catch (error) {
        if (hasErrorCode(error, "PLAN_CONFLICT")) return false;
        throw error;
      }
    });
    await fc.assert(
      fc.asyncProperty(cases, async ({ chains, change }) => {
        await loadTable(host(), "ipv4", dumpText("filter", chains));
        const loaded = chainsOf(await readTable(host(), "ipv4"));
        expect(sortChains(loaded)).toEqual(sortChains(withBuiltins(chains)));

        const { plan, after } = await planAndApply(host(), "ipv4", change);
        const simulated = applyScript("filter", chains, plan.script);
        expect(sortChains(chainsOf(after))).toEqual(sortChains(simulated));
        checkRequestedState(chains, change, chainsOf(after));
      }),
      { numRuns: 25 },
    );
  });

  it("rejects the chain names iptables rejects", async () => {
    const names = [
      ...RESERVED_CHAIN_NAMES,
      "ERROR",
      "C".repeat(28),
      "C".repeat(29),
      "-x",
      "!x",
      "a'b",
      "a\\b",
      "docker-user",
    ];
    for (const name of names) {
      let plannerAccepts = !RESERVED_CHAIN_NAMES.has(name);
      try {
        validateChainName(name, "name");
      } catch {
        plannerAccepts = false;
      }
      // The planner accepts a name only when both families accept it.
      const accepted: boolean[] = [];
      for (const command of ["iptables", "ip6tables"]) {
        const result = await lab.exec(host(), [command, "-w", "-N", name]);
        accepted.push(result.code === 0);
        if (result.code === 0) await run(host(), [command, "-w", "-X", name]);
      }
      expect(accepted.every(Boolean), `iptables and ip6tables -N ${JSON.stringify(name)}`).toBe(
        plannerAccepts,
      );
    }
  });
});

const BUILTIN_FILTER = ["INPUT", "FORWARD", "OUTPUT"];

function withBuiltins(chains: readonly ChainState[]): ChainState[] {
  const missing = BUILTIN_FILTER.filter((name) => !chains.some((chain) => chain.name === name));
  return [...chains, ...missing.map((name) => ({ name, rules: [] }))];
}

function sortChains(chains: readonly ChainState[]): ChainState[] {
  return [...chains].sort((a, b) => compareText(a.name, b.name));
}
