/**
 * `RateLimit`: per-source-address rate limiting of new connections on one host.
 *
 * Per family it owns a chain (default RATE-LIMIT) with three rules, in this order:
 *   10  hashlimit RETURN: new connections within the rate (per source address) go back to the
 *       hook's chain, where the host's own rules still decide (`withinRate: "ACCEPT"` admits
 *       them at once instead).
 *   20  LOG, sampled with the limit match, of what is about to be rejected (unless `log: false`).
 *   30  REJECT (or DROP) of the rest.
 * It also owns a hook rule in a built-in chain (default INPUT, or for example DOCKER-USER for
 * published container ports) that sends conntrack NEW packets into the chain, optionally only
 * those of some protocol and ports. Everything else on the host is left as it is. The hook is
 * created after the chain's rules and deleted before them, so a half-built chain never sees
 * traffic.
 *
 * With the defaults, a host shows (IPv4):
 *   -A INPUT -m conntrack --ctstate NEW -m comment --comment "pulumi-iptables:...-hook:0" -j RATE-LIMIT
 *   -A RATE-LIMIT -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 20 --hashlimit-mode srcip
 *      --hashlimit-name web-1a2b3 -m comment --comment "...-accept:10" -j RETURN
 *   -A RATE-LIMIT -m limit --limit 1/sec -m comment --comment "...-log:20" -j LOG --log-prefix "RATE-LIMIT: "
 *   -A RATE-LIMIT -m comment --comment "...-reject:30" -j REJECT --reject-with icmp-port-unreachable
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import type { Family } from "../netfilter/types";
import { Chain } from "./chain";
import { ConntrackSysctl, type ConntrackSysctlArgs } from "./conntrack-sysctl";
import type { ConnectionArgs } from "./connection";
import { HashlimitRule, type HashlimitMode, type HashlimitRuleArgs } from "./hashlimit-rule";
import { checkRateLimitArgs, sshThrottleWarning } from "./rate-limit-check";
import { PersistenceUnit, type PersistenceUnitArgs } from "./persistence-unit";
import { Rule, type RuleArgs } from "./rule";

/** Entry into the rate limit: the chain that jumps in, and the traffic it sends. */
export interface RateLimitHookArgs {
  /**
   * The chain that jumps into the rate limit: a built-in chain of the filter table, or a chain
   * another tool creates, such as Docker's DOCKER-USER (which must exist before the hook).
   * @default "INPUT"
   */
  readonly chain?: pulumi.Input<string>;
  /** Only this protocol, such as "tcp". @default "tcp" when `ports` is set, else every protocol */
  readonly protocol?: pulumi.Input<string>;
  /** Only these destination ports or "low:high" ranges. @default every port */
  readonly ports?: pulumi.Input<pulumi.Input<number | string>[]>;
  /** Only packets arriving on this interface. @default every interface */
  readonly inInterface?: pulumi.Input<string>;
  /** Position of the hook among the managed rules of its chain. @default 0 */
  readonly order?: pulumi.Input<number>;
}

/** The sampled LOG of rejected connections. */
export interface RateLimitLogArgs {
  /** How many log lines at most: a rate such as "1/sec" or "10/minute". @default "1/sec" */
  readonly rate?: pulumi.Input<string>;
  /** Lines allowed in a burst. @default 5 */
  readonly burst?: pulumi.Input<number>;
  /** `--log-prefix`, at most 29 characters. @default "<chain>: " */
  readonly prefix?: pulumi.Input<string>;
  /** Syslog level, 0 to 7 or a name. @default 4 (warning) */
  readonly level?: pulumi.Input<number | string>;
}

