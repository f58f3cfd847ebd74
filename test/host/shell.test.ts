import { execFileSync } from "node:child_process";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { quoteArgument, renderCommand, scriptArgv, withSudo } from "../../src/host/shell";

/** Runs a command line through dash, as a login shell would, and returns the arguments it got. */
function argvSeenByShell(commandLine: string): string[] {
  const output = execFileSync("/bin/sh", ["-c", commandLine], { encoding: "utf8" });
  return output.split("\0").slice(0, -1);
}

/** printf prints each following argument and a NUL, so the output splits back into argv. */
const PRINT_ARGV = ["printf", "%s\\0"];

const ASCII_WITHOUT_NUL = fc
  .integer({ min: 1, max: 0x7f })
  .map((code) => String.fromCharCode(code));

describe("quoteArgument", () => {
  it("leaves plain words unquoted", () => {
    expect(quoteArgument("iptables-save")).toBe("iptables-save");
    expect(quoteArgument("/run/x.lock")).toBe("/run/x.lock");
  });

  it("quotes shell syntax", () => {
    expect(quoteArgument("a b")).toBe("'a b'");
    expect(quoteArgument("it's")).toBe("'it'\\''s'");
    expect(quoteArgument("")).toBe("''");
  });

  it("passes hostile text through sh literally", () => {
    const hostile = [
      '"quoted" comment',
      "$(touch /tmp/never)",
      "`touch /tmp/never`",
      "a; rm -rf /",
      "line\nbreak",
      "it's",
      "$HOME ${PATH} \\ * ? [a] ~ & | < > !",
      "--comment",
      "caf\u00e9 \u2603",
    ];
    const seen = argvSeenByShell(renderCommand([...PRINT_ARGV, ...hostile]));
    expect(seen).toEqual(hostile);
  });

  it("round-trips any text without NUL", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: ASCII_WITHOUT_NUL }), { minLength: 1, maxLength: 4 }),
        (args) => {
          const seen = argvSeenByShell(renderCommand([...PRINT_ARGV, ...args]));
          expect(seen).toEqual(args);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("rejects a NUL byte", () => {
    let error: unknown;
    try {
      quoteArgument("a\0b");
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });
});

describe("renderCommand", () => {
  it("rejects an empty argv", () => {
    expect(() => renderCommand([])).toThrow(/command is empty/);
  });
});

describe("withSudo", () => {
  it("prefixes sudo -n only when asked", () => {
    expect(withSudo(["id"], true)).toEqual(["sudo", "-n", "--", "id"]);
    expect(withSudo(["id"], false)).toEqual(["id"]);
  });
});

describe("scriptArgv", () => {
  it("passes values as positional arguments", () => {
    const argv = scriptArgv('printf "%s|%s" "$0" "$1"', "name", ["$(id)"]);
    const output = execFileSync("/bin/sh", ["-c", renderCommand(argv)], { encoding: "utf8" });
    expect(output).toBe("name|$(id)");
  });
});
