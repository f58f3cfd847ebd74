import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { isIptablesError } from "../../src/errors";
import {
  canonicalRule,
  canonicalRuleUncached,
  isCachedCanonical,
} from "../../src/netfilter/canonical";
import { clearCanonicalCache } from "../../src/netfilter/canonical-cache";
import { tokenize, quoteArg } from "../../src/netfilter/tokenize";
import { BACKENDS, FAMILIES, type RuleContext } from "../../src/netfilter/types";
import { ruleSpecArb } from "./rule-arbitraries";
import { readRuleFixtures } from "./rule-fixtures";

type Outcome = { readonly line: string } | { readonly code: string };

function outcome(canonicalise: (spec: string) => string, spec: string): Outcome {
  try {
    return { line: canonicalise(spec) };
  } catch (error) {
    if (!isIptablesError(error)) throw error;
    return { code: error.code };
  }
}

/** Values that sit near the edges of what an option prints back unchanged. */
const TRICKY_VALUES = [
  "0",
  "00",
  "080",
  "0x50",
  "80",
  "65535",
  "65536",
  "1:2",
  "2:1",
  "5:5",
  "0:65535",
  ":80",
  "1,2",
  "1,2:3",
  "80,443",
  "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
  "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
  "1:2,3:4,5:6,7:8,9:10,11:12,13:14,15",
  "1.2.3.4/32",
  "1.2.3.4/24",
  "1.2.3.0/24",
  "01.2.3.4/32",
  "1.2.3.4",
  "1.2.3.4/0",
  "1.2.3.4/33",
  "1.2.3.4/024",
  "0.0.0.0/0",
  "10.0.0.0/8",
  "1.2.3.4/255.255.255.0",
  "1.2.3.256/32",
  "256.2.3.4/32",
  "1.2.3/24",
  "1.2.3.4.5/32",
  "1..3.4/32",
  "1.2.3.4/",
  "1.2.3.4/32/",
  "0.0.0.0/32",
  "198.18.0.0/15",
  "198.19.0.0/15",
  "::/0",
  "fd00::/64",
  "fd00::1/64",
  "FD00::/64",
  "fd00:0::/64",
  "::ffff:1.2.3.4/128",
  "eth0",
  "eth+",
  "+",
  "a/b",
  "a'b",
  '"eth0"',
  "abcdefghijklmnop",
  "0x1",
  "0x01",
  "0xA",
  "0xa/0xff",
  "0xa/0xffffffff",
  "0x0",
  "0x100000000",
  "0xa/0x",
  "50/sec",
  "050/sec",
  "50/second",
  "50/s",
  "3000/minute",
  "1/min",
  "60/min",
  "1/day",
  "24/day",
  "7/hour",
  "10000/sec",
  "10001/sec",
  "1000000/sec",
  "1000001/sec",
  "2147483648/sec",
  "512kb/s",
  '"a b"',
  '"a\\"b"',
  "'x'",
  '"abc"',
  "abc",
  '""',
  quoteArg("x".repeat(300)),
  quoteArg("y".repeat(255)),
  '"rl 1: "',
  quoteArg("p".repeat(29)),
  quoteArg("p".repeat(30)),
  '"\\\\"',
  '"x\\\\" y"',
  '"a"b',
  '"\\x"',
  "b0",
  "name.with.dots",
  ".",
  "..",
  "a".repeat(256),
  "NEW",
  "RELATED,ESTABLISHED",
  "icmp-port-unreachable",
  "srcip",
  "!",
  "-x",
  "",
];

/**
 * Returns the indexes of tokens that may be option values: after "-A CHAIN", following a token
 * that starts with "-", and not themselves starting with "-".
 */
function valueIndexes(line: string): number[] {
  const tokens = tokenize(line);
  const indexes: number[] = [];
  for (let i = 2; i < tokens.length; i++) {
    const previous = tokens[i - 1];
    if (previous.value.startsWith("-") && !previous.quoted && !tokens[i].value.startsWith("-")) {
      indexes.push(i);
    }
  }
  return indexes;
}

/** Replaces the raw text of some tokens of a line, keeping its single spaces. */
function replaceTokens(line: string, replacements: ReadonlyMap<number, string>): string {
  const tokens = tokenize(line);
  const pieces: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const end = i + 1 < tokens.length ? tokens[i + 1].start - 1 : line.length;
    pieces.push(replacements.get(i) ?? line.slice(tokens[i].start, end));
  }
  return pieces.join(" ");
}

interface Comparison {
  readonly cached: Outcome;
  readonly uncached: Outcome;
  readonly hit: boolean;
}

function compare(spec: string, context: RuleContext): Comparison {
  const hit = isCachedCanonical(spec, context);
  return {
    hit,
    cached: outcome((text) => canonicalRule(text, context), spec),
    uncached: outcome((text) => canonicalRuleUncached(text, context), spec),
  };
}