export interface RateLimitArgs {
  /** How to reach the host. Stored in state as a secret. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** "ipv4", "ipv6", or "both" for a chain and rules in each family. @default "ipv4" */
  readonly family?: "ipv4" | "ipv6" | "both";
  /** Name of the owned chain (the same in each family). @default "RATE-LIMIT" */
  readonly chain?: pulumi.Input<string>;
  /** New connections allowed per source: "50/sec", "3000/minute", ... @default "50/sec" */
  readonly rate?: pulumi.Input<string>;
  /** Connections a source may open at once before the rate applies. @default 20 */
  readonly burst?: pulumi.Input<number>;
  /**
   * Name of the kernel's hashlimit table (1 to 15 characters). Rules of one name share one
   * table, so give each RateLimit on a host its own.
   * @default up to 9 characters of the resource name, "-", and 5 hexadecimal digits derived from
   * the project, stack and resource name, so stacks sharing a host never share a table
   */
  readonly hashlimitName?: pulumi.Input<string>;
  /**
   * Verdict for new connections within the rate. "RETURN" hands them back to the hook's
   * chain, so the host's own rules after the hook still decide (a port the host blocks stays
   * blocked). "ACCEPT" admits them at once, skipping every rule after the hook.
   * @default "RETURN"
   */
  readonly withinRate?: "RETURN" | "ACCEPT";
  /** Keys a bucket is kept per. @default ["srcip"] */
  readonly mode?: pulumi.Input<pulumi.Input<HashlimitMode>[]>;
  /**
   * Prefix length that groups source addresses into one bucket: a number for the resource's
   * family, or one per family.
   * @default 32 for IPv4 (one bucket per address), 64 for IPv6 (one per /64, because a single
   * client usually has a whole /64)
   */
  readonly srcMask?: number | { readonly ipv4?: number; readonly ipv6?: number };
  /** Milliseconds after which an idle bucket expires. @default the rate's unit */
  readonly htableExpireMs?: pulumi.Input<number>;
  /** Buckets of the kernel's hash table. @default chosen by the kernel */
  readonly htableSize?: pulumi.Input<number>;
  /** Maximum entries of the kernel's hash table. @default 8 times htableSize */
  readonly htableMax?: pulumi.Input<number>;
  /**
   * Takes over a chain of the same name that already exists on the host, and live rules that
   * carry this RateLimit's markers, instead of failing.
   * @default false
   */
  readonly adopt?: pulumi.Input<boolean>;
  /** Traffic that enters the rate limit. @default conntrack NEW packets arriving through INPUT */
  readonly hook?: RateLimitHookArgs;
  /** The sampled LOG of rejected connections, or false for none. @default 1/sec, burst 5 */
  readonly log?: RateLimitLogArgs | false;
  /** Verdict for connections over the rate. @default "REJECT" */
  readonly reject?: "REJECT" | "DROP";
  /**
   * `--reject-with` of REJECT, per family. When the hook matches only TCP (its `protocol` is
   * "tcp", or it has `ports`), the final rule also matches `-p tcp`.
   * @default "tcp-reset" when the hook matches only TCP, else "icmp-port-unreachable" (ipv4) and
   * "icmp6-port-unreachable" (ipv6)
   */
  readonly rejectWith?: {
    readonly ipv4?: pulumi.Input<string>;
    readonly ipv6?: pulumi.Input<string>;
  };
  /**
   * Sizes the host's conntrack table with a ConntrackSysctl (`max`, `buckets`, `settings`,
   * `persist`), or false to leave it as it is. Give it on one RateLimit per host at most.
   * @default false
   */
  readonly conntrack?: Omit<ConntrackSysctlArgs, "connection"> | false;
  /**
   * Restores the chain and rules at boot with a PersistenceUnit: true, the unit's `init` and
   * `jobName`, or false for none. On a host that runs neither systemd nor upstart, true fails
   * with INIT_UNSUPPORTED before anything is applied; the message gives `persist: false` as the fix.
   * @default true
   */
  readonly persist?: boolean | Pick<PersistenceUnitArgs, "init" | "jobName">;
}

/** The resources of one family. */
export interface RateLimitFamily {
  readonly family: Family;
  readonly chain: Chain;
  readonly hook: Rule;
  readonly accept: HashlimitRule;
  readonly log?: Rule;
  readonly final: Rule;
}

/** Orders of the rules in the owned chain; gaps leave room for rules added later. */
const ORDER = { accept: 10, log: 20, final: 30 } as const;

export class RateLimit extends pulumi.ComponentResource {
  /** The resources per family, in the order of `family`. */
  readonly families: readonly RateLimitFamily[];
  /** The host's conntrack settings, when `conntrack` is given. */
  readonly conntrack?: ConntrackSysctl;
  /** The boot-time restore of the chain and rules, unless `persist` is false. */
  readonly persistence?: PersistenceUnit;
  /** Every managed rule as read back from the host: hook first, then the chain in order. */
  readonly rules: pulumi.Output<string[]>;

