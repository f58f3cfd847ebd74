/**
 * check() and diff() of the rule providers: pure functions, no host. The host-facing side is
 * covered through the engine harness in rate-limit.lab.test.ts.
 */
import { describe, expect, it } from "vitest";
import { providers } from "../../src/resources/providers/index";
import { UNKNOWN } from "../../src/resources/unknown";

const connection = {
  host: "198.18.0.2",
  privateKey:
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkeymaterial\n-----END OPENSSH PRIVATE KEY-----\n",
};

const base = {
  connection,
  chain: "RATE-LIMIT",
  markerId: "proj/dev/web-accept",
  order: 10,
  __provider: "exports.handler = ...",
};

const hashlimit = { ...base, hashlimitName: "web", upto: "50/sec", burst: 20 };

async function checkHashlimit(extra: Record<string, unknown>) {
  return providers.HashlimitRule.check({}, { ...hashlimit, ...extra });
}

async function checkRule(extra: Record<string, unknown>) {
  return providers.Rule.check({}, { ...base, ...extra });
}

describe("HashlimitRule check", () => {
  it("predicts the canonical line", async () => {
    const result = await checkHashlimit({});

    expect(result.failures).toEqual([]);
    expect(result.inputs.rule).toBe(
      "-A RATE-LIMIT -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 20 " +
        "--hashlimit-mode srcip --hashlimit-name web " +
        '-m comment --comment "pulumi-iptables:proj/dev/web-accept:10" -j ACCEPT',
    );
  });

  it("normalises equivalent rates to identical inputs", async () => {
    const reference = await checkHashlimit({});
    const spellings = [
      { upto: "50/s" },
      { upto: "50/second" },
      { upto: "3000/minute", htableExpireMs: 1000 },
    ];

    for (const spelling of spellings) {
      const result = await checkHashlimit(spelling);
      expect(result.failures).toEqual([]);
      expect(result.inputs).toEqual(reference.inputs);
    }
  });

  it("keeps a different expire apart", async () => {
    const result = await checkHashlimit({ upto: "3000/minute" });

    expect(result.inputs.rule).toContain("--hashlimit-htable-expire 60000");
    expect(result.inputs.htableExpireMs).toBe(60000);
  });

  it("leaves the connection and __provider out of the rule", async () => {
    const result = await checkHashlimit({});

    expect(result.inputs.connection).toEqual(connection);
    expect(result.inputs.__provider).toBeUndefined();
    expect(String(result.inputs.rule)).not.toContain("secretkeymaterial");
  });

  it("passes unknown values through", async () => {
    const result = await checkHashlimit({ upto: UNKNOWN, chain: UNKNOWN });

    expect(result.failures).toEqual([]);
    expect(result.inputs.upto).toBe(UNKNOWN);
    expect(result.inputs.rule).toBe(UNKNOWN);
  });

  it("normalises match fields", async () => {
    const result = await checkHashlimit({
      protocol: "TCP",
      destinationPorts: [443, "80", "1000:2000"],
      ctstate: ["new", "established"],
      source: "10.1.2.3/8",
    });

    expect(result.failures).toEqual([]);
    expect(result.inputs.protocol).toBe("tcp");
    expect(result.inputs.destinationPorts).toEqual([80, 443, "1000:2000"]);
    expect(result.inputs.ctstate).toEqual(["NEW", "ESTABLISHED"]);
    expect(result.inputs.source).toBe("10.0.0.0/8");
  });

  it("defaults the IPv6 source mask only when asked", async () => {
    const result = await checkHashlimit({ family: "ipv6", srcMask: 64 });

    expect(result.failures).toEqual([]);
    expect(result.inputs.rule).toContain("--hashlimit-srcmask 64");
  });
});

