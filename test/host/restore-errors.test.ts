import { describe, expect, it } from "vitest";
import { applyRejected, rejectedLine, restoreExplanation } from "../../src/host/restore-errors";
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
    expect(error.message).toContain(
      "rejected the ipv4 filter transaction: iptables-restore gave no reason (exit code 111)",
    );
  });
});

/** Error output of iptables-restore 1.8.9, as lab hosts printed it. */
const STDERR = {
  nftDropInNat:
    "iptables-restore v1.8.9 (nf_tables): \nThe \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n\nError occurred at line: 2\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
  legacyDropInNat:
    "iptables-restore v1.8.9 (legacy): \nThe \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n\nError occurred at line: 2\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
  nftRejectInNat:
    "iptables-restore v1.8.9 (nf_tables): \nline 2: RULE_APPEND failed (Invalid argument): rule in chain POSTROUTING\n",
  legacyRejectInNat: "iptables-restore: line 3 failed\n",
};

const NAT_PLAN: TablePlan = {
  table: "nat",
  steps: [
    {
      line: '-A POSTROUTING -p tcp -m comment --comment "pulumi-iptables:nat-rule:10" -j REJECT',
      reason: "insert rule",
      markerId: "nat-rule",
      chain: "POSTROUTING",
    },
  ],
  script: "",
};

describe("restoreExplanation", () => {
  it("keeps iptables' reason without the line noise", () => {
    const reason =
      'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited';
    expect(restoreExplanation(STDERR.nftDropInNat)).toBe(reason);
    expect(restoreExplanation(STDERR.legacyDropInNat)).toBe(reason);
    expect(restoreExplanation(STDERR.nftRejectInNat)).toBe(
      "RULE_APPEND failed (Invalid argument): rule in chain POSTROUTING",
    );
  });

  it("is empty when iptables gives only a line number", () => {
    expect(restoreExplanation(STDERR.legacyRejectInNat)).toBe("");
    expect(restoreExplanation("")).toBe("");
  });
});

describe("applyRejected explanations", () => {
  it("quotes iptables' reason for DROP in nat", () => {
    for (const stderr of [STDERR.nftDropInNat, STDERR.legacyDropInNat]) {
      const error = applyRejected("h", "ipv4", NAT_PLAN, "2", stderr);
      expect(error.details.markerId).toBe("nat-rule");
      expect(error.message).toContain(
        "rejected line 2 of the ipv4 nat transaction (chain POSTROUTING, rule nat-rule, insert " +
          'rule: "-A POSTROUTING',
      );
      expect(error.message).toContain(
        '-j REJECT"): The "nat" table is not intended for filtering, the use of ' +
          "DROP is therefore inhibited; nothing was changed",
      );
      expect(error.message).not.toContain("Error occurred");
      expect(error.message).not.toContain(" | ");
    }
  });

  it("explains an errno-only rejection", () => {
    const error = applyRejected("h", "ipv4", NAT_PLAN, "4", STDERR.nftRejectInNat);
    expect(error.details.markerId).toBe("nat-rule");
    expect(error.message).toContain(
      '-j REJECT"): RULE_APPEND failed (Invalid argument): rule in chain POSTROUTING; ' +
        "check that each target and match is valid in the nat table and chain POSTROUTING",
    );
  });

  it("names the only added rule when the kernel gives no reason", () => {
    const error = applyRejected("h", "ipv4", NAT_PLAN, "1", STDERR.legacyRejectInNat);
    expect(error.message).toContain(
      "rejected the ipv4 nat transaction at COMMIT, where the kernel checks it as a whole: " +
        "iptables-restore gave no reason (exit code 1); the only rule it adds or replaces is " +
        'line 2 (chain POSTROUTING, rule nat-rule, insert rule: "-A POSTROUTING',
    );
    expect(error.message).toContain("check that each target and match is valid in the nat table");
    expect(error.message).toMatch(/nothing was changed$/);
  });

  it("gives the generic check when several rules could be the cause", () => {
    const plan: TablePlan = {
      ...NAT_PLAN,
      steps: [...NAT_PLAN.steps, { ...NAT_PLAN.steps[0], markerId: "other" }],
    };
    const error = applyRejected("h", "ipv4", plan, "1", "iptables-restore: line 4 failed\n");
    expect(error.message).toContain(
      "at COMMIT, where the kernel checks it as a whole: iptables-restore gave no reason " +
        "(exit code 1); check that each target and match is valid in the nat table, and",
    );
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