  constructor(name: string, args: RateLimitArgs, opts: pulumi.ComponentResourceOptions = {}) {
    const families: Family[] = args.family === "both" ? ["ipv4", "ipv6"] : [args.family ?? "ipv4"];
    checkRateLimitArgs(name, args, families, (family) => familyInputs(name, family, args));
    super("pulumi-iptables:index:RateLimit", name, {}, opts);
    const sshWarning = sshThrottleWarning(name, args);
    if (sshWarning !== undefined) void pulumi.log.warn(sshWarning, this);

    const connection = pulumi.secret(args.connection);
    this.families = families.map((family) => this.addFamily(name, family, args, connection));
    if (args.conntrack) {
      this.conntrack = new ConntrackSysctl(
        `${name}-conntrack`,
        { ...args.conntrack, connection },
        { parent: this },
      );
    }
    if (args.persist !== false) {
      const options = args.persist === undefined || args.persist === true ? {} : args.persist;
      this.persistence = new PersistenceUnit(
        `${name}-persist`,
        {
          ...options,
          connection,
          chains: this.families.map((f) => f.chain),
          rules: this.families.flatMap((f) =>
            [f.hook, f.accept, f.log, f.final].filter((r) => r !== undefined),
          ),
        },
        { parent: this },
      );
    }

    this.rules = pulumi
      .all(
        this.families
          .flatMap((f) => [f.hook, f.accept, f.log, f.final].filter((r) => r !== undefined))
          .map((r) => r.rule),
      )
      .apply((rules) => rules);
    this.registerOutputs({ rules: this.rules });
  }

  /** Creates the chain and its rules for one family. */
  private addFamily(
    name: string,
    family: Family,
    args: RateLimitArgs,
    connection: pulumi.Output<ConnectionArgs>,
  ): RateLimitFamily {
    const opts = { parent: this };
    const prefix = `${name}-${family}`;
    const inputs = familyInputs(name, family, args);
    // A rate limit that persists with a detected init system checks for one before anything
    // goes live, so a host without one fails with nothing applied.
    const persist = args.persist;
    const init = typeof persist === "object" ? persist.init : undefined;
    const detectsInit = persist !== false && (init === undefined || init === "auto");
    const chain = new Chain(
      `${prefix}-chain`,
      {
        connection,
        ...inputs.chain,
        requireBootRestore: detectsInit ? true : undefined,
        // The hook's chain (DOCKER-USER, say) must exist before anything is applied.
        requireChains: [inputs.hook.chain as pulumi.Input<string>],
      },
      opts,
    );
    const accept = new HashlimitRule(
      `${prefix}-accept`,
      { connection, ...inputs.accept, chain },
      opts,
    );
    const log =
      inputs.log === undefined
        ? undefined
        : new Rule(`${prefix}-log`, { connection, ...inputs.log, chain }, opts);
    const final = new Rule(
      `${prefix}-${inputs.final.jump.toLowerCase()}`,
      { connection, ...inputs.final, chain },
      opts,
    );

    // The hook comes last and goes first: until it exists nothing reaches the chain, so a
    // half-built chain (say, the REJECT rule without the ACCEPT rule) never rejects traffic.
    const hook = new Rule(
      `${prefix}-hook`,
      { connection, ...inputs.hook, jump: chain },
      { ...opts, dependsOn: [accept, final, ...(log === undefined ? [] : [log])] },
    );

    return { family, chain, hook, accept, log, final };
  }
}

/**
 * The inputs of one family's resources but the connection, with the owned chain as its name.
 * The constructor passes the `Chain` resource in its place; the argument check validates these
 * very inputs, so both see the same defaults.
 */
export interface FamilyInputs {
  readonly chain: {
    readonly family: Family;
    readonly name: pulumi.Input<string>;
    readonly adopt?: pulumi.Input<boolean>;
  };
  readonly accept: Omit<HashlimitRuleArgs, "connection">;
  readonly log?: Omit<RuleArgs, "connection">;
  readonly final: Omit<RuleArgs, "connection"> & { readonly jump: "REJECT" | "DROP" };
  readonly hook: Omit<RuleArgs, "connection">;
}

