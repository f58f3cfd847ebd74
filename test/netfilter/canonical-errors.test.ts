import { describe, expect, it } from "vitest";
import { isIptablesError, type IptablesError } from "../../src/errors";
import { canonicalRule, sameRule } from "../../src/netfilter/canonical";
import type { RuleContext } from "../../src/netfilter/types";

function failure(spec: string, context?: RuleContext): IptablesError {
  try {
    canonicalRule(spec, context);
  } catch (error) {
    if (isIptablesError(error)) return error;
    throw error;
  }
  throw new Error(`canonicalRule accepted ${spec}`);
}

describe("canonicalRule errors", () => {
  const cases: Array<[string, string, string, string]> = [
    ["rejects a rule without -A", "-I INPUT -j ACCEPT", "RULE_SYNTAX", "-I"],
    ["rejects a missing chain", "-A", "RULE_SYNTAX", "-A"],
    [
      "rejects an over-long chain name",
      `-A ${"C".repeat(29)} -j ACCEPT`,
      "RULE_INVALID_VALUE",
      "-A",
    ],
    ["rejects an unknown option", "-A INPUT --frobnicate 1", "RULE_UNKNOWN_OPTION", "--frobnicate"],
    ["rejects an unknown short option", "-A INPUT -x", "RULE_UNKNOWN_OPTION", "-x"],
    ["rejects an unknown match", "-A INPUT -m geoip --src-cc DE", "RULE_UNKNOWN_MATCH", "-m geoip"],
    [
      "rejects an unsupported target",
      "-A INPUT -j MARK --set-mark 1",
      "RULE_UNKNOWN_TARGET",
      "-j MARK",
    ],
    [
      "rejects a module option without -m",
      "-A INPUT --ctstate NEW",
      "RULE_UNKNOWN_OPTION",
      "--ctstate",
    ],
    [
      "rejects a port match without -p",
      "-A INPUT -m tcp --dport 22",
      "RULE_MISSING_MATCH",
      "-m tcp",
    ],
    [
      "rejects an out-of-range port",
      "-A INPUT -p tcp --dport 70000",
      "RULE_OUT_OF_RANGE",
      "--dport",
    ],
    ["rejects an invalid rate", "-A INPUT -m limit --limit fast", "RULE_INVALID_VALUE", "--limit"],
    [
      "rejects a missing hashlimit name",
      "-A INPUT -m hashlimit --hashlimit-upto 5/s",
      "RULE_SYNTAX",
      "--hashlimit-name",
    ],
    ["rejects a value-less option", "-A INPUT -p tcp --dport", "RULE_SYNTAX", "--dport"],
    ["rejects an option given twice", "-A INPUT -s 10.0.0.1 -s 10.0.0.2", "RULE_SYNTAX", "-s"],
    ["rejects a dangling negation", "-A INPUT -j ACCEPT !", "RULE_SYNTAX", "!"],
    [
      "rejects a negated option that cannot be",
      "-A INPUT -m comment ! --comment x",
      "RULE_SYNTAX",
      "--comment",
    ],
    ["rejects a host name", "-A INPUT -s example.org", "RULE_UNSUPPORTED", "-s"],
    ["rejects an unclosed quote", '-A INPUT -m comment --comment "x', "RULE_SYNTAX", ""],
    ["rejects a command flag in a rule", "-A INPUT --numeric", "RULE_UNSUPPORTED", "--numeric"],
    ["rejects a jump to a built-in chain", "-A USR -j INPUT", "RULE_INVALID_VALUE", "-j"],
    ["rejects -f for IPv6", "-A INPUT -f", "RULE_INVALID_VALUE", "-f"],
  ];

  for (const [name, spec, code, option] of cases) {
    it(name, () => {
      const context: RuleContext = name.includes("IPv6") ? { family: "ipv6" } : {};
      const error = failure(spec, context);
      expect(error.code).toBe(code);
      expect(error.details.option).toBe(option);
    });
  }

  it("rejects with messages that name the value and the fix", () => {
    expect(failure("-A INPUT -m limit --limit fast").message).toMatchInlineSnapshot(
      `"--limit "fast" is invalid: expected a rate such as "50/sec", "3000/minute" or "7/hour""`,
    );
    expect(failure("-A INPUT -p tcp --dport 70000").message).toMatchInlineSnapshot(
      `"--dport "70000" is out of range: use 0 to 65535"`,
    );
    expect(failure("-A INPUT --ctstate NEW").message).toMatchInlineSnapshot(
      `"unknown option "--ctstate": no match or target loaded before it defines it; load the match first with -m (or -p for tcp, udp and icmp options)"`,
    );
    expect(failure("-A INPUT -m geoip --src-cc DE").message).toMatchInlineSnapshot(
      `"match "geoip" is not supported; supported matches: tcp, udp, icmp, icmp6, multiport, conntrack, state, limit, hashlimit, comment, connlimit, recent, iprange, mark, addrtype, mac"`,
    );
    expect(failure("-A INPUT -m tcp --dport 22").message).toMatchInlineSnapshot(
      `"the tcp match requires "-p tcp"; add it before the tcp options"`,
    );
    expect(
      failure("-A INPUT -m limit --limit 1/d --limit-burst 2", { backend: "legacy" }).message,
    ).toMatchInlineSnapshot(
      `"--limit 1/day with --limit-burst 2 is rejected by the kernel's xt_limit (burst 0, or rate times burst overflows); lower the burst or raise the rate"`,
    );
  });
});

