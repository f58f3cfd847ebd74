import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { isIptablesError } from "../../src/errors";
import { familyInputs, type RateLimitArgs } from "../../src/resources/rate-limit";
import { checkRateLimitArgs, sshThrottleWarning } from "../../src/resources/rate-limit-check";
import type { Family } from "../../src/netfilter/types";

const connection = { host: "198.18.0.10", privateKey: "not used by the check" };

/** Runs the constructor's check and returns its error message, or undefined when it passes. */
function check(args: Partial<RateLimitArgs>): string | undefined {
  const all = { connection, ...args } as RateLimitArgs;
  const families: Family[] = all.family === "both" ? ["ipv4", "ipv6"] : [all.family ?? "ipv4"];
  try {
    checkRateLimitArgs("web", all, families, (family) => familyInputs("web", family, all));
    return undefined;
  } catch (error) {
    if (!isIptablesError(error)) throw error;
    expect(error.code).toBe("INVALID_INPUT");
    return error.message;
  }
}

describe("checkRateLimitArgs", () => {
  it("passes the defaults", () => {
    expect(check({})).toBeUndefined();
  });

  it("passes every option set validly", () => {
    const args: Partial<RateLimitArgs> = {
      family: "both",
      chain: "API-LIMIT",
      rate: "3000/minute",
      burst: 40,
      hashlimitName: "api",
      srcMask: { ipv4: 24, ipv6: 56 },
      htableExpireMs: 1000,
      htableSize: 1024,
      htableMax: 8192,
      hook: { chain: "DOCKER-USER", ports: [443, "8000:8080"], inInterface: "eth0", order: 5 },
      log: { rate: "10/minute", burst: 3, prefix: "api: ", level: "info" },
      reject: "REJECT",
      rejectWith: { ipv4: "icmp-host-prohibited", ipv6: "icmp6-adm-prohibited" },
      persist: { init: "systemd" },
    };
    expect(check(args)).toBeUndefined();
  });

  it.each<[string, Partial<RateLimitArgs>, RegExp]>([
    ["rate", { rate: "50/fortnight" }, /^ {2}rate "50\/fortnight" is invalid: /m],
    ["burst", { burst: 0 }, /^ {2}burst 0 is invalid: /m],
    ["hashlimitName", { hashlimitName: "a/b" }, /^ {2}hashlimitName "a\/b" is invalid: /m],
    ["srcMask", { srcMask: 64 }, /^ {2}srcMask 64 is invalid: /m],
    ["chain", { chain: "bad name!" }, /^ {2}chain "bad name!" is invalid: /m],
    ["log.prefix", { log: { prefix: "x".repeat(40) } }, /^ {2}log\.prefix "x{40}" is invalid: /m],
    ["log.rate", { log: { rate: "often" } }, /^ {2}log\.rate "often" is invalid: /m],
    ["hook.ports", { hook: { ports: [70000] } }, /^ {2}hook\.ports \[70000\] is invalid: /m],
    ["hook.chain", { hook: { chain: "bad name!" } }, /^ {2}hook\.chain "bad name!" is invalid: /m],
    [
      "reject",
      { reject: "ACCEPT" as "DROP" },
      /^ {2}reject "ACCEPT" is invalid: use "REJECT" or "DROP"/m,
    ],
    ["family", { family: "ipv5" as "ipv4" }, /^ {2}family "ipv5" is invalid: /m],
    [
      "conntrack.max",
      { conntrack: { max: -1 } },
      /^ {2}conntrack\.max -1 is invalid: use an integer from 256/m,
    ],
    [
      "a conntrack field",
      { conntrack: { mx: 5 } as object },
      /^ {2}conntrack\.mx is not an input/m,
    ],
    [
      "withinRate",
      { withinRate: "DROP" as "RETURN" },
      /^ {2}withinRate "DROP" is invalid: use "RETURN" or "ACCEPT"/m,
    ],
    [
      "byte rate",
      { rate: "1mb/s" },
      /^ {2}rate "1mb\/s" is invalid: use new connections per second/m,
    ],
    [
      "srcMask for both families",
      { family: "both", srcMask: 24 },
      /^ {2}srcMask 24 is invalid: with family "both", give a prefix length per family/m,
    ],
    ["per-family srcMask", { srcMask: { ipv4: 64 } }, /^ {2}srcMask\.ipv4 64 is invalid: /m],
    [
      "srcMask of the other family",
      { srcMask: { ipv6: 48 } },
      /^ {2}srcMask\.ipv6 48 is invalid: the RateLimit's family is "ipv4"/m,
    ],
    [
      "rejectWith of the other family",
      { family: "ipv6", rejectWith: { ipv4: "tcp-reset" } },
      /^ {2}rejectWith\.ipv4 "tcp-reset" is invalid: the RateLimit's family is "ipv6"/m,
    ],
  ])("rejects an invalid %s under its RateLimit name", (_field, args, expected) => {
    expect(check(args)).toMatch(expected);
  });

  it("rejects a reject type of the other family", () => {
    const message = check({ family: "both", rejectWith: { ipv6: "icmp-port-unreachable" } });
    expect(message).toMatch(/^ {2}rejectWith\.ipv6 "icmp-port-unreachable" is invalid: /m);
    expect(message).not.toContain("rejectWith.ipv4");
  });

  it("rejects a misspelt argument, naming the accepted ones", () => {
    const message = check({ rat: "50/sec", hook: { port: [22] } } as Partial<RateLimitArgs>);
    expect(message).toContain("rat is not an input of RateLimit");
    expect(message).toContain("hook.port is not an input of RateLimit");
    expect(message).toContain("accepted: chain, protocol, ports, inInterface, order");
  });

  it("lists every invalid argument at once, each once", () => {
    const message = check({
      family: "both",
      rate: "50/fortnight",
      log: { prefix: "x".repeat(40) },
    });
    expect(message).toContain('RateLimit "web" has invalid arguments');
    expect(message?.match(/rate "50\/fortnight"/g)).toHaveLength(1);
    expect(message).toContain("log.prefix");
  });

  it("names each field once, without the child's name", () => {
    const message = check({ rate: "1/day", burst: 1000000 });
    expect(message).toMatch(/^ {2}burst: --hashlimit-burst 1000000 with rate 1\/day overflows/m);
    expect(message).not.toMatch(/^ {2}(\w+): \1:/m);
  });

  it("leaves values not known yet to the children", () => {
    expect(
      check({ rate: pulumi.output("50/fortnight"), chain: pulumi.output("bad name!") }),
    ).toBeUndefined();
  });
});

