/**
 * Validation of `RateLimit` arguments in its constructor, before any child resource exists.
 *
 * Each child resource validates its own inputs in check(), but a failure there comes after its
 * siblings were created: a chain and half its rules on the host, or one family of two fully
 * live. So the constructor runs the children's own checks on the inputs it is about to give
 * them, and fails the program at once, naming the RateLimit's fields (`rate`, `log.prefix`,
 * `hook.ports`) rather than the children's (`upto`, `logPrefix`, `destinationPorts`).
 *
 * Values that are outputs or promises are not known yet; their children check them later.
 */
import * as pulumi from "@pulumi/pulumi";
import { IptablesError } from "../errors";
import type { Family } from "../netfilter/types";
import { parsePacketRate } from "../netfilter/rates";
import { invalid, type CheckFailure } from "./failures";
import { packetRateSchema } from "./fields";
import { checkChain } from "./providers/chain";
import { checkConntrackSysctl } from "./providers/conntrack-sysctl";
import type { FamilyInputs, RateLimitArgs } from "./rate-limit";
import { checkRule } from "./rule-check";
import { UNKNOWN } from "./unknown";

/** Arguments RateLimit takes, per level. */
const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  "": [
    "connection",
    "family",
    "chain",
    "rate",
    "burst",
    "hashlimitName",
    "withinRate",
    "mode",
    "srcMask",
    "htableExpireMs",
    "htableSize",
    "htableMax",
    "hook",
    "log",
    "reject",
    "rejectWith",
    "conntrack",
    "persist",
    "adopt",
  ],
  hook: ["chain", "protocol", "ports", "inInterface", "order"],
  log: ["rate", "burst", "prefix", "level"],
  rejectWith: ["ipv4", "ipv6"],
  srcMask: ["ipv4", "ipv6"],
  persist: ["init", "jobName"],
};

/** For each child, its input names and the RateLimit argument each comes from. */
const ARGUMENT_OF: Readonly<Record<keyof FamilyInputs, Readonly<Record<string, string>>>> = {
  chain: { name: "chain", adopt: "adopt" },
  accept: {
    chain: "chain",
    upto: "rate",
    burst: "burst",
    hashlimitName: "hashlimitName",
    mode: "mode",
    srcMask: "srcMask",
    htableExpireMs: "htableExpireMs",
    htableSize: "htableSize",
    htableMax: "htableMax",
    jump: "withinRate",
  },
  log: {
    chain: "chain",
    limit: "log.rate",
    limitBurst: "log.burst",
    logPrefix: "log.prefix",
    logLevel: "log.level",
  },
  final: { chain: "chain", protocol: "hook.protocol", jump: "reject", rejectWith: "rejectWith" },
  hook: {
    chain: "hook.chain",
    order: "hook.order",
    protocol: "hook.protocol",
    destinationPorts: "hook.ports",
    inInterface: "hook.inInterface",
    jump: "chain",
  },
};

/**
 * Validates a RateLimit's arguments for each of its families, with the checks its children
 * run. Throws INVALID_INPUT listing every failure; returns when the known values are valid.
 */
