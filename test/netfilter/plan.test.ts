import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode, isIptablesError } from "../../src/errors";
import { sameRule } from "../../src/netfilter/canonical";
import { ruleMarker } from "../../src/netfilter/managed";
import type { Marker } from "../../src/netfilter/marker";
import { planTableChange, type DesiredRule, type TableChange } from "../../src/netfilter/plan";
import {
  applyScript,
  checkRequestedState,
  desiredRule,
  jumpTarget,
  lineMarker,
  liveTable,
  managedLine,
  tableCaseArb,
  type ChainState,
} from "./plan-cases";

const SSH = "-p tcp -m tcp --dport 22";
const WEB = "-p tcp -m tcp --dport 443";
const FOREIGN_A = "-A INPUT -s 198.19.0.1/32 -j DROP";
const FOREIGN_B = "-A INPUT -s 198.19.0.2/32 -j DROP";

function m(id: string, order: number): Marker {
  return { id, order };
}

function plan(chains: readonly ChainState[], change: TableChange) {
  return planTableChange(liveTable("filter", chains), change, { table: "filter" });
}

function input(...rules: string[]): ChainState {
  return { name: "INPUT", rules };
}

/** Plans, applies the plan to the chains and returns the rules of `chain` afterwards. */
function rulesAfter(
  chains: readonly ChainState[],
  change: TableChange,
  chain = "INPUT",
): readonly string[] {
  const result = applyScript("filter", chains, plan(chains, change).script);
  return result.find((state) => state.name === chain)?.rules ?? [];
}

function expectCode(
  action: () => unknown,
  code: "INVALID_INPUT" | "PLAN_CONFLICT",
): Record<string, unknown> {
  try {
    action();
  } catch (error) {
    expect(isIptablesError(error)).toBe(true);
    expect((error as { code: string }).code).toBe(code);
    return (error as { details: Record<string, unknown> }).details;
  }
  throw new Error(`expected an IptablesError ${code}`);
}

describe("ruleMarker", () => {
  it("finds the marker in the comment arguments", () => {
    expect(
      ruleMarker({
        args: ["-m", "comment", "--comment", "pulumi-iptables:ssh:10", "-j", "ACCEPT"],
      }),
    ).toEqual(m("ssh", 10));
  });

  it("skips a user comment before the marker", () => {
    const args = [
      "-m",
      "comment",
      "--comment",
      "allow ssh",
      "-m",
      "comment",
      "--comment",
      "pulumi-iptables:ssh:-5",
    ];
    expect(ruleMarker({ args })).toEqual(m("ssh", -5));
  });

  it("returns undefined for foreign rules", () => {
    expect(
      ruleMarker({
        args: ["-m", "comment", "--comment", "pulumi-iptables:bad id:1", "-j", "DROP"],
      }),
    ).toBeUndefined();
    expect(ruleMarker({ args: ["-s", "198.19.0.1/32", "-j", "DROP"] })).toBeUndefined();
    expect(ruleMarker({ args: ["-j", "pulumi-iptables:x:1"] })).toBeUndefined();
  });
});

