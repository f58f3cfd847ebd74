import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { closeAllHosts, getHost, type Host, type HostEvent } from "../../src/host";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { formatMarker } from "../../src/netfilter/marker";
import type { DesiredRule } from "../../src/netfilter/plan";

const LAB_NAME = "host-batching";
const CALLS = 30;

let lab: Lab;
let labHost: LabHost;
let host: Host;
const events: HostEvent[] = [];

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }] });
  labHost = lab.hosts[0];
  host = await getHost(
    { host: labHost.ipv4, privateKey: labHost.privateKey, hostKey: labHost.hostKey },
    { onEvent: (event) => events.push(event) },
  );
});

afterAll(async () => {
  closeAllHosts();
  await lab?.destroy();
});

/** Builds a managed rule in iptables-save form that matches one source address. */
function rule(chain: string, id: string, order: number, target = "-j ACCEPT"): DesiredRule {
  const marker = { id, order };
  return {
    marker,
    chain,
    line:
      `-A ${chain} -s 198.18.201.${order}/32 -m comment --comment "${formatMarker(marker)}" ` +
      target,
  };
}

/** Returns the lines of one chain as iptables-save prints them on the host. */
async function chainLines(chain: string): Promise<string[]> {
  const result = await lab.exec(labHost, ["iptables-save", "-t", "filter"]);
  return result.stdout.split("\n").filter((line) => line.startsWith(`-A ${chain} `));
}

/** Counts the apply transactions and the confirm connections among the events since `from`. */
function countSince(from: number): { applies: number; confirms: number } {
  const recent = events.slice(from);
  return {
    applies: recent.filter((e) => e.kind === "command-start" && e.command === "apply ipv4 filter")
      .length,
    confirms: recent.filter((e) => e.kind === "connect" && e.purpose === "confirm").length,
  };
}

/** Upserts each rule in its own concurrent call and returns the settled outcomes. */
function upsertEach(rules: readonly DesiredRule[]) {
  return Promise.allSettled(
    rules.map((desired) => host.applyTableChange("ipv4", "filter", { upsertRules: [desired] })),
  );
}

describe("applyTableChange batching", () => {
  it("merges concurrent calls into few transactions", async () => {
    await host.applyTableChange("ipv4", "filter", { createChains: ["BATCH"] });
    const rules = Array.from({ length: CALLS }, (_, i) => rule("BATCH", `batch/${i}`, i + 1));

    const from = events.length;
    const outcomes = await upsertEach(rules);

    expect(outcomes.map((outcome) => outcome.status)).toEqual(rules.map(() => "fulfilled"));
    expect(countSince(from).applies).toBeLessThanOrEqual(3);
    expect(await chainLines("BATCH")).toEqual(rules.map((desired) => desired.line));
  });

  it("arms one dead-man switch per batch", async () => {
    await host.applyTableChange("ipv4", "filter", {
      createChains: ["BATCH-IN"],
      upsertRules: [rule("INPUT", "batch-in/hook", 1, "-j BATCH-IN")],
    });
    const rules = Array.from({ length: 10 }, (_, i) => rule("BATCH-IN", `batch-in/${i}`, i + 1));

    const from = events.length;
    const outcomes = await upsertEach(rules);

    expect(outcomes.map((outcome) => outcome.status)).toEqual(rules.map(() => "fulfilled"));
    const counts = countSince(from);
    expect(counts.applies).toBeLessThanOrEqual(3);
    expect(counts.confirms).toBe(counts.applies);
    expect(await chainLines("BATCH-IN")).toEqual(rules.map((desired) => desired.line));
  });

  it("fails only the rejected change", async () => {
    await host.applyTableChange("ipv4", "filter", { createChains: ["BATCH-BAD"] });
    const bad = CALLS / 2;
    const rules = Array.from({ length: CALLS }, (_, i) =>
      rule("BATCH-BAD", `batch-bad/${i}`, i + 1, i === bad ? "-j NO-SUCH-CHAIN" : "-j ACCEPT"),
    );

    const outcomes = await upsertEach(rules);

    outcomes.forEach((outcome, i) => {
      if (i === bad) {
        expect(outcome.status).toBe("rejected");
        const reason: unknown = outcome.status === "rejected" ? outcome.reason : undefined;
        expect(hasErrorCode(reason, "APPLY_REJECTED")).toBe(true);
      } else {
        expect(outcome.status).toBe("fulfilled");
      }
    });
    const good = rules.filter((_, i) => i !== bad).map((desired) => desired.line);
    expect(await chainLines("BATCH-BAD")).toEqual(good);
  });
});