export function checkRateLimitArgs(
  name: string,
  args: RateLimitArgs,
  families: readonly Family[],
  inputsOf: (family: Family) => FamilyInputs,
): void {
  const failures = unknownKeyFailures(args);
  if (args.family !== undefined && !["ipv4", "ipv6", "both"].includes(args.family)) {
    failures.push(invalid("family", args.family, 'use "ipv4", "ipv6" or "both"'));
  }
  if (args.reject !== undefined && !["REJECT", "DROP"].includes(args.reject)) {
    failures.push(invalid("reject", args.reject, 'use "REJECT" or "DROP"'));
  }
  if (args.withinRate !== undefined && !["RETURN", "ACCEPT"].includes(args.withinRate)) {
    failures.push(invalid("withinRate", args.withinRate, 'use "RETURN" or "ACCEPT"'));
  }

  failures.push(...perFamilyFailures(args));
  // Each new connection costs one packet, so a byte rate (which hashlimit also takes) would
  // limit nothing a RateLimit is meant for.
  if (typeof args.rate === "string" && !packetRateSchema.safeParse(args.rate).success) {
    failures.push(
      invalid(
        "rate",
        args.rate,
        'use new connections per second, minute, hour or day, such as "50/sec" or "3000/minute"',
      ),
    );
  }

  if (isPlainObject(args.conntrack)) {
    const conntrack = checkConntrackSysctl(
      { ...known(args.conntrack), connection: UNKNOWN },
      false,
    );
    failures.push(...conntrack.failures.map((failure) => withParent(failure, "conntrack")));
  }

  // The children's checks report each field again; the listing below keeps its first failure.
  if (!failures.some((failure) => failure.property === "family")) {
    for (const family of families)
      failures.push(...familyFailures(inputsOf(family), family, args.srcMask));
  }
  if (failures.length === 0) return;

  // One line per field: its first failure, even when both families report one.
  const byProperty = new Map<string, string>();
  for (const failure of failures) {
    if (!byProperty.has(failure.property)) byProperty.set(failure.property, failure.reason);
  }
  const reasons = [...byProperty.values()];
  throw new IptablesError(
    "INVALID_INPUT",
    `RateLimit ${JSON.stringify(name)} has invalid arguments, so none of its resources were ` +
      `created:\n${reasons.map((reason) => `  ${reason}`).join("\n")}`,
    { details: { resource: name, properties: failures.map((failure) => failure.property) } },
  );
}

/**
 * Returns failures for per-family values that would be ignored or applied to the wrong family:
 * one `srcMask` number for both families, or a value for a family the RateLimit does not have.
 */
function perFamilyFailures(args: RateLimitArgs): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const family = args.family ?? "ipv4";
  if (family === "both" && typeof args.srcMask === "number") {
    failures.push(
      invalid(
        "srcMask",
        args.srcMask,
        'with family "both", give a prefix length per family, such as { ipv4: 32, ipv6: 64 }',
      ),
    );
  }
  if (family !== "ipv4" && family !== "ipv6") return failures;

  const other = family === "ipv4" ? "ipv6" : "ipv4";
  for (const field of ["srcMask", "rejectWith"] as const) {
    const value = args[field];
    if (!isPlainObject(value) || value[other] === undefined) continue;
    failures.push(
      invalid(
        `${field}.${other}`,
        value[other],
        `the RateLimit's family is "${family}", so this value would be ignored: remove it, or ` +
          'set family to "both"',
      ),
    );
  }
  return failures;
}

/** Returns a failure for each argument RateLimit does not take, such as a misspelt one. */
function unknownKeyFailures(args: RateLimitArgs): CheckFailure[] {
  const failures: CheckFailure[] = [];
  for (const [level, known] of Object.entries(KNOWN_KEYS)) {
    const value = level === "" ? args : (args as unknown as Record<string, unknown>)[level];
    if (!isPlainObject(value)) continue;
    for (const key of Object.keys(value)) {
      if (known.includes(key)) continue;
      const property = level === "" ? key : `${level}.${key}`;
      failures.push({
        property,
        reason:
          `${property} is not an input of RateLimit: remove it or check its spelling ` +
          `(accepted: ${known.join(", ")})`,
      });
    }
  }
  return failures;
}

/** Runs the checks of one family's chain and rules, naming the RateLimit's fields. */
function familyFailures(
  inputs: FamilyInputs,
  family: Family,
  srcMask: RateLimitArgs["srcMask"],
): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const chain = checkChain({ ...known(inputs.chain), connection: UNKNOWN });
  failures.push(...renamed(chain.failures, "chain", family, srcMask));

  // Marker ids derived from resource names are always valid, so any valid one serves here.
  const ruleContext = { connection: UNKNOWN, family, table: "filter", markerId: "rate-limit" };
  const inChain = { chainTable: "filter", chainFamily: family };
  const rules = [
    ["accept", checkRule("HashlimitRule", { ...known(inputs.accept), ...ruleContext, ...inChain })],
    ["final", checkRule("Rule", { ...known(inputs.final), ...ruleContext, ...inChain })],
    [
      "hook",
      checkRule("Rule", {
        ...known(inputs.hook),
        ...ruleContext,
        jumpTable: "filter",
        jumpFamily: family,
      }),
    ],
  ] as const;
  for (const [part, result] of rules)
    failures.push(...renamed(result.failures, part, family, srcMask));
  if (inputs.log !== undefined) {
    const log = checkRule("Rule", { ...known(inputs.log), ...ruleContext, ...inChain });
    failures.push(...renamed(log.failures, "log", family, srcMask));
  }
  return failures;
}