describe("sshThrottleWarning", () => {
  const warn = (args: Partial<RateLimitArgs>) =>
    sshThrottleWarning("web", { connection, ...args } as RateLimitArgs);

  it("stays quiet for the defaults", () => {
    expect(warn({})).toBeUndefined();
  });

  it("warns about a slow rate that covers SSH", () => {
    expect(warn({ rate: "1/minute", burst: 1 })).toContain(
      "also limits new SSH connections (port 22) to 1/minute with burst 1",
    );
  });

  it("warns about a small burst that covers SSH", () => {
    expect(warn({ burst: 2 })).toContain("with burst 2");
  });

  it("warns when the hook's port range holds the connection's port", () => {
    const args = { rate: "10/minute", hook: { ports: ["20:30"] } };
    expect(warn({ ...args, connection: { ...connection, port: 2222 } })).toBeUndefined();
    expect(warn(args)).toContain("port 22");
  });

  it("stays quiet for a hook of another protocol", () => {
    expect(warn({ rate: "1/minute", burst: 1, hook: { protocol: "udp" } })).toBeUndefined();
  });

  it("stays quiet when the hook leaves SSH out", () => {
    expect(warn({ rate: "1/minute", burst: 1, hook: { ports: [443] } })).toBeUndefined();
  });
});