describe("sameRule", () => {
  it("treats equivalent spellings as the same rule", () => {
    expect(
      sameRule(
        "-A INPUT -m limit --limit 3000/minute",
        "-A INPUT -m limit --limit 50/s --limit-burst 5",
      ),
    ).toBe(true);
    expect(
      sameRule("-A INPUT -j REJECT", "-A INPUT -j REJECT --reject-with icmp-port-unreachable"),
    ).toBe(true);
    expect(sameRule("-A INPUT -s 192.0.2.9", "-A INPUT -s 192.0.2.9/32")).toBe(true);
    expect(
      sameRule(
        "-A INPUT -m state --state ESTABLISHED,RELATED",
        "-A INPUT -m state --state RELATED,ESTABLISHED",
      ),
    ).toBe(true);
    expect(sameRule("-A INPUT -p tcp --dport ssh", "-A INPUT -p tcp -m tcp --dport 22")).toBe(true);
  });

  it("tells different rules apart", () => {
    expect(sameRule("-A INPUT -m limit --limit 50/s", "-A INPUT -m limit --limit 51/s")).toBe(
      false,
    );
    expect(sameRule("-A INPUT -j DROP", "-A OUTPUT -j DROP")).toBe(false);
    expect(sameRule("-A INPUT -p tcp ! --dport 22", "-A INPUT -p tcp --dport 22")).toBe(false);
  });

  it("compares hashlimit rules with the expire the written unit implies", () => {
    const perMinute = "-A X -m hashlimit --hashlimit-upto 3000/minute --hashlimit-name n";
    expect(
      sameRule(perMinute, "-A X -m hashlimit --hashlimit-upto 50/sec --hashlimit-name n"),
    ).toBe(false);
    expect(
      sameRule(
        perMinute,
        "-A X -m hashlimit --hashlimit-upto 50/sec --hashlimit-name n --hashlimit-htable-expire 60000",
      ),
    ).toBe(true);
  });

  it("depends on the backend where the backends print differently", () => {
    const a = "-A INPUT -p tcp ! --dport 0:1023";
    const b = "-A INPUT -p tcp --dport 1024:65535";
    expect(sameRule(a, b, { backend: "nft" })).toBe(true);
    expect(sameRule(a, b, { backend: "legacy" })).toBe(false);
  });

  it("fails when a rule cannot be canonicalised", () => {
    expect(() => sameRule("-A INPUT -j MARK --set-mark 1", "-A INPUT -j ACCEPT")).toThrow(
      expect.objectContaining({ code: "RULE_UNKNOWN_TARGET" }),
    );
  });

  it("rejects an invalid context for equal texts", () => {
    const context = { table: "filtre" } as unknown as RuleContext;
    expect(() => sameRule("-A INPUT -j ACCEPT", "-A INPUT -j ACCEPT", context)).toThrow(
      expect.objectContaining({ code: "RULE_INVALID_VALUE" }),
    );
  });
});

describe("short option words", () => {
  it("rejects a value attached to -p", () => {
    const error = failure("-A INPUT -fptcp -j ACCEPT");
    expect(error.code).toBe("RULE_SYNTAX");
    expect(error.details.option).toBe("-p");
    expect(error.message).toMatchInlineSnapshot(
      `""-fptcp" is not read as "-p tcp": iptables takes the whole word as the value of -p; put a space between an option and its value"`,
    );
  });

  it("rejects an unknown letter in a word", () => {
    const error = failure("-A INPUT -fx -j ACCEPT");
    expect(error.code).toBe("RULE_UNKNOWN_OPTION");
    expect(error.details.option).toBe("-x");
  });

  it("reads values attached to -m, -g and -c", () => {
    expect(canonicalRule("-A INPUT -p udp -mudp --dport 53 -gUSR -c7 9")).toBe(
      "-A INPUT -p udp -m udp --dport 53 -g USR",
    );
  });
});

describe("rule contexts", () => {
  const cases: Array<[string, Record<string, unknown>, string, string]> = [
    ["rejects an unknown family", { family: "ipv5" }, "family", "ipv4, ipv6"],
    [
      "rejects an unknown table",
      { table: "filtre" },
      "table",
      "filter, nat, mangle, raw, security",
    ],
    ["rejects an unknown backend", { backend: "iptables" }, "backend", "nft, legacy"],
    ["rejects a non-string family", { family: 4 }, "family", "ipv4, ipv6"],
  ];

  for (const [name, context, field, accepted] of cases) {
    it(name, () => {
      const error = failure("-A INPUT -j ACCEPT", context as RuleContext);
      expect(error.code).toBe("RULE_INVALID_VALUE");
      expect(error.details.option).toBe(field);
      expect(error.details.value).toBe(context[field]);
      expect(error.message).toContain(accepted);
    });
  }

  it("names the value and the accepted ones", () => {
    const error = failure("-A INPUT -j ACCEPT", { family: "ipv5" } as unknown as RuleContext);
    expect(error.message).toMatchInlineSnapshot(
      `"rule context family "ipv5" is invalid: use one of ipv4, ipv6"`,
    );
  });

  it("accepts every valid context", () => {
    for (const family of ["ipv4", "ipv6"] as const) {
      for (const table of ["filter", "nat", "mangle", "raw", "security"] as const) {
        for (const backend of ["nft", "legacy"] as const) {
          const context = { family, table, backend };
          expect(canonicalRule("-A OUTPUT -j ACCEPT", context)).toBe("-A OUTPUT -j ACCEPT");
        }
      }
    }
  });
});

describe("address lists", () => {
  it("expands each source with each destination", () => {
    expect(canonicalRule("-A INPUT -s 198.18.0.1,198.18.0.2 -d 198.19.0.0/16 -j ACCEPT")).toBe(
      [
        "-A INPUT -s 198.18.0.1/32 -d 198.19.0.0/16 -j ACCEPT",
        "-A INPUT -s 198.18.0.2/32 -d 198.19.0.0/16 -j ACCEPT",
      ].join("\n"),
    );
  });
});
