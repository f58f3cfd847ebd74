import { describe, expect, it } from "vitest";
import { needsRollback } from "../../src/host/rollback-scope";
import { parseSave } from "../../src/netfilter/parse";
import type { TablePlan } from "../../src/netfilter/plan";
import type { TableName } from "../../src/netfilter/types";

const LIVE = parseSave(`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:RATE-LIMIT - [0:0]
:DEEP - [0:0]
:DOCKER - [0:0]
:UNUSED - [0:0]
-A INPUT -p tcp -m tcp --dport 443 -j RATE-LIMIT
-A RATE-LIMIT -m comment --comment "free text -j DOCKER" -g DEEP
-A FORWARD -j DOCKER
COMMIT
`).tables[0];

function plan(lines: string[], table: TableName = "filter"): TablePlan {
  return {
    table,
    steps: lines.map((line) => ({ line, reason: "test" })),
    script: lines.length === 0 ? "" : `*${table}\n${lines.join("\n")}\nCOMMIT\n`,
  };
}

describe("needsRollback", () => {
  it("arms for a rule in INPUT", () => {
    expect(needsRollback("auto", LIVE, plan(["-A INPUT -p tcp --dport 22 -j DROP"]))).toBe(true);
  });

  it("arms for chains reached through jumps and gotos", () => {
    expect(needsRollback("auto", LIVE, plan(["-A RATE-LIMIT -j DROP"]))).toBe(true);
    expect(needsRollback("auto", LIVE, plan(["-I DEEP 1 -j DROP"]))).toBe(true);
  });

  it("skips chains reached only from FORWARD", () => {
    expect(needsRollback("auto", LIVE, plan(["-A DOCKER -j DROP"]))).toBe(false);
  });

  it("ignores jump-like text inside a comment", () => {
    expect(needsRollback("auto", LIVE, plan(["-A UNUSED -j DROP"]))).toBe(false);
  });

  it("arms for a new chain that the same plan hooks into INPUT", () => {
    const steps = ["-N NEW", "-A NEW -j DROP", "-A INPUT -j NEW"];
    expect(needsRollback("auto", LIVE, plan(steps))).toBe(true);
  });

  it("arms for a chain that a new jump makes reachable", () => {
    expect(needsRollback("auto", LIVE, plan(["-A UNUSED -j DROP", "-A DEEP -j UNUSED"]))).toBe(
      true,
    );
  });

  it("arms for OUTPUT, which carries the host's replies", () => {
    expect(needsRollback("auto", LIVE, plan(["-A OUTPUT -p tcp --sport 22 -j DROP"]))).toBe(true);
  });

  it("arms for PREROUTING of nat and raw", () => {
    expect(needsRollback("auto", undefined, plan(["-A PREROUTING -j DROP"], "raw"))).toBe(true);
    expect(
      needsRollback(
        "auto",
        undefined,
        plan(["-A PREROUTING -j DNAT --to-destination 198.18.0.9"], "nat"),
      ),
    ).toBe(true);
  });

  it("honours always and never", () => {
    expect(needsRollback("always", LIVE, plan(["-A DOCKER -j DROP"]))).toBe(true);
    expect(needsRollback("never", LIVE, plan(["-A INPUT -j DROP"]))).toBe(false);
  });

  it("never arms for an empty plan", () => {
    expect(needsRollback("always", LIVE, plan([]))).toBe(false);
  });

  it("uses the step's chain field when present", () => {
    const withChain: TablePlan = {
      table: "filter",
      steps: [{ line: "-D RATE-LIMIT 1", reason: "delete", chain: "RATE-LIMIT" }],
      script: "*filter\n-D RATE-LIMIT 1\nCOMMIT\n",
    };
    expect(needsRollback("auto", LIVE, withChain)).toBe(true);
  });
});
