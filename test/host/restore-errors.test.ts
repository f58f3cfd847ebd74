import { describe, expect, it } from "vitest";
import { applyRejected, rejectedLine } from "../../src/host/restore-errors";
import type { TablePlan } from "../../src/netfilter/plan";

const PLAN: TablePlan = {
  table: "filter",
  steps: [
    { line: "-N RATE-LIMIT", reason: "create chain", chain: "RATE-LIMIT" },
    {
      line: '-A RATE-LIMIT -m hashlimit --hashlimit-name a-name-that-is-too-long -m comment --comment "pulumi-iptables:conn-rate:10" -j ACCEPT',
      reason: "insert rule",
      markerId: "conn-rate",
      chain: "RATE-LIMIT",
    },
  ],
  script: "",
};

describe("rejectedLine", () => {
  it("reads the forms iptables-restore prints", () => {
    expect(rejectedLine("iptables-restore: line 3 failed\n")).toBe(3);
    expect(
      rejectedLine(
        "iptables-restore v1.8.9 (nf_tables): line 2: RULE_APPEND failed (No such file or directory): rule in chain X",
      ),
    ).toBe(2);
    expect(
      rejectedLine("Error occurred at line: 4\nTry `iptables-restore -h' for more information."),
    ).toBe(4);
    expect(rejectedLine("iptables-restore: unable to initialize table 'filter'")).toBeUndefined();
  });
});

describe("applyRejected", () => {
  it("names the rule of the rejected line", () => {
    const error = applyRejected(
      '198.18.0.2:22 as "root"',
      "ipv4",
      PLAN,
      "2",
      "iptables-restore v1.8.9 (nf_tables): hashlimit: size of name too long\nError occurred at line: 3\n",
    );
    expect(error.code).toBe("APPLY_REJECTED");
    expect(error.details.markerId).toBe("conn-rate");
    expect(error.details.chain).toBe("RATE-LIMIT");
    expect(error.details.line).toBe(3);
    expect(error.message).toContain(
      "rejected line 3 of the ipv4 filter transaction (chain RATE-LIMIT, rule conn-rate",
    );
    expect(error.message).toContain("hashlimit: size of name too long");
    expect(error.message).toMatch(/nothing was changed$/);
  });

  it("blames the whole transaction at COMMIT", () => {
    const error = applyRejected("h", "ipv6", PLAN, "1", "iptables-restore: line 4 failed\n");
    expect(error.message).toContain("rejected the ipv6 filter transaction at COMMIT");
    expect(error.details.markerId).toBeUndefined();
  });

  it("falls back to the exit code", () => {
    const error = applyRejected("h", "ipv4", PLAN, "111", "");
    expect(error.message).toContain("rejected the ipv4 filter transaction: exit code 111");
  });
});

describe("stepNamedIn", () => {
  it("finds the step that names the missing chain", () => {
    const plan: TablePlan = {
      table: "filter",
      steps: [
        {
          line: '-I APPLY 1 -s 198.18.200.2/32 -m comment --comment "pulumi-iptables:good:1" -j ACCEPT',
          reason: "insert rule",
          markerId: "good",
          chain: "APPLY",
        },
        {
          line: '-I APPLY 2 -s 198.18.200.3/32 -m comment --comment "pulumi-iptables:bad:2" -j NO-SUCH-CHAIN',
          reason: "insert rule",
          markerId: "bad",
          chain: "APPLY",
        },
      ],
      script: "",
    };
    const stderr =
      "iptables-nft-restore v1.8.9 (nf_tables): Chain 'NO-SUCH-CHAIN' does not exist\nError occurred at line: 4\n";
    const error = applyRejected("h", "ipv4", plan, "2", stderr);
    expect(error.details.markerId).toBe("bad");
    expect(error.details.line).toBe(3);
    expect(error.message).toContain(
      "rejected line 3 of the ipv4 filter transaction (chain APPLY, rule bad",
    );
  });

  it("blames nothing when several steps match", () => {
    const plan: TablePlan = {
      table: "filter",
      steps: [
        { line: "-A A -j X", reason: "r" },
        { line: "-A B -j X", reason: "r" },
      ],
      script: "",
    };
    expect(
      applyRejected("h", "ipv4", plan, "2", "Chain 'X' does not exist\n").details.markerId,
    ).toBeUndefined();
  });
});
