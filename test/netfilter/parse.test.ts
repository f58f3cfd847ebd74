import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode, type IptablesError } from "../../src/errors";
import { parseSave, renderSave } from "../../src/netfilter/parse";

const dumpsDir = join(__dirname, "..", "fixtures", "dumps");
const dumpFiles = readdirSync(dumpsDir).filter((name) => name.endsWith(".save"));

function readDump(name: string): string {
  return readFileSync(join(dumpsDir, name), "utf8");
}

function parseFailure(text: string): IptablesError {
  try {
    parseSave(text);
  } catch (error) {
    if (hasErrorCode(error, (error as IptablesError).code)) return error as IptablesError;
    throw error;
  }
  throw new Error("parseSave accepted the text");
}

describe("parseSave on captured dumps", () => {
  it("has dumps of both backends and families", () => {
    for (const name of ["iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"]) {
      expect(dumpFiles).toContain(`${name}.save`);
      expect(dumpFiles).toContain(`${name}-counters.save`);
    }
  });

  for (const name of dumpFiles) {
    it(`round-trips ${name}`, () => {
      const text = readDump(name);
      expect(renderSave(parseSave(text))).toBe(text);
    });

    it(`reads every rule line of ${name}`, () => {
      const text = readDump(name);
      const dump = parseSave(text);
      const ruleLines = text.split("\n").filter((line) => /^(\[\d+:\d+\] )?-A /.test(line));
      const rules = dump.tables.flatMap((table) => table.rules);
      expect(rules.length).toBe(ruleLines.length);
      for (const rule of rules) {
        expect(rule.text.startsWith(`-A ${rule.chain} `)).toBe(true);
      }
    });
  }

  it("reads counters of chains and rules", () => {
    const dump = parseSave(readDump("iptables-legacy-counters.save"));
    const filter = dump.tables.find((table) => table.name === "filter");
    expect(filter).toBeDefined();
    expect(filter?.rules.every((rule) => rule.counters !== undefined)).toBe(true);
    const counted = dump.tables
      .flatMap((table) => table.rules)
      .filter((r) => r.counters!.packets > 0n);
    expect(counted.length).toBeGreaterThan(0);
    const output = dump.tables.flatMap((table) => table.chains).find((c) => c.name === "OUTPUT");
    expect(output?.policy).toBe("ACCEPT");
  });

  it("leaves counters undefined without -c", () => {
    const dump = parseSave(readDump("iptables-nft.save"));
    expect(dump.tables.flatMap((t) => t.rules).every((r) => r.counters === undefined)).toBe(true);
  });

  it("reads user chains without a policy", () => {
    const dump = parseSave(readDump("ip6tables-nft.save"));
    const filter = dump.tables.find((table) => table.name === "filter")!;
    const docker = filter.chains.find((chain) => chain.name === "DOCKER");
    expect(docker?.policy).toBeUndefined();
    expect(filter.chains.find((chain) => chain.name === "FORWARD")?.policy).toBe("DROP");
  });

  it("unquotes comment arguments", () => {
    const dump = parseSave(readDump("iptables-legacy.save"));
    const mangle = dump.tables.find((table) => table.name === "mangle")!;
    const rule = mangle.rules[0];
    expect(rule.args).toEqual([
      "-m",
      "comment",
      "--comment",
      `it's "quoted" \\ here`,
      "-j",
      "KUBE-KUBELET-CANARY",
    ]);
  });

  it("reports iptables-nft notes", () => {
    const dump = parseSave(readDump("iptables-nft-notes.save"));
    const kinds = dump.notes.map((note) => note.kind);
    expect(kinds).toContain("legacy-tables-present");
    expect(kinds).toContain("incompatible-table");
    expect(kinds).toContain("comment");
  });
});