/** Renames each failure's property to the RateLimit argument it comes from. */
function renamed(
  failures: readonly CheckFailure[],
  part: keyof FamilyInputs,
  family: Family,
  srcMask: RateLimitArgs["srcMask"],
): CheckFailure[] {
  return failures.map((failure) => {
    // A property such as "destinationPorts.1" names an element of an input.
    const [input = "", ...element] = failure.property.split(".");
    let parent = ARGUMENT_OF[part][input];
    if (parent === "rejectWith") parent = `rejectWith.${family}`;
    if (parent === "srcMask" && isPlainObject(srcMask)) parent = `srcMask.${family}`;
    const argument = parent === undefined ? failure.property : [parent, ...element].join(".");
    return withProperty(failure, argument);
  });
}

/** Moves a failure of a nested resource's input under `parent`, such as "conntrack.max". */
function withParent(failure: CheckFailure, parent: string): CheckFailure {
  return withProperty(failure, `${parent}.${failure.property}`);
}

/** Names `property` in place of the child's property, in the failure and its reason. */
function withProperty(failure: CheckFailure, property: string): CheckFailure {
  // Reasons start with the child's property name, followed by its value or by ":".
  const named = [" ", ":"].some((next) => failure.reason.startsWith(failure.property + next));
  const reason = named
    ? `${property}${failure.reason.slice(failure.property.length)}`
    : `${property}: ${failure.reason}`;
  return { property, reason };
}

/** Returns `inputs` with every value not known yet (an output or a promise) as UNKNOWN. */
function known(inputs: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(inputs)
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => [key, knownValue(value)]),
  );
}

function knownValue(value: unknown): unknown {
  if (pulumi.Output.isInstance(value) || value instanceof Promise) return UNKNOWN;
  if (Array.isArray(value)) return value.map(knownValue);
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Lowest rate and burst that still leave room for the SSH connections a deployment opens. */
const SSH_SAFE_PER_SECOND = 1;
const SSH_SAFE_BURST = 5;

/**
 * Returns a warning when the rate limit also covers new SSH connections to the host at a rate or
 * burst so low that this library, or an operator, could be locked out of SSH from one address.
 * The hook covers SSH when it has no port filter or names the connection's port. Each
 * operation opens a connection, and each change that can affect new connections one more.
 */
export function sshThrottleWarning(name: string, args: RateLimitArgs): string | undefined {
  const connection = args.connection as { port?: unknown } | undefined;
  const port = typeof connection?.port === "number" ? connection.port : 22;
  const ports = args.hook?.ports;
  if (pulumi.Output.isInstance(ports) || ports instanceof Promise) return undefined;
  // SSH runs over TCP, so a hook for another protocol leaves it alone.
  const protocol = args.hook?.protocol;
  if (typeof protocol === "string" && protocol.toLowerCase() !== "tcp") return undefined;
  const coversSsh =
    ports === undefined ||
    (ports as unknown[]).some((entry) => {
      if (typeof entry === "number") return entry === port;
      if (typeof entry !== "string") return false;
      const [low, high = low] = entry.split(":").map(Number);
      return low <= port && port <= high;
    });
  if (!coversSsh) return undefined;

  const rate = typeof args.rate === "string" ? args.rate : "50/sec";
  const burst = typeof args.burst === "number" ? args.burst : 20;
  let perSecond: number;
  try {
    const parsed = parsePacketRate("rate", rate);
    perSecond = parsed.count / parsed.unitSeconds;
  } catch {
    return undefined;
  }
  if (perSecond >= SSH_SAFE_PER_SECOND && burst >= SSH_SAFE_BURST) return undefined;
  return (
    `RateLimit ${JSON.stringify(name)} also limits new SSH connections (port ${port}) to ` +
    `${rate} with burst ${burst} per source, so pulumi-iptables (one connection per operation, ` +
    "one more to confirm a change) and operators can be locked out of SSH: limit other ports " +
    `with hook.ports, or keep rate at least ${SSH_SAFE_PER_SECOND}/sec and burst at least ` +
    `${SSH_SAFE_BURST}`
  );
}