describe("planTableChange placement", () => {
  it("plans nothing for an empty change", () => {
    const result = plan([input(FOREIGN_A, managedLine("INPUT", m("ssh", 10), SSH, "ACCEPT"))], {});
    expect(result.steps).toEqual([]);
    expect(result.script).toBe("");
    expect(result.table).toBe("filter");
  });

  it("plans nothing for an absent table and an empty change", () => {
    expect(planTableChange(undefined, {}, { table: "nat" }).script).toBe("");
  });

  it("appends a rule to an empty chain with its own line", () => {
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const result = plan([input()], { upsertRules: [rule] });
    expect(result.script).toBe(`*filter\n${rule.line}\nCOMMIT\n`);
    expect(result.steps).toEqual([
      { line: rule.line, reason: "insert new rule", chain: "INPUT", markerId: "ssh" },
    ]);
  });

  it("inserts at the top when the chain has no managed rule", () => {
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const result = plan([input(FOREIGN_A, FOREIGN_B)], { upsertRules: [rule] });
    expect(result.steps.map((step) => step.line)).toEqual([
      `-I INPUT 1 ${SSH} -m comment --comment "pulumi-iptables:ssh:10" -j ACCEPT`,
    ]);
    expect(rulesAfter([input(FOREIGN_A, FOREIGN_B)], { upsertRules: [rule] })).toEqual([
      rule.line,
      FOREIGN_A,
      FOREIGN_B,
    ]);
  });

  it("inserts just above the first managed rule that sorts after it", () => {
    const low = managedLine("INPUT", m("low", 10), SSH, "ACCEPT");
    const high = managedLine("INPUT", m("high", 30), WEB, "ACCEPT");
    const middle = desiredRule("INPUT", m("middle", 20), WEB, "DROP");
    const chains = [input(low, FOREIGN_A, high, FOREIGN_B)];
    expect(plan(chains, { upsertRules: [middle] }).steps.map((step) => step.line)).toEqual([
      `-I INPUT 3 ${WEB} -m comment --comment "pulumi-iptables:middle:20" -j DROP`,
    ]);
    expect(rulesAfter(chains, { upsertRules: [middle] })).toEqual([
      low,
      FOREIGN_A,
      middle.line,
      high,
      FOREIGN_B,
    ]);
  });

  it("inserts just below the last managed rule when none sorts after it", () => {
    const low = managedLine("INPUT", m("low", 10), SSH, "ACCEPT");
    const last = desiredRule("INPUT", m("last", 90), WEB, "DROP");
    const chains = [input(FOREIGN_A, low, FOREIGN_B)];
    expect(rulesAfter(chains, { upsertRules: [last] })).toEqual([
      FOREIGN_A,
      low,
      last.line,
      FOREIGN_B,
    ]);
  });

  it("orders equal orders by id", () => {
    const b = managedLine("INPUT", m("b", 10), SSH, "ACCEPT");
    const a = desiredRule("INPUT", m("a", 10), WEB, "ACCEPT");
    const c = desiredRule("INPUT", m("c", 10), WEB, "DROP");
    expect(rulesAfter([input(b)], { upsertRules: [c, a] })).toEqual([a.line, b, c.line]);
  });

  it("places several new rules in marker order", () => {
    const rules = [30, 10, 20].map((order) =>
      desiredRule("INPUT", m(`r${order}`, order), SSH, "ACCEPT"),
    );
    const result = plan([input(FOREIGN_A)], { upsertRules: rules });
    expect(result.steps.map((step) => step.markerId)).toEqual(["r10", "r20", "r30"]);
    expect(rulesAfter([input(FOREIGN_A)], { upsertRules: rules })).toEqual([
      rules[1].line,
      rules[2].line,
      rules[0].line,
      FOREIGN_A,
    ]);
  });

  it("leaves a rule in order where it is among new foreign rules", () => {
    const low = managedLine("INPUT", m("low", 10), SSH, "ACCEPT");
    const high = managedLine("INPUT", m("high", 30), WEB, "ACCEPT");
    const change = { upsertRules: [desiredRule("INPUT", m("low", 10), SSH, "ACCEPT")] };
    expect(plan([input(FOREIGN_A, low, FOREIGN_B, high)], change).script).toBe("");
  });
});