describe("rule check failures", () => {
  // Each case is one invalid input; check must name that field, the value and a fix, once.
  const cases: ReadonlyArray<readonly [string, "Rule" | "HashlimitRule", Record<string, unknown>, string, RegExp]> = [
    ["hashlimit name with a slash", "HashlimitRule", { hashlimitName: "a/b" }, "hashlimitName", /"a\/b" is invalid: use 1 to 15 letters/],
    ["hashlimit name too long", "HashlimitRule", { hashlimitName: "a".repeat(16) }, "hashlimitName", /use 1 to 15/],
    ["unknown rate unit", "HashlimitRule", { upto: "50/fortnight" }, "upto", /"50\/fortnight" is invalid: use packets per second/],
    ["IPv4 source mask above 32", "HashlimitRule", { srcMask: 64 }, "srcMask", /64 is invalid: use a prefix length from 0 to 32 for ipv4/],
    ["IPv6 source mask above 128", "HashlimitRule", { family: "ipv6", srcMask: 129 }, "srcMask", /129 is invalid/],
    ["burst of zero", "HashlimitRule", { burst: 0 }, "burst", /0 is invalid: use an integer from 1 to 1000000/],
    ["both upto and above", "HashlimitRule", { above: "10/sec" }, "upto", /set exactly one of upto and above/],
    ["rate the kernel overflows", "HashlimitRule", { upto: "1/day", burst: 5 }, "burst", /overflow/],
    ["empty mode", "HashlimitRule", { mode: [] }, "mode", /use at least one of srcip/],
    ["htable max below the size", "HashlimitRule", { htableSize: 4096, htableMax: 1024 }, "htableMax", /1024 is invalid: use at least htableSize \(4096\)/],
    ["LOG prefix of 40 characters", "Rule", { jump: "LOG", logPrefix: "x".repeat(40) }, "logPrefix", /at most 29 characters, this one has 40/],
    ["LOG prefix without LOG", "Rule", { jump: "DROP", logPrefix: "x" }, "logPrefix", /needs jump: "LOG"/],
    ["comment of 256 characters", "Rule", { jump: "ACCEPT", comment: "c".repeat(256) }, "comment", /at most 255 characters/],
    ["comment that looks like a marker", "Rule", { jump: "ACCEPT", comment: "pulumi-iptables:x:1" }, "comment", /reserved/],
    ["IPv4 REJECT type on IPv6", "Rule", { family: "ipv6", jump: "REJECT", rejectWith: "icmp-port-unreachable" }, "rejectWith", /REJECT type of ipv6/],
    ["IPv6 REJECT type on IPv4", "Rule", { jump: "REJECT", rejectWith: "icmp6-adm-prohibited" }, "rejectWith", /REJECT type of ipv4/],
    ["tcp-reset without tcp", "Rule", { jump: "REJECT", rejectWith: "tcp-reset" }, "rejectWith", /needs protocol: "tcp"/],
    ["chain name of 29 characters", "Rule", { chain: "C".repeat(29), jump: "ACCEPT" }, "chain", /at most 28 characters, this one has 29/],
    ["chain name starting with a dash", "Rule", { chain: "-X", jump: "ACCEPT" }, "chain", /not starting with "-"/],
    ["jump to a built-in chain", "Rule", { jump: "INPUT" }, "jump", /cannot jump to a built-in chain/],
    ["jump to a chain in another table", "Rule", { table: "nat", jump: "RATE", jumpTable: "filter", jumpFamily: "ipv4" }, "jump", /is in table filter but this rule is in table nat/],
    ["jump to a chain of another family", "Rule", { family: "ipv6", jump: "RATE", jumpTable: "filter", jumpFamily: "ipv4" }, "jump", /ipv4 chain but this rule is ipv6/],
    ["rule in a chain of another table", "Rule", { chainTable: "mangle", jump: "ACCEPT" }, "chain", /is in table mangle/],
    ["port above 65535", "Rule", { protocol: "tcp", destinationPorts: [70000], jump: "ACCEPT" }, "destinationPorts", /use port numbers from 0 to 65535/],
    ["ports without protocol", "Rule", { destinationPorts: [22], jump: "ACCEPT" }, "destinationPorts", /ports need protocol/],
    ["16 ports", "Rule", { protocol: "tcp", destinationPorts: Array.from({ length: 16 }, (_, i) => i + 1), jump: "ACCEPT" }, "destinationPorts", /at most 15 ports/],
    ["IPv6 address on IPv4", "Rule", { source: "2001:db8::1", jump: "ACCEPT" }, "source", /use an IPv4 address/],
    ["icmpv6 on IPv4", "Rule", { protocol: "icmpv6", jump: "ACCEPT" }, "protocol", /use "icmp" for ipv4/],
    ["unknown connection state", "Rule", { ctstate: ["NEW", "OLD"], jump: "ACCEPT" }, "ctstate", /use INVALID, NEW/],
    ["order that is not an integer", "Rule", { order: 1.5, jump: "ACCEPT" }, "order", /use an integer/],
    ["unknown family", "Rule", { family: "ipv5", jump: "ACCEPT" }, "family", /use "ipv4" or "ipv6"/],
    ["unknown input", "Rule", { jump: "ACCEPT", colour: "red" }, "colour", /not an input of this resource/],
    ["args beside typed fields", "Rule", { args: "-j ACCEPT", protocol: "tcp" }, "protocol", /either as args or as typed fields/],
    ["args with a table", "Rule", { args: "-t nat -j ACCEPT" }, "args", /"-t" does not belong in args/],
    ["missing target", "Rule", {}, "jump", /set jump/],
    ["connection without a host", "Rule", { jump: "ACCEPT", connection: { privateKey: "k" } }, "connection.host", /connection.host/],
    ["connection port out of range", "Rule", { jump: "ACCEPT", connection: { ...connection, port: 70000 } }, "connection.port", /use an integer from 1 to 65535/],
    ["a comment too long, without quoting it", "Rule", { jump: "ACCEPT", comment: `TOPSECRET-${"x".repeat(300)}` }, "comment", /^comment \(value not shown\) is invalid: a comment has at most 255 characters, this one has 310$/],
    ["a null private key", "Rule", { jump: "ACCEPT", connection: { host: "198.18.0.2", password: "p", privateKey: null } }, "connection.privateKey", /connection.privateKey is null: give a value or leave the field out/],
    ["confirm timeout of zero", "Rule", { jump: "ACCEPT", connection: { ...connection, confirmTimeoutSeconds: 0 } }, "connection.confirmTimeoutSeconds", /0 is invalid: use whole seconds from 1 to 3600/],
  ]; // prettier-ignore

  for (const [name, kind, extra, property, reason] of cases) {
    it(`rejects ${name}`, async () => {
      const news = { ...(kind === "HashlimitRule" ? hashlimit : base), ...extra };
      const result = await providers[kind].check({}, news);

      expect(result.failures).toHaveLength(1);
      expect(result.failures[0].property).toBe(property);
      expect(result.failures[0].reason).toMatch(reason);
    });
  }

  it("rejects without quoting a password", async () => {
    const result = await checkRule({
      jump: "ACCEPT",
      connection: { host: "h", password: "hunter2", port: 0 },
    });

    expect(JSON.stringify(result.failures)).not.toContain("hunter2");
  });
});

