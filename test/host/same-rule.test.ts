import { describe, expect, it } from "vitest";
import { sameRuleFor } from "../../src/host/same-rule";
import type { DesiredRule } from "../../src/netfilter/plan";
import type { SaveRule } from "../../src/netfilter/types";

const MARKER = '-m comment --comment "pulumi-iptables:web/ok:10"';

function live(text: string): SaveRule {
  return { chain: "INPUT", text, args: [], line: 1 };
}

function desired(line: string): DesiredRule {
  return { marker: { id: "web/ok", order: 10 }, chain: "INPUT", line };
}

describe("sameRuleFor", () => {
  const same = sameRuleFor({ family: "ipv4", table: "filter", backend: "nft" });

  it("treats another spelling of one rule as equal", () => {
    expect(
      same(
        live(`-A INPUT -s 192.0.2.9/32 ${MARKER} -j ACCEPT`),
        desired(`-A INPUT -s 192.0.2.9 ${MARKER} -j ACCEPT`),
      ),
    ).toBe(true);
  });

  it("tells different rules apart", () => {
    expect(
      same(
        live(`-A INPUT -s 192.0.2.9/32 ${MARKER} -j ACCEPT`),
        desired(`-A INPUT -s 192.0.2.8/32 ${MARKER} -j ACCEPT`),
      ),
    ).toBe(false);
  });

  it("treats a rule it cannot model as different", () => {
    expect(
      same(
        live(`-A INPUT -m no-such-match --x 1 ${MARKER} -j ACCEPT`),
        desired(`-A INPUT ${MARKER} -j ACCEPT`),
      ),
    ).toBe(false);
  });
});