describe("planTableChange repairs", () => {
  it("replaces a changed rule in place", () => {
    const old = managedLine("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "DROP");
    const result = plan([input(FOREIGN_A, old, FOREIGN_B)], { upsertRules: [rule] });
    expect(result.steps).toEqual([
      {
        line: `-R INPUT 2 ${SSH} -m comment --comment "pulumi-iptables:ssh:10" -j DROP`,
        reason: "replace changed rule",
        chain: "INPUT",
        markerId: "ssh",
      },
    ]);
  });

  it("replaces in place when a new order keeps the position", () => {
    const old = managedLine("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const next = managedLine("INPUT", m("web", 30), WEB, "ACCEPT");
    const rule = desiredRule("INPUT", m("ssh", 20), SSH, "ACCEPT");
    const lines = plan([input(old, next)], { upsertRules: [rule] }).steps.map((step) => step.line);
    expect(lines).toEqual([
      `-R INPUT 1 ${SSH} -m comment --comment "pulumi-iptables:ssh:20" -j ACCEPT`,
    ]);
  });

  it("moves a rule whose new order passes a managed neighbour", () => {
    const ssh = managedLine("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const web = managedLine("INPUT", m("web", 20), WEB, "ACCEPT");
    const moved = desiredRule("INPUT", m("ssh", 30), SSH, "ACCEPT");
    const chains = [input(ssh, FOREIGN_A, web, FOREIGN_B)];
    const result = plan(chains, { upsertRules: [moved] });
    expect(result.steps.map((step) => [step.line, step.reason])).toEqual([
      ["-D INPUT 1", "delete managed rule that is out of order"],
      [
        `-I INPUT 3 ${SSH} -m comment --comment "pulumi-iptables:ssh:30" -j ACCEPT`,
        "insert managed rule at its place",
      ],
    ]);
    expect(rulesAfter(chains, { upsertRules: [moved] })).toEqual([
      FOREIGN_A,
      web,
      moved.line,
      FOREIGN_B,
    ]);
  });

  it("moves the fewest rules to repair the order", () => {
    const lines = [50, 10, 20, 30, 40].map((order) =>
      managedLine("INPUT", m(`r${order}`, order), SSH, "ACCEPT"),
    );
    const desired = [10, 20, 30, 40, 50].map((order) =>
      desiredRule("INPUT", m(`r${order}`, order), SSH, "ACCEPT"),
    );
    const result = plan([input(...lines)], { upsertRules: desired });
    expect(result.steps.map((step) => step.line)).toEqual(["-D INPUT 1", desired[4].line]);
  });

  it("keeps one copy of a duplicated marker", () => {
    const stale = managedLine("INPUT", m("ssh", 10), SSH, "DROP");
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const chains = [input(stale, FOREIGN_A, rule.line, stale)];
    const result = plan(chains, { upsertRules: [rule] });
    expect(result.steps.map((step) => [step.line, step.reason])).toEqual([
      ["-D INPUT 4", "delete duplicate of a managed rule"],
      ["-D INPUT 1", "delete duplicate of a managed rule"],
    ]);
    expect(rulesAfter(chains, { upsertRules: [rule] })).toEqual([FOREIGN_A, rule.line]);
  });

  it("keeps the top copy when no copy is equal", () => {
    const staleA = managedLine("INPUT", m("ssh", 10), SSH, "DROP");
    const staleB = managedLine("INPUT", m("ssh", 10), SSH, "RETURN");
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const lines = plan([input(staleA, staleB)], { upsertRules: [rule] }).steps.map(
      (step) => step.line,
    );
    expect(lines).toEqual([
      "-D INPUT 2",
      `-R INPUT 1 ${SSH} -m comment --comment "pulumi-iptables:ssh:10" -j ACCEPT`,
    ]);
  });

  it("moves a rule to another chain", () => {
    const old = managedLine("INPUT", m("ssh", 10), SSH, "ACCEPT");
    const rule = desiredRule("RATE-LIMIT", m("ssh", 10), SSH, "ACCEPT");
    const chains = [input(FOREIGN_A, old), { name: "RATE-LIMIT", rules: [] }];
    const result = plan(chains, { upsertRules: [rule] });
    expect(result.steps).toEqual([
      {
        line: "-D INPUT 2",
        reason: "delete rule moved to chain RATE-LIMIT",
        chain: "INPUT",
        markerId: "ssh",
      },
      {
        line: rule.line,
        reason: "insert managed rule at its place",
        chain: "RATE-LIMIT",
        markerId: "ssh",
      },
    ]);
  });

  it("leaves rules the change does not name", () => {
    const outOfOrder = [
      managedLine("INPUT", m("b", 20), SSH, "ACCEPT"),
      managedLine("INPUT", m("a", 10), SSH, "ACCEPT"),
    ];
    const duplicate = managedLine("INPUT", m("b", 20), SSH, "ACCEPT");
    expect(
      plan([input(...outOfOrder, duplicate)], { upsertRules: [], deleteRules: [] }).script,
    ).toBe("");
  });

  it("keeps a rule equal by the semantic sameRule", () => {
    const live = managedLine(
      "INPUT",
      m("ssh", 10),
      SSH,
      "REJECT --reject-with icmp-port-unreachable",
    );
    const rule = desiredRule("INPUT", m("ssh", 10), SSH, "REJECT");
    const result = planTableChange(
      liveTable("filter", [input(live)]),
      { upsertRules: [rule] },
      { table: "filter", sameRule: (liveRule, desired) => sameRule(liveRule.text, desired.line) },
    );
    expect(result.script).toBe("");
  });

  it("uses the given sameRule", () => {
    const live = managedLine("INPUT", m("ssh", 10), "-p tcp -m tcp --dport 22", "ACCEPT");
    const rule = desiredRule("INPUT", m("ssh", 10), "-p tcp -m tcp --dport ssh", "ACCEPT");
    const chains = [input(live)];
    const seen: [string, string][] = [];
    const result = planTableChange(
      liveTable("filter", chains),
      { upsertRules: [rule] },
      {
        table: "filter",
        sameRule: (liveRule, desired) => {
          seen.push([liveRule.text, desired.line]);
          return true;
        },
      },
    );
    expect(result.script).toBe("");
    expect(seen).toContainEqual([live, rule.line]);
    expect(plan(chains, { upsertRules: [rule] }).steps).toHaveLength(1);
  });
});

describe("planTableChange deletions", () => {
  it("deletes marked rules wherever they are, bottom up", () => {
    const a1 = managedLine("INPUT", m("old", 10), SSH, "ACCEPT");
    const a2 = managedLine("RATE-LIMIT", m("old", 10), SSH, "ACCEPT");
    const keep = managedLine("INPUT", m("keep", 20), SSH, "ACCEPT");
    const chains = [
      input(a1, FOREIGN_A, a1, keep),
      { name: "RATE-LIMIT", rules: [FOREIGN_B.replace("INPUT", "RATE-LIMIT"), a2] },
    ];
    const result = plan(chains, { deleteRules: ["old", "absent"] });
    expect(result.steps).toEqual([
      { line: "-D INPUT 3", reason: "delete rule", chain: "INPUT", markerId: "old" },
      { line: "-D INPUT 1", reason: "delete rule", chain: "INPUT", markerId: "old" },
      { line: "-D RATE-LIMIT 2", reason: "delete rule", chain: "RATE-LIMIT", markerId: "old" },
    ]);
  });

  it("plans nothing for ids that are absent", () => {
    expect(plan([input(FOREIGN_A)], { deleteRules: ["absent"] }).script).toBe("");
  });

  it("purges foreign rules from a user chain only", () => {
    const chain = "RATE-LIMIT";
    const managed = managedLine(chain, m("ok", 10), SSH, "ACCEPT");
    const foreign = `-A ${chain} -s 198.19.0.9/32 -j DROP`;
    const chains = [input(FOREIGN_A), { name: chain, rules: [foreign, managed, foreign] }];
    const result = plan(chains, { purgeUnmanaged: [chain] });
    expect(result.steps.map((step) => [step.line, step.reason])).toEqual([
      [`-D ${chain} 3`, "delete foreign rule from a purged chain"],
      [`-D ${chain} 1`, "delete foreign rule from a purged chain"],
    ]);
    expect(rulesAfter(chains, { purgeUnmanaged: [chain] }, chain)).toEqual([managed]);
    expect(rulesAfter(chains, { purgeUnmanaged: [chain] })).toEqual([FOREIGN_A]);
  });
});

describe("planTableChange chains", () => {
  it("creates an absent chain with -N and fills it", () => {
    const rule = desiredRule("RATE-LIMIT", m("ok", 10), SSH, "ACCEPT");
    const jump = desiredRule("INPUT", m("jump", 10), "-p tcp", "RATE-LIMIT");
    const result = plan([input(FOREIGN_A)], {
      createChains: ["RATE-LIMIT"],
      upsertRules: [jump, rule],
    });
    expect(result.script).toBe(
      [
        "*filter",
        "-N RATE-LIMIT",
        `-I INPUT 1 -p tcp -m comment --comment "pulumi-iptables:jump:10" -j RATE-LIMIT`,
        rule.line,
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  it("creates nothing for a chain that exists", () => {
    const chains = [input(), { name: "RATE-LIMIT", rules: [] }];
    expect(plan(chains, { createChains: ["RATE-LIMIT"] }).script).toBe("");
  });

  it("never declares a chain", () => {
    const rule = desiredRule("NEW", m("ok", 10), SSH, "ACCEPT");
    const result = plan([input()], {
      createChains: ["NEW"],
      upsertRules: [rule],
      deleteChains: [],
    });
    expect(result.script.split("\n").filter((line) => line.startsWith(":"))).toEqual([]);
  });

  it("flushes and deletes an owned chain with managed rules", () => {
    const inside = managedLine("OLD", m("inside", 10), SSH, "ACCEPT");
    const jump = managedLine("INPUT", m("jump", 10), "-p tcp", "OLD");
    const chains = [input(FOREIGN_A, jump), { name: "OLD", rules: [inside] }];
    const result = plan(chains, { deleteChains: ["OLD"], deleteRules: ["jump"] });
    expect(result.script).toBe("*filter\n-D INPUT 2\n-F OLD\n-X OLD\nCOMMIT\n");
    expect(applyScript("filter", chains, result.script).map((chain) => chain.name)).toEqual([
      "INPUT",
      "FORWARD",
      "OUTPUT",
    ]);
  });

  it("deletes an empty chain without flushing it", () => {
    expect(plan([input(), { name: "OLD", rules: [] }], { deleteChains: ["OLD"] }).script).toBe(
      "*filter\n-X OLD\nCOMMIT\n",
    );
  });

  it("plans nothing for a chain to delete that is absent", () => {
    expect(plan([input()], { deleteChains: ["OLD"] }).script).toBe("");
  });

  it("deletes chains that jump to each other", () => {
    const chains = [
      input(),
      { name: "A", rules: [managedLine("A", m("a", 1), "", "B")] },
      { name: "B", rules: [managedLine("B", m("b", 1), "", "A")] },
    ];
    const result = plan(chains, { deleteChains: ["B", "A"] });
    expect(result.script).toBe("*filter\n-F A\n-F B\n-X A\n-X B\nCOMMIT\n");
    expect(() => applyScript("filter", chains, result.script)).not.toThrow();
  });

  it("purges foreign rules of a chain it deletes", () => {
    const chains = [input(), { name: "OLD", rules: ["-A OLD -s 198.19.0.3/32 -j DROP"] }];
    expect(plan(chains, { deleteChains: ["OLD"], purgeUnmanaged: ["OLD"] }).script).toBe(
      "*filter\n-F OLD\n-X OLD\nCOMMIT\n",
    );
  });

  it("rejects deleting a chain with foreign rules", () => {
    const foreign = "-A OLD -s 198.19.0.3/32 -j DROP";
    const chains = [
      input(),
      { name: "OLD", rules: [managedLine("OLD", m("x", 1), "", "ACCEPT"), foreign] },
    ];
    const details = expectCode(() => plan(chains, { deleteChains: ["OLD"] }), "PLAN_CONFLICT");
    expect(details.chain).toBe("OLD");
    expect(details.rules).toEqual([foreign]);
  });

  it("rejects deleting a chain that foreign rules jump to", () => {
    const chains = [input("-A INPUT -p tcp -j OLD"), { name: "OLD", rules: [] }];
    const details = expectCode(() => plan(chains, { deleteChains: ["OLD"] }), "PLAN_CONFLICT");
    expect(details.rules).toEqual(["-A INPUT -p tcp -j OLD"]);
  });

  it("rejects deleting a chain that a kept managed rule jumps to", () => {
    const jump = managedLine("INPUT", m("jump", 10), "-p tcp", "OLD");
    const chains = [input(jump), { name: "OLD", rules: [] }];
    expect(plan(chains, { deleteChains: ["OLD"], deleteRules: ["jump"] }).script).toBe(
      "*filter\n-D INPUT 1\n-X OLD\nCOMMIT\n",
    );
    const details = expectCode(() => plan(chains, { deleteChains: ["OLD"] }), "PLAN_CONFLICT");
    expect(details.rules).toEqual([jump]);
  });

  it("rejects an upserted rule that jumps to a deleted chain", () => {
    const chains = [input(), { name: "OLD", rules: [] }];
    const jump = desiredRule("INPUT", m("jump", 10), "", "OLD");
    expectCode(() => plan(chains, { deleteChains: ["OLD"], upsertRules: [jump] }), "PLAN_CONFLICT");
  });

  it("allows deleting a chain once its jump is replaced", () => {
    const jump = managedLine("INPUT", m("jump", 10), "-p tcp", "OLD");
    const chains = [input(jump), { name: "OLD", rules: [] }];
    const change = {
      deleteChains: ["OLD"],
      upsertRules: [desiredRule("INPUT", m("jump", 10), "-p tcp", "DROP")],
    };
    expect(plan(chains, change).steps.map((step) => step.line)).toEqual([
      '-R INPUT 1 -p tcp -m comment --comment "pulumi-iptables:jump:10" -j DROP',
      "-X OLD",
    ]);
  });

  it("rejects a rule in a chain that does not exist", () => {
    const rule = desiredRule("MISSING", m("x", 1), SSH, "ACCEPT");
    const details = expectCode(() => plan([input()], { upsertRules: [rule] }), "PLAN_CONFLICT");
    expect(details.chain).toBe("MISSING");
  });

  it("accepts a rule in a built-in chain of an absent table", () => {
    const rule = desiredRule("PREROUTING", m("x", 1), "-p tcp", "ACCEPT");
    const result = planTableChange(undefined, { upsertRules: [rule] }, { table: "raw" });
    expect(result.script).toBe(`*raw\n${rule.line}\nCOMMIT\n`);
  });
});

describe("planTableChange rules to create", () => {
  const theirs = managedLine("INPUT", m("other/stack/web", 0), SSH, "DROP");

  it("rejects a marker id a different live rule carries", () => {
    const ours = { ...desiredRule("INPUT", m("other/stack/web", 0), SSH, "ACCEPT"), create: true };

    const details = expectCode(
      () => plan([input(theirs)], { upsertRules: [ours] }),
      "PLAN_CONFLICT",
    );

    expect(details).toMatchObject({ markerId: "other/stack/web", live: theirs });
  });

  it("takes over an equal live rule with no step", () => {
    const ours = { ...desiredRule("INPUT", m("other/stack/web", 0), SSH, "DROP"), create: true };

    expect(plan([input(theirs)], { upsertRules: [ours] }).steps).toEqual([]);
  });

  it("replaces a different live rule when not creating", () => {
    const ours = desiredRule("INPUT", m("other/stack/web", 0), SSH, "ACCEPT");

    expect(rulesAfter([input(theirs)], { upsertRules: [ours] })).toEqual([ours.line]);
  });
});

describe("planTableChange new chains", () => {
  it("creates a chain that is absent", () => {
    expect(plan([input()], { newChains: ["FRESH"] }).steps.map((step) => step.line)).toEqual([
      "-N FRESH",
    ]);
  });

  it("rejects a chain that exists", () => {
    const details = expectCode(
      () => plan([input(), { name: "TAKEN", rules: [] }], { newChains: ["TAKEN"] }),
      "PLAN_CONFLICT",
    );
    expect(details).toMatchObject({ chain: "TAKEN", exists: true });
  });

  it("rejects a chain named twice, as in a merged batch", () => {
    const details = expectCode(
      () => plan([input()], { newChains: ["TWIN", "TWIN"] }),
      "PLAN_CONFLICT",
    );
    expect(details).toMatchObject({ chain: "TWIN", exists: false });
  });
});

describe("planTableChange required chains", () => {
  it("passes a built-in, live or created chain", () => {
    const change = {
      newChains: ["FRESH"],
      requireChains: ["INPUT", "DOCKER-USER", "FRESH"],
    };
    const steps = plan([input(), { name: "DOCKER-USER", rules: [] }], change).steps;
    expect(steps.map((step) => step.line)).toEqual(["-N FRESH"]);
  });

  it("rejects a missing chain before any step", () => {
    const details = expectCode(
      () => plan([input()], { newChains: ["FRESH"], requireChains: ["DOCKER-USER"] }),
      "PLAN_CONFLICT",
    );
    expect(details).toMatchObject({ chain: "DOCKER-USER", missing: true });
  });
});

describe("planTableChange jump loops", () => {
  const jumpToB = desiredRule("A", m("a-to-b", 1), "", "B");
  const jumpToA = desiredRule("B", m("b-to-a", 1), "", "A");

  it("rejects a rule that closes a loop", () => {
    const chains = [
      input("-A INPUT -j A"),
      { name: "A", rules: [jumpToB.line] },
      { name: "B", rules: [] },
    ];
    const details = expectCode(() => plan(chains, { upsertRules: [jumpToA] }), "PLAN_CONFLICT");
    expect(details.from).toBe("INPUT");
    expect(details.loop).toEqual(["A", "B", "A"]);
    expect(details.rules).toEqual([jumpToB.line, jumpToA.line]);
  });

  it("rejects a chain that jumps to itself", () => {
    const self = desiredRule("A", m("self", 1), "-p tcp", "A");
    const chains = [input("-A INPUT -j A"), { name: "A", rules: [] }];
    const details = expectCode(() => plan(chains, { upsertRules: [self] }), "PLAN_CONFLICT");
    expect(details.from).toBe("INPUT");
    expect(details.loop).toEqual(["A", "A"]);
    expect(details.rules).toEqual([self.line]);
  });

  it("accepts a loop no built-in chain reaches", () => {
    const chains = [input(), { name: "A", rules: [jumpToB.line] }, { name: "B", rules: [] }];
    expect(plan(chains, { upsertRules: [jumpToA] }).steps).toHaveLength(1);
  });
});

describe("planTableChange input checks", () => {
  const chains = [input()];
  const rule = (overrides: Partial<DesiredRule>): DesiredRule => ({
    ...desiredRule("INPUT", m("x", 1), SSH, "ACCEPT"),
    ...overrides,
  });

  it("accepts a chain name of 28 characters", () => {
    expect(plan(chains, { createChains: ["C".repeat(28)] }).steps).toHaveLength(1);
  });

  it.each([
    ["C".repeat(29), "too long"],
    ["", "empty"],
    ["A B", "whitespace"],
    ["A\tB", "tab"],
    ["-X", "leading dash"],
    ["!X", "leading bang"],
    ['A"B', "double quote"],
  ])("rejects chain name %j (%s)", (name) => {
    const details = expectCode(() => plan(chains, { createChains: [name] }), "INVALID_INPUT");
    expect(details.field).toBe("createChains");
    expectCode(() => plan(chains, { deleteChains: [name] }), "INVALID_INPUT");
    expectCode(() => plan(chains, { purgeUnmanaged: [name] }), "INVALID_INPUT");
  });

  it("rejects creating built-in chains and target names", () => {
    expectCode(() => plan(chains, { createChains: ["INPUT"] }), "INVALID_INPUT");
    expectCode(() => plan(chains, { createChains: ["LOG"] }), "INVALID_INPUT");
    expectCode(() => plan(chains, { createChains: ["ACCEPT"] }), "INVALID_INPUT");
  });

  it("rejects deleting or purging built-in chains", () => {
    expectCode(() => plan(chains, { deleteChains: ["FORWARD"] }), "INVALID_INPUT");
    expectCode(() => plan(chains, { purgeUnmanaged: ["INPUT"] }), "INVALID_INPUT");
  });

  it("rejects a chain both created and deleted", () => {
    expectCode(() => plan(chains, { createChains: ["X"], deleteChains: ["X"] }), "INVALID_INPUT");
  });

  it("rejects a line whose chain differs", () => {
    const line = managedLine("OUTPUT", m("x", 1), SSH, "ACCEPT");
    const details = expectCode(
      () => plan(chains, { upsertRules: [rule({ line })] }),
      "INVALID_INPUT",
    );
    expect(details.value).toBe(line);
  });

  it("rejects a line whose marker differs", () => {
    expectCode(() => plan(chains, { upsertRules: [rule({ marker: m("x", 2) })] }), "INVALID_INPUT");
    expectCode(() => plan(chains, { upsertRules: [rule({ marker: m("y", 1) })] }), "INVALID_INPUT");
  });

  it("rejects a line without a marker", () => {
    expectCode(
      () => plan(chains, { upsertRules: [rule({ line: `-A INPUT ${SSH} -j ACCEPT` })] }),
      "INVALID_INPUT",
    );
  });

  it("rejects lines that are not one rule", () => {
    const good = rule({}).line;
    for (const line of [
      `${good}\n-A INPUT -j DROP`,
      `[0:0] ${good}`,
      good.replace("-A", "-I"),
      `${good} "open`,
      `-A "INPUT" ${good.slice(9)}`,
    ]) {
      expectCode(() => plan(chains, { upsertRules: [rule({ line })] }), "INVALID_INPUT");
    }
  });

  it("rejects an invalid marker", () => {
    expectCode(
      () => plan(chains, { upsertRules: [rule({ marker: m("bad id", 1) })] }),
      "INVALID_INPUT",
    );
    expectCode(() => plan(chains, { deleteRules: ["bad id"] }), "INVALID_INPUT");
  });

  it("rejects an id upserted twice or also deleted", () => {
    expectCode(() => plan(chains, { upsertRules: [rule({}), rule({})] }), "INVALID_INPUT");
    expectCode(
      () => plan(chains, { upsertRules: [rule({})], deleteRules: ["x"] }),
      "INVALID_INPUT",
    );
  });

  it("rejects a rule in a chain it deletes", () => {
    const inOld = desiredRule("OLD", m("x", 1), SSH, "ACCEPT");
    expectCode(
      () =>
        plan([input(), { name: "OLD", rules: [] }], {
          upsertRules: [inOld],
          deleteChains: ["OLD"],
        }),
      "INVALID_INPUT",
    );
  });

  it("rejects a live table of another name", () => {
    expectCode(
      () => planTableChange(liveTable("nat", []), {}, { table: "filter" }),
      "INVALID_INPUT",
    );
  });
});

describe("planTableChange properties", () => {
  it("reaches the requested state without touching foreign rules", () => {
    fc.assert(
      fc.property(tableCaseArb, ({ chains, change }) => {
        let result;
        try {
          result = plan(chains, change);
        } catch (error) {
          if (!hasErrorCode(error, "PLAN_CONFLICT")) throw error;
          checkConflictIsReal(chains, change, error.details);
          return;
        }
        const after = applyScript("filter", chains, result.script);
        checkRequestedState(chains, change, after);
        expect(plan(after, change).script).toBe("");
      }),
      { numRuns: 400 },
    );
  });

  it("plans one step for one more change to a reached state", () => {
    fc.assert(
      fc.property(
        tableCaseArb,
        fc.constantFrom("INPUT", "RATE-LIMIT"),
        fc.integer({ min: -40, max: 40 }),
        fc.nat(),
        ({ chains, change }, chain, order, pick) => {
          let reached: ChainState[];
          try {
            reached = applyScript("filter", chains, plan(chains, change).script);
          } catch (error) {
            if (hasErrorCode(error, "PLAN_CONFLICT")) return;
            throw error;
          }
          const upserts = change.upsertRules ?? [];
          const present = (name: string) => reached.some((state) => state.name === name);

          // A new rule: one insert, whatever the other rules around it.
          if (present(chain)) {
            const fresh = desiredRule(chain, m("fresh", order), SSH, "ACCEPT");
            const added = plan(reached, { ...change, upsertRules: [...upserts, fresh] });
            expect(added.steps.map((step) => step.markerId)).toEqual(["fresh"]);
            expect(added.steps[0].line).toMatch(/^-[AI] /);
          }
          if (upserts.length === 0) return;

          // A changed target: one replacement in place.
          const index = pick % upserts.length;
          const old = upserts[index];
          const target = old.line.endsWith("-j DROP") ? "ACCEPT" : "DROP";
          const changed = { ...old, line: old.line.replace(/-j \S+$/, `-j ${target}`) };
          const replaced = plan(reached, {
            ...change,
            upsertRules: upserts.map((rule, at) => (at === index ? changed : rule)),
          });
          expect(replaced.steps.map((step) => step.line.split(" ")[0])).toEqual(["-R"]);
          expect(replaced.steps[0].markerId).toBe(old.marker.id);

          // A deleted rule: one deletion.
          const deleted = plan(reached, {
            ...change,
            upsertRules: upserts.filter((_rule, at) => at !== index),
            deleteRules: [...(change.deleteRules ?? []), old.marker.id],
          });
          expect(deleted.steps.map((step) => [step.line.split(" ")[0], step.markerId])).toEqual([
            ["-D", old.marker.id],
          ]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("plans the same script for any order of the change's arrays", () => {
    fc.assert(
      fc.property(tableCaseArb, fc.func(fc.integer()), ({ chains, change }, key) => {
        const shuffle = <T>(values: readonly T[] | undefined): T[] | undefined =>
          values && [...values].sort((a, b) => key(JSON.stringify(a)) - key(JSON.stringify(b)));
        const shuffled: TableChange = {
          ...change,
          upsertRules: shuffle(change.upsertRules),
          deleteRules: shuffle(change.deleteRules),
          purgeUnmanaged: shuffle(change.purgeUnmanaged),
        };
        const first = outcome(() => plan(chains, change).script);
        expect(outcome(() => plan(chains, shuffled).script)).toEqual(first);
        expect(outcome(() => plan(chains, change).script)).toEqual(first);
      }),
      { numRuns: 200 },
    );
  });
});

function outcome(action: () => string): string {
  try {
    return action();
  } catch (error) {
    return `error ${(error as { code: string }).code}`;
  }
}

/** Checks that a PLAN_CONFLICT names rules that really block the change. */
function checkConflictIsReal(
  chains: readonly ChainState[],
  change: TableChange,
  details: Record<string, unknown>,
): void {
  if (details.loop !== undefined) {
    expect(["INPUT", "FORWARD", "OUTPUT"]).toContain(details.from);
    checkLoopIsReal(chains, change, details.loop as string[], details.rules as string[]);
    return;
  }
  const chain = details.chain as string;
  const rules = details.rules as string[] | undefined;
  expect(change.deleteChains).toContain(chain);
  expect(rules?.length).toBeGreaterThan(0);
  const live = chains.flatMap((state) => state.rules);
  for (const rule of rules!) {
    if (jumpTarget(rule) === chain && !rule.startsWith(`-A ${chain} `)) {
      const upserted = (change.upsertRules ?? []).some((desired) => desired.line === rule);
      const marker = lineMarker(rule);
      expect(
        upserted ||
          (live.includes(rule) && !(marker && (change.deleteRules ?? []).includes(marker.id))),
      ).toBe(true);
    } else {
      expect(rule.startsWith(`-A ${chain} `)).toBe(true);
      expect(lineMarker(rule)).toBeUndefined();
      expect(change.purgeUnmanaged ?? []).not.toContain(chain);
    }
  }
}

/** Checks that a loop conflict names a real loop of rules left or added by the change. */
function checkLoopIsReal(
  chains: readonly ChainState[],
  change: TableChange,
  loop: readonly string[],
  rules: readonly string[],
): void {
  expect(loop[0]).toBe(loop.at(-1));
  expect(rules).toHaveLength(loop.length - 1);
  const live = chains.flatMap((state) => state.rules);
  const upserted = (change.upsertRules ?? []).map((desired) => desired.line);
  rules.forEach((rule, index) => {
    expect(rule.startsWith(`-A ${loop[index]} `)).toBe(true);
    expect(jumpTarget(rule)).toBe(loop[index + 1]);
    const marker = lineMarker(rule);
    const kept =
      marker === undefined || !(change.upsertRules ?? []).some((d) => d.marker.id === marker.id);
    expect(upserted.includes(rule) || (live.includes(rule) && kept)).toBe(true);
  });
}