describe("Rule check", () => {
  it.each([
    [
      "raw args",
      { args: "! -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443 -j REJECT" },
      "-A RATE-LIMIT ! -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443",
    ],
    [
      "a raw port",
      { args: "-p tcp ! --dport 22 -j ACCEPT" },
      "-A RATE-LIMIT -p tcp -m tcp ! --dport 22",
    ],
    ["a typed source", { source: "!10.0.0.0/8", jump: "DROP" }, "-A RATE-LIMIT ! -s 10.0.0.0/8"],
    ["a typed protocol", { protocol: "!udp", jump: "DROP" }, "-A RATE-LIMIT ! -p udp"],
  ])("accepts negation in %s", async (_name, extra, start) => {
    const result = await checkRule(extra);

    expect(result.failures).toEqual([]);
    expect(String(result.inputs.rule).startsWith(`${start} -m comment`)).toBe(true);
  });
  it("normalises raw args to the canonical text", async () => {
    const result = await checkRule({
      args: "-p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT",
      comment: "ssh",
    });

    expect(result.failures).toEqual([]);
    expect(result.inputs.args).toBe(
      "-p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT",
    );
    expect(result.inputs.rule).toBe(
      "-A RATE-LIMIT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m comment --comment ssh " +
        '-m comment --comment "pulumi-iptables:proj/dev/web-accept:10" -j ACCEPT',
    );
  });

  it("fills in the default REJECT type", async () => {
    const v4 = await checkRule({ jump: "REJECT" });
    const v6 = await checkRule({ jump: "REJECT", family: "ipv6" });

    expect(v4.inputs.rejectWith).toBe("icmp-port-unreachable");
    expect(v6.inputs.rejectWith).toBe("icmp6-port-unreachable");
  });

  it("drops a default limit burst", async () => {
    const withBurst = await checkRule({
      jump: "LOG",
      limit: "1/sec",
      limitBurst: 5,
      logPrefix: "RL: ",
    });
    const without = await checkRule({ jump: "LOG", limit: "1/s", logPrefix: "RL: " });

    expect(withBurst.inputs).toEqual(without.inputs);
  });
});