/** Builds the inputs of one family's chain and rules from the RateLimit's arguments. */
export function familyInputs(name: string, family: Family, args: RateLimitArgs): FamilyInputs {
  const chain = args.chain ?? "RATE-LIMIT";
  const adopt = args.adopt;
  const accept = {
    chain,
    adopt,
    order: ORDER.accept,
    hashlimitName:
      args.hashlimitName ?? defaultHashlimitName(pulumi.getProject(), pulumi.getStack(), name),
    upto: args.rate ?? "50/sec",
    burst: args.burst ?? 20,
    mode: args.mode ?? ["srcip"],
    srcMask: sourceMask(args.srcMask, family),
    htableExpireMs: args.htableExpireMs,
    htableSize: args.htableSize,
    htableMax: args.htableMax,
    jump: args.withinRate ?? "RETURN",
  };

  const log =
    args.log === false
      ? undefined
      : {
          chain,
          adopt,
          order: ORDER.log,
          limit: args.log?.rate ?? "1/sec",
          limitBurst: args.log?.burst ?? 5,
          jump: "LOG",
          logPrefix: args.log?.prefix ?? mapInput(chain, (name) => `${name}: `.slice(0, 29)),
          logLevel: args.log?.level,
        };

  // When only TCP reaches the chain, REJECT replies with a TCP reset. The kernel rate-limits
  // ICMP errors per destination (net.ipv4.icmp_ratelimit), so under a flood most clients would
  // get no reply and wait for their connect timeout instead of failing at once.
  const hook = args.hook ?? {};
  const hookProtocol = hook.protocol ?? (hook.ports === undefined ? undefined : "tcp");
  // A value that resolves to undefined registers no value, as if the field were left out.
  const onlyForTcp = (value: string) =>
    mapInput(hookProtocol, (protocol) => (protocol === "tcp" ? value : undefined));
  const reject = args.reject ?? "REJECT";
  const final = {
    chain,
    adopt,
    order: ORDER.final,
    protocol: reject === "REJECT" ? onlyForTcp("tcp") : undefined,
    jump: reject,
    rejectWith:
      reject === "REJECT" ? (args.rejectWith?.[family] ?? onlyForTcp("tcp-reset")) : undefined,
  };

  return {
    chain: { family, name: chain, adopt },
    accept,
    log,
    final,
    hook: {
      family,
      adopt,
      chain: hook.chain ?? "INPUT",
      order: hook.order ?? 0,
      protocol: hookProtocol,
      destinationPorts: hook.ports,
      inInterface: hook.inInterface,
      ctstate: ["NEW"],
      jump: chain,
    },
  };
}

/** Applies `fn` to a plain value at once, and to an output or promise when it resolves. */
function mapInput<T, U>(
  value: pulumi.Input<T> | undefined,
  fn: (resolved: T | undefined) => U | undefined,
): pulumi.Input<U> | undefined {
  if (pulumi.Output.isInstance(value) || value instanceof Promise) {
    return pulumi.output(value).apply((resolved) => fn(resolved as T)) as pulumi.Output<U>;
  }
  return fn(value as T | undefined);
}

/**
 * Returns the hashlimit name used when none is given: up to 9 characters of the resource name
 * (those iptables takes), "-", and 5 hexadecimal digits of a hash of project, stack and name.
 */
export function defaultHashlimitName(project: string, stack: string, name: string): string {
  const base =
    name
      .replace(/[^A-Za-z0-9_.-]/g, "")
      .replace(/^[_.-]+/, "")
      .slice(0, 9) || "rl";
  const digest = createHash("sha256").update(`${project}/${stack}/${name}`).digest("hex");
  return `${base}-${digest.slice(0, 5)}`;
}

function sourceMask(mask: RateLimitArgs["srcMask"], family: Family): number | undefined {
  if (typeof mask === "number") return mask;
  const perFamily = mask?.[family];
  if (perFamily !== undefined) return perFamily;
  return family === "ipv6" ? 64 : undefined;
}