describe("parseSave on small dumps", () => {
  it("takes the chain from the token after -A", () => {
    const text =
      '*filter\n:INPUT ACCEPT [0:0]\n:A-B - [0:0]\n-A A-B -m comment --comment "-A INPUT" -j ACCEPT\nCOMMIT\n';
    const rule = parseSave(text).tables[0].rules[0];
    expect(rule.chain).toBe("A-B");
    expect(rule.args).toEqual(["-m", "comment", "--comment", "-A INPUT", "-j", "ACCEPT"]);
  });

  it("reads an empty dump", () => {
    expect(parseSave("")).toEqual({ tables: [], notes: [] });
    expect(renderSave(parseSave(""))).toBe("");
  });

  it("reads large counters exactly", () => {
    const text =
      "*filter\n:INPUT ACCEPT [18446744073709551615:18446744073709551615]\n[9007199254740993:1] -A INPUT -j ACCEPT\nCOMMIT\n";
    const table = parseSave(text).tables[0];
    expect(table.chains[0].counters?.packets).toBe(18446744073709551615n);
    expect(table.rules[0].counters?.packets).toBe(9007199254740993n);
    expect(renderSave(parseSave(text))).toBe(text);
  });
});

describe("parseSave errors", () => {
  const cases: Array<[string, string, string, number, number]> = [
    ["rejects a rule outside a table", "-A INPUT -j ACCEPT\n", "PARSE_OUTSIDE_TABLE", 1, 1],
    ["rejects a missing COMMIT", "*filter\n:INPUT ACCEPT [0:0]\n", "PARSE_MISSING_COMMIT", 1, 1],
    [
      "rejects a table opened inside a table",
      "*filter\n:INPUT ACCEPT [0:0]\n*nat\nCOMMIT\n",
      "PARSE_MISSING_COMMIT",
      3,
      1,
    ],
    [
      "rejects an unterminated quote",
      '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "open -j ACCEPT\nCOMMIT\n',
      "PARSE_UNTERMINATED_QUOTE",
      3,
      31,
    ],
    [
      "rejects an unterminated quote after counters",
      '*filter\n:INPUT ACCEPT [0:0]\n[1:2] -A INPUT -m comment --comment "open\nCOMMIT\n',
      "PARSE_UNTERMINATED_QUOTE",
      3,
      37,
    ],
    [
      "rejects an unknown line",
      "*filter\n:INPUT ACCEPT [0:0]\n-I INPUT 1 -j ACCEPT\nCOMMIT\n",
      "PARSE_SYNTAX",
      3,
      1,
    ],
    ["rejects a line of garbage", "*filter\nhello\nCOMMIT\n", "PARSE_UNKNOWN_LINE", 2, 1],
    ["rejects a malformed chain header", "*filter\n:INPUT ACCEPT\nCOMMIT\n", "PARSE_SYNTAX", 2, 1],
    [
      "rejects a duplicate chain",
      "*filter\n:INPUT ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
      "PARSE_DUPLICATE",
      3,
      2,
    ],
    ["rejects a duplicate table", "*filter\nCOMMIT\n*filter\nCOMMIT\n", "PARSE_DUPLICATE", 3, 1],
    [
      "rejects a rule for an undeclared chain",
      "*filter\n:INPUT ACCEPT [0:0]\n-A FOO -j ACCEPT\nCOMMIT\n",
      "PARSE_SYNTAX",
      3,
      4,
    ],
    [
      "rejects malformed counters",
      "*filter\n:INPUT ACCEPT [0:0]\n[1:x] -A INPUT -j ACCEPT\nCOMMIT\n",
      "PARSE_SYNTAX",
      3,
      1,
    ],
    ["rejects a bad table header", "*filter nat\nCOMMIT\n", "PARSE_SYNTAX", 1, 1],
    ["rejects an unknown table", "*filtre\nCOMMIT\n", "PARSE_INVALID_VALUE", 1, 2],
    [
      "rejects an unknown chain policy",
      "*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n",
      "PARSE_INVALID_VALUE",
      2,
      8,
    ],
    [
      "rejects a lower-case chain policy",
      "*filter\n:INPUT accept [0:0]\nCOMMIT\n",
      "PARSE_INVALID_VALUE",
      2,
      8,
    ],
  ];

  for (const [name, text, code, line, column] of cases) {
    it(name, () => {
      const error = parseFailure(text);
      expect(error.code).toBe(code);
      expect(error.details.line).toBe(line);
      expect(error.details.column).toBe(column);
    });
  }

  it("names the accepted tables and policies", () => {
    expect(parseFailure("*filtre\nCOMMIT\n").message).toMatchInlineSnapshot(
      `"iptables-save output line 1, column 2: "*filtre" names table "filtre", which iptables does not have; expected one of filter, nat, mangle, raw, security"`,
    );
    expect(parseFailure("*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n").message).toMatchInlineSnapshot(
      `"iptables-save output line 2, column 8: ":INPUT MAYBE [0:0]" gives chain "INPUT" the policy "MAYBE"; expected ACCEPT or DROP for a built-in chain, or "-" for a user chain"`,
    );
  });

  it("reads every table and policy iptables prints", () => {
    const text = ["filter", "nat", "mangle", "raw", "security"]
      .map((table) => `*${table}\n:OUTPUT ACCEPT [0:0]\n:USR - [0:0]\n:X DROP [1:2]\nCOMMIT\n`)
      .join("");
    const dump = parseSave(text);
    expect(dump.tables.map((table) => table.name)).toEqual([
      "filter",
      "nat",
      "mangle",
      "raw",
      "security",
    ]);
    expect(dump.tables[0].chains.map((chain) => chain.policy)).toEqual([
      "ACCEPT",
      undefined,
      "DROP",
    ]);
  });

  it("rejects with an excerpt pointing at the column", () => {
    const error = parseFailure(
      '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment "open -j ACCEPT\nCOMMIT\n',
    );
    expect(error.details.excerpt).toBe(
      '-A INPUT -m comment --comment "open -j ACCEPT\n                              ^',
    );
    expect(error.message).toMatchInlineSnapshot(
      `"iptables-save output line 3, column 31: "-A INPUT -m comment --comment \\"open -j ACCEPT" has a quote that is never closed"`,
    );
  });
});