describe("rule diff", () => {
  async function checked(extra: Record<string, unknown> = {}) {
    return (await checkHashlimit(extra)).inputs;
  }
  const outputsOf = (inputs: Record<string, unknown>) => ({
    ...inputs,
    backend: "nft",
    packets: 0,
    bytes: 0,
    hostKey: "ssh-ed25519 AAAA",
    placement: "in-order",
  });

  it("reports no change for an equivalent spelling", async () => {
    const olds = outputsOf(await checked());
    const diff = await providers.HashlimitRule.diff(
      "id",
      olds,
      await checked({ upto: "3000/minute", htableExpireMs: 1000 }),
    );

    expect(diff.changes).toBe(false);
  });

  it("updates in place when the rate changes", async () => {
    const olds = outputsOf(await checked());
    const diff = await providers.HashlimitRule.diff("id", olds, await checked({ upto: "100/sec" }));

    expect(diff).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });

  it("updates in place when the order changes", async () => {
    const olds = outputsOf(await checked());
    const diff = await providers.HashlimitRule.diff("id", olds, await checked({ order: 11 }));

    expect(diff.changes).toBe(true);
    expect(diff.replaces).toEqual([]);
  });

  it("replaces, deleting first, when the chain changes", async () => {
    const olds = outputsOf(await checked());
    const diff = await providers.HashlimitRule.diff("id", olds, await checked({ chain: "OTHER" }));

    expect(diff).toEqual({ changes: true, replaces: ["chain"], deleteBeforeReplace: true });
  });

  it("replaces, creating first, when the host changes", async () => {
    const olds = outputsOf(await checked());
    const news = await checked({ connection: { ...connection, host: "198.18.0.3" } });
    const diff = await providers.HashlimitRule.diff("id", olds, news);

    expect(diff).toEqual({ changes: true, replaces: ["connection"], deleteBeforeReplace: false });
  });

  it("updates when a rule moved out of order", async () => {
    const olds = { ...outputsOf(await checked()), placement: "out-of-order" };
    const diff = await providers.HashlimitRule.diff("id", olds, await checked());

    expect(diff.changes).toBe(true);
  });

  it("treats an unknown rule as a change", async () => {
    const olds = outputsOf(await checked());
    const diff = await providers.HashlimitRule.diff("id", olds, await checked({ upto: UNKNOWN }));

    expect(diff.changes).toBe(true);
  });
});

describe("Chain check", () => {
  it("fills in the defaults", async () => {
    const result = await providers.Chain.check({}, { connection, name: "RATE-LIMIT" });

    expect(result.failures).toEqual([]);
    expect(result.inputs).toEqual({
      connection,
      name: "RATE-LIMIT",
      family: "ipv4",
      table: "filter",
      purgeUnmanaged: false,
      adopt: false,
    });
  });

  const cases: ReadonlyArray<readonly [string, Record<string, unknown>, string, RegExp]> = [
    ["a built-in chain name", { name: "INPUT" }, "name", /built-in chain of table filter/],
    ["a target name", { name: "LOG" }, "name", /reserves LOG for a target/],
    ["a name of 29 characters", { name: "N".repeat(29) }, "name", /at most 28 characters/],
    ["a name with a space", { name: "A B" }, "name", /use 1 to 28 letters/],
    ["an unknown table", { name: "X", table: "broute" }, "table", /use one of filter, nat/],
  ]; // prettier-ignore

  for (const [name, extra, property, reason] of cases) {
    it(`rejects ${name}`, async () => {
      const result = await providers.Chain.check({}, { connection, name: "X", ...extra });

      expect(result.failures).toHaveLength(1);
      expect(result.failures[0].property).toBe(property);
      expect(result.failures[0].reason).toMatch(reason);
    });
  }
});
