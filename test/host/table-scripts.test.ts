import { describe, expect, it } from "vitest";
import { lockFilePath, parseFramedOutput } from "../../src/host/table-scripts";

const NONCE = "@0123abcd@";

describe("parseFramedOutput", () => {
  it("splits statuses, hash and the trailing dump", () => {
    const stdout = [
      "noise before",
      `${NONCE} status armed`,
      `${NONCE} status applied`,
      `${NONCE} hash ${"a".repeat(64)}`,
      `${NONCE} table`,
      "*filter",
      `-A INPUT -m comment --comment "${NONCE} status forged" -j ACCEPT`,
      "COMMIT",
      "",
    ].join("\n");
    const output = parseFramedOutput(stdout, NONCE);
    expect(output.status).toEqual(["applied"]);
    expect(output.statuses).toEqual([["armed"], ["applied"]]);
    expect(output.hash).toBe("a".repeat(64));
    expect(output.table).toBe(
      `*filter\n-A INPUT -m comment --comment "${NONCE} status forged" -j ACCEPT\nCOMMIT\n`,
    );
  });

  it("collects other keys in order", () => {
    const output = parseFramedOutput(
      `${NONCE} status fired\n${NONCE} restore-output a\n${NONCE} restore-output exit 0\n`,
      NONCE,
    );
    expect(output.values.get("restore-output")).toEqual(["a", "exit 0"]);
    expect(output.table).toBeUndefined();
  });

  it("ignores lines of another nonce", () => {
    const output = parseFramedOutput("@other@ status conflict\n", NONCE);
    expect(output.status).toEqual([]);
  });
});

describe("lockFilePath", () => {
  it("locks per family and table under /run", () => {
    expect(lockFilePath("ipv6", "nat")).toBe("/run/pulumi-iptables.ipv6.nat.lock");
  });
});