describe("parseSave properties", () => {
  const word = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
  const text = fc.string({
    unit: fc.constantFrom("a", " ", '"', "'", "\\", "-", "é", "\t"),
    maxLength: 20,
  });

  it("round-trips generated dumps", () => {
    const rule = fc.tuple(
      fc.array(text, { maxLength: 4 }),
      fc.option(
        fc.tuple(
          fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        ),
      ),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(word, { minLength: 1, maxLength: 4 }),
        fc.array(rule, { maxLength: 8 }),
        (chains, rules) => {
          const lines = ["# Generated by test", "*filter"];
          for (const chain of chains) lines.push(`:${chain} - [0:0]`);
          for (const [comments, counters] of rules) {
            const args = comments.map(
              (c) => `-m comment --comment "${c.replace(/["'\\]/g, (ch) => `\\${ch}`)}"`,
            );
            const body = [`-A ${chains[0]}`, ...args, "-j ACCEPT"].join(" ");
            lines.push(counters ? `[${counters[0]}:${counters[1]}] ${body}` : body);
          }
          lines.push("COMMIT", "# Completed");
          const dump = `${lines.join("\n")}\n`;
          const parsed = parseSave(dump);
          expect(renderSave(parsed)).toBe(dump);
          const parsedRules = parsed.tables[0].rules;
          rules.forEach(([comments], index) => {
            expect(parsedRules[index].args).toEqual([
              ...comments.flatMap((c) => ["-m", "comment", "--comment", c]),
              "-j",
              "ACCEPT",
            ]);
          });
        },
      ),
    );
  });
});
