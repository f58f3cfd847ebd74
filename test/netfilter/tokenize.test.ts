import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { joinArgs, quoteArg, splitArgs, tokenize } from "../../src/netfilter/tokenize";

describe("tokenize", () => {
  const cases: Array<[string, string[]]> = [
    ["-A INPUT -j ACCEPT", ["-A", "INPUT", "-j", "ACCEPT"]],
    ["  -A\tINPUT   -j  ACCEPT  ", ["-A", "INPUT", "-j", "ACCEPT"]],
    ['--comment "a b"', ["--comment", "a b"]],
    ['--comment ""', ["--comment", ""]],
    ['--comment "it\\\'s \\"x\\" \\\\"', ["--comment", `it's "x" \\`]],
    ['--comment ab"c d"', ["--comment", "abc d"]],
    ['--comment "a b"c', ["--comment", "a b", "c"]],
    ["--comment it's", ["--comment", "it's"]],
    ["--comment a\\b", ["--comment", "a\\b"]],
    ['--log-prefix "x: "', ["--log-prefix", "x: "]],
    ["", []],
  ];
  for (const [line, expected] of cases) {
    it(`splits ${JSON.stringify(line)}`, () => {
      expect(splitArgs(line)).toEqual(expected);
    });
  }

  it("records token offsets and quoting", () => {
    expect(tokenize('-A  "x y"')).toEqual([
      { value: "-A", start: 0, quoted: false },
      { value: "x y", start: 4, quoted: true },
    ]);
  });

  it("rejects an unterminated quote with its column", () => {
    try {
      tokenize('-m comment --comment "abc');
      expect.unreachable();
    } catch (error) {
      expect(hasErrorCode(error, "PARSE_UNTERMINATED_QUOTE")).toBe(true);
      expect((error as { details: { column: number } }).details.column).toBe(22);
    }
  });
});

describe("quoteArg", () => {
  it("leaves bare words bare", () => {
    expect(quoteArg("ssh-rate_1")).toBe("ssh-rate_1");
  });

  it("quotes and escapes like iptables-save", () => {
    expect(quoteArg("")).toBe('""');
    expect(quoteArg("a b")).toBe('"a b"');
    expect(quoteArg("pulumi-iptables:web/x:10")).toBe('"pulumi-iptables:web/x:10"');
    expect(quoteArg(`it's "q" \\`)).toBe(`"it\\'s \\"q\\" \\\\"`);
  });

  it("round-trips any values through joinArgs", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 12 })), (values) => {
        expect(splitArgs(joinArgs(values))).toEqual(values);
      }),
    );
  });
});