describe("canonical-form cache", () => {
  beforeEach(() => clearCanonicalCache());

  it("answers a line of a known shape", () => {
    const context = { family: "ipv4", table: "filter", backend: "legacy" } as const;
    const first = "-A INPUT -s 198.18.0.0/24 -p tcp -m tcp --dport 22 -j ACCEPT";
    const second = "-A INPUT -s 198.18.7.128/25 -p tcp -m tcp --dport 443 -j ACCEPT";
    expect(isCachedCanonical(second, context)).toBe(false);
    expect(canonicalRule(first, context)).toBe(first);
    expect(isCachedCanonical(second, context)).toBe(true);
    expect(canonicalRule(second, context)).toBe(second);
  });

  it("keeps contexts apart", () => {
    const line = "-A INPUT -s 198.18.0.0/24 -j ACCEPT";
    expect(canonicalRule(line, { backend: "legacy" })).toBe(line);
    expect(isCachedCanonical(line, { backend: "legacy" })).toBe(true);
    expect(isCachedCanonical(line, { backend: "nft" })).toBe(false);
    expect(isCachedCanonical(line, { backend: "legacy", table: "raw" })).toBe(false);
  });

  it("passes values that print differently to the full path", () => {
    const context = { backend: "legacy" } as const;
    canonicalRule("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", context);
    for (const port of ["022", "0x16", "ssh", "22:22", "0:65535"]) {
      const spec = `-A INPUT -p tcp -m tcp --dport ${port} -j ACCEPT`;
      expect(isCachedCanonical(spec, context), port).toBe(false);
      expect(canonicalRule(spec, context)).toBe(canonicalRuleUncached(spec, context));
    }
  });

  it("rejects what the full path rejects", () => {
    const context = { backend: "legacy" } as const;
    canonicalRule("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", context);
    const spec = "-A INPUT -p tcp -m tcp --dport 65536 -j ACCEPT";
    expect(isCachedCanonical(spec, context)).toBe(false);
    expect(outcome((text) => canonicalRule(text, context), spec)).toEqual({
      code: "RULE_OUT_OF_RANGE",
    });
  });

  it("matches the full path on the fixture table", () => {
    let hits = 0;
    let checked = 0;
    for (const row of readRuleFixtures()) {
      for (const backend of BACKENDS) {
        const context = { family: row.family, table: row.table, backend };
        const recorded = row.outcomes[backend];
        const lines = recorded !== undefined && "lines" in recorded ? recorded.lines : [];
        for (const spec of [row.spec, ...lines, ...lines]) {
          const result = compare(spec, context);
          expect(result.cached, `${backend} line ${row.line}: ${spec}`).toEqual(result.uncached);
          if (result.hit) hits++;
          checked++;
        }
      }
    }
    // Every recorded line is read twice, and the second read of a canonical line is a hit.
    expect(hits).toBeGreaterThan(checked / 5);
  });

  for (const family of FAMILIES) {
    for (const backend of BACKENDS) {
      it(`matches the full path on generated ${family} ${backend} rules`, () => {
        const context = { family, table: "filter", backend } as const;
        let counter = 0;
        let hits = 0;
        const uniq = (): string => `gen${(counter++).toString(36)}`;
        // Values seen in earlier canonical lines, by the option token before them.
        const borrowed = new Map<string, string[]>();
        const mutation = fc.tuple(
          ruleSpecArb(family, uniq),
          fc.array(
            fc.tuple(fc.nat(), fc.oneof(fc.constantFrom(...TRICKY_VALUES), fc.nat(), fc.nat())),
            { minLength: 1, maxLength: 3 },
          ),
        );
        fc.assert(
          fc.property(mutation, ([spec, changes]) => {
            const first = compare(spec, context);
            expect(first.cached, spec).toEqual(first.uncached);
            if (!("line" in first.uncached)) return;
            for (const line of first.uncached.line.split("\n")) {
              // Reading the canonical line remembers its shape.
              const again = compare(line, context);
              expect(again.cached, line).toEqual(again.uncached);
              const indexes = valueIndexes(line);
              const tokens = tokenize(line);
              const rawAt = (index: number): string => {
                const end = index + 1 < tokens.length ? tokens[index + 1].start - 1 : line.length;
                return line.slice(tokens[index].start, end);
              };
              for (const index of indexes) {
                const option = tokens[index - 1].value;
                borrowed.set(option, [...(borrowed.get(option) ?? []), rawAt(index)].slice(-50));
              }
              if (indexes.length === 0) continue;
              const replacements = new Map<number, string>();
              for (const [position, value] of changes) {
                const index = indexes[position % indexes.length];
                const pool = borrowed.get(tokens[index - 1].value) ?? [];
                replacements.set(
                  index,
                  typeof value === "string" ? value : pool[value % pool.length],
                );
              }
              const mutated = replaceTokens(line, replacements);
              const result = compare(mutated, context);
              expect(result.cached, mutated).toEqual(result.uncached);
              if (result.hit && mutated !== line) hits++;
            }
          }),
          { numRuns: 1000 },
        );
        // The comparison means little unless many changed lines took the cached path.
        expect(hits).toBeGreaterThan(20);
      });
    }
  }
});
