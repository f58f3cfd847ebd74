import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { renderRulesFile, type PersistedTable } from "../../src/persist/rules-file";
import { golden } from "./golden";
import { IPV4_TABLES, IPV6_TABLES } from "./sample";

function errorOf(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error("the call did not throw");
}

describe("renderRulesFile", () => {
  it("matches the IPv4 golden file", () => {
    const content = renderRulesFile("ipv4", IPV4_TABLES).content;
    expect(content).toBe(golden("rules.v4", content));
  });

  it("matches the IPv6 golden file", () => {
    const content = renderRulesFile("ipv6", IPV6_TABLES).content;
    expect(content).toBe(golden("rules.v6", content));
  });

  it("renders the same bytes for any input order", () => {
    const expected = renderRulesFile("ipv4", IPV4_TABLES).content;
    const shuffled = fc.array(fc.integer(), { minLength: 16, maxLength: 16 }).map((keys) => {
      const sortBy = <T>(items: readonly T[], offset: number): T[] =>
        items
          .map((item, index) => ({ item, key: keys[(index + offset) % keys.length] }))
          .sort((a, b) => a.key - b.key)
          .map(({ item }) => item);
      return sortBy(IPV4_TABLES, 0).map((table, index) => ({
        ...table,
        rules: sortBy(table.rules, index + 3),
      }));
    });
    fc.assert(
      fc.property(shuffled, (tables) => {
        expect(renderRulesFile("ipv4", tables).content).toBe(expected);
      }),
    );
  });

  it("orders built-in chains first and rules by marker order", () => {
    const content = renderRulesFile("ipv4", IPV4_TABLES).content;
    const filter = content.slice(content.indexOf("*filter"), content.indexOf("COMMIT"));
    const markers = [...filter.matchAll(/pulumi-iptables:([^"]+)"/g)].map((match) => match[1]);
    expect(markers).toEqual(["web/hook:0", "web/accept:10", "web/log:20", "web/reject:30"]);
    expect(filter.indexOf("-N RATE-LIMIT")).toBeLessThan(filter.indexOf("-A INPUT"));
  });

  it("has no timestamp or generated-on line", () => {
    const content = renderRulesFile("ipv4", IPV4_TABLES).content;
    expect(content).not.toMatch(/Generated|Completed|\d{2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}/);
  });

  it("keeps an owned chain without rules", () => {
    const result = renderRulesFile("ipv4", [
      { table: "mangle", ownedChains: ["MARKS"], rules: [] },
    ]);
    expect(result.tables).toEqual(["mangle"]);
    expect(result.content).toContain("*mangle\n-N MARKS\nCOMMIT\n");
  });

  it("merges entries of one table", () => {
    const [filter] = IPV4_TABLES;
    const split: PersistedTable[] = [
      { table: "filter", ownedChains: [], rules: filter.rules.slice(0, 2) },
      { table: "filter", ownedChains: filter.ownedChains, rules: filter.rules.slice(2) },
    ];
    const expected = renderRulesFile("ipv4", [filter]).content;
    expect(renderRulesFile("ipv4", split).content).toBe(expected);
  });

  it("renders only the header without rules", () => {
    const result = renderRulesFile("ipv6", []);
    expect(result.tables).toEqual([]);
    expect(
      result.content.split("\n").filter((line) => line !== "" && !line.startsWith("#")),
    ).toEqual([]);
  });

  it("skips rules in chains it does not own", () => {
    const result = renderRulesFile("ipv4", [
      {
        table: "filter",
        ownedChains: [],
        rules: [
          {
            marker: { id: "docker-user", order: 5 },
            chain: "DOCKER-USER",
            line: '-A DOCKER-USER -s 198.18.0.0/15 -m comment --comment "pulumi-iptables:docker-user:5" -j RETURN',
          },
        ],
      },
    ]);
    expect(result.content).not.toContain("DOCKER-USER");
    expect(result.tables).toEqual([]);
    expect(result.skipped).toHaveLength(1);
    expect(result.skipped[0]).toMatchObject({
      table: "filter",
      chain: "DOCKER-USER",
      markerId: "docker-user",
    });
    expect(result.skipped[0].reason).toContain(
      "does not exist when the rules are restored at boot",
    );
  });

  it("rejects two rules with one marker id", () => {
    const [filter] = IPV4_TABLES;
    const error = errorOf(() =>
      renderRulesFile("ipv4", [{ ...filter, rules: [...filter.rules, filter.rules[0]] }]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain('share the marker id "web/reject"');
  });

  it("rejects a line without its marker", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [
        {
          table: "filter",
          ownedChains: [],
          rules: [{ marker: { id: "a", order: 1 }, chain: "INPUT", line: "-A INPUT -j ACCEPT" }],
        },
      ]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain(
      'does not carry the marker comment "pulumi-iptables:a:1"',
    );
  });

  it("rejects a line whose marker order differs", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [
        {
          table: "filter",
          ownedChains: [],
          rules: [
            {
              marker: { id: "a", order: 1 },
              chain: "INPUT",
              line: '-A INPUT -m comment --comment "pulumi-iptables:a:2" -j ACCEPT',
            },
          ],
        },
      ]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });

  it("rejects a line of another chain", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [
        {
          table: "filter",
          ownedChains: [],
          rules: [
            {
              marker: { id: "a", order: 1 },
              chain: "INPUT",
              line: '-A OUTPUT -m comment --comment "pulumi-iptables:a:1" -j ACCEPT',
            },
          ],
        },
      ]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain('does not start with "-A INPUT "');
  });

  it("rejects a line break in a rule", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [
        {
          table: "filter",
          ownedChains: [],
          rules: [
            {
              marker: { id: "a", order: 1 },
              chain: "INPUT",
              line: '-A INPUT -j ACCEPT\n-A INPUT -m comment --comment "pulumi-iptables:a:1" -j DROP',
            },
          ],
        },
      ]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain("line break");
  });

  it("rejects a built-in chain as owned", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [{ table: "filter", ownedChains: ["INPUT"], rules: [] }]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain("is a built-in chain");
  });

  it("rejects invalid chain names", () => {
    for (const name of ["", "has space", "-lead", "!bang", "x".repeat(29), 'quo"te']) {
      const error = errorOf(() =>
        renderRulesFile("ipv4", [{ table: "filter", ownedChains: [name], rules: [] }]),
      );
      expect(hasErrorCode(error, "INVALID_INPUT"), name).toBe(true);
    }
  });

  it("rejects an unknown table", () => {
    const error = errorOf(() =>
      renderRulesFile("ipv4", [
        { table: "broute" as PersistedTable["table"], ownedChains: [], rules: [] },
      ]),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });
});
