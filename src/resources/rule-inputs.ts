/**
 * The arguments `Rule` and `HashlimitRule` share, and how the constructors turn them into the
 * inputs the provider receives.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Family, TableName } from "../netfilter/types";
import { Chain } from "./chain";
import type { ConnectionArgs } from "./connection";
import { deriveMarkerId } from "./marker-id";

/** Placement and identity of a rule. */
export interface RulePlacementArgs {
  /** How to reach the host. Stored in state as a secret. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** @default "ipv4", or the family of `chain` when it is a `Chain` */
  readonly family?: pulumi.Input<Family>;
  /** @default "filter", or the table of `chain` when it is a `Chain` */
  readonly table?: pulumi.Input<TableName>;
  /** The chain the rule is appended to: a built-in chain name such as "INPUT", or a `Chain`. */
  readonly chain: pulumi.Input<string> | Chain;
  /**
   * Position among the managed rules of the chain, ascending (an integer). Foreign rules keep
   * their places: a rule lands just above the first managed rule that sorts after it, else just
   * below the last managed rule, else at the top of the chain.
   * @default 0
   */
  readonly order?: pulumi.Input<number>;
  /**
   * The id in the rule's marker comment (`pulumi-iptables:<id>:<order>`).
   * @default "<project>/<stack>/<resource name>", so stacks sharing a host never collide
   */
  readonly markerId?: pulumi.Input<string>;
  /**
   * Takes over a live rule that already carries this marker id but differs from this rule.
   * @default false - creating such a rule fails and changes nothing, because another resource
   * or stack owns it (a live rule equal to this one is taken over either way)
   */
  readonly adopt?: pulumi.Input<boolean>;
}

/** Fields that match packets. Values starting with "!" are negated, as in iptables. */
export interface MatchArgs {
  /** `-p`: "tcp", "udp", "icmp", "icmpv6", ... or a number. @default any protocol */
  readonly protocol?: pulumi.Input<string>;
  /** `-s`: an address or network of the rule's family. @default any source */
  readonly source?: pulumi.Input<string>;
  /** `-d`: an address or network of the rule's family. @default any destination */
  readonly destination?: pulumi.Input<string>;
  /** `-i`: incoming interface; a trailing "+" matches a prefix. @default any interface */
  readonly inInterface?: pulumi.Input<string>;
  /** `-o`: outgoing interface; a trailing "+" matches a prefix. @default any interface */
  readonly outInterface?: pulumi.Input<string>;
  /** Source ports or "low:high" ranges (needs `protocol`). @default any port */
  readonly sourcePorts?: pulumi.Input<pulumi.Input<number | string>[]>;
  /** Destination ports or "low:high" ranges (needs `protocol`). @default any port */
  readonly destinationPorts?: pulumi.Input<pulumi.Input<number | string>[]>;
  /** Connection states of the conntrack match, such as ["NEW"]. @default any state */
  readonly ctstate?: pulumi.Input<pulumi.Input<string>[]>;
  /** A comment of your own (at most 255 characters), kept beside the marker. @default none */
  readonly comment?: pulumi.Input<string>;
}

/** Target of a rule: where matching packets go. */
export interface TargetArgs {
  /** `-j`: a target ("ACCEPT", "DROP", "REJECT", "LOG", "RETURN", ...) or a user chain. */
  readonly jump?: pulumi.Input<string> | Chain;
  /** `-g`: a user chain to continue in without returning here. */
  readonly goto?: pulumi.Input<string> | Chain;
  /** `--reject-with` of REJECT. @default "icmp-port-unreachable" (ipv4), "icmp6-port-unreachable" (ipv6) */
  readonly rejectWith?: pulumi.Input<string>;
  /** `--log-prefix` of LOG: at most 29 characters. @default no prefix */
  readonly logPrefix?: pulumi.Input<string>;
  /** `--log-level` of LOG: 0 to 7 or a syslog level name. @default 4 (warning) */
  readonly logLevel?: pulumi.Input<number | string>;
}

/** The inputs a rule constructor registers, and the resources it must wait for. */
export interface RuleProps {
  readonly props: Record<string, unknown>;
  readonly dependsOn: pulumi.Resource[];
}

/**
 * Builds the registered inputs of a rule resource: the connection as a secret, `Chain`
 * arguments as their name plus table and family (so check() can reject a jump across tables),
 * the marker id, and empty outputs.
 */
export function ruleProps(name: string, args: object, outputs: readonly string[]): RuleProps {
  const props: Record<string, unknown> = {};
  const dependsOn: pulumi.Resource[] = [];
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined) continue;
    if (key === "connection") {
      props.connection = pulumi.secret(value);
    } else if (key === "chain" && Chain.isInstance(value)) {
      props.chain = value.name;
      props.chainTable = value.table;
      props.chainFamily = value.family;
      dependsOn.push(value);
    } else if ((key === "jump" || key === "goto") && Chain.isInstance(value)) {
      props[key] = value.name;
      props.jumpTable = value.table;
      props.jumpFamily = value.family;
      dependsOn.push(value);
    } else {
      props[key] = value;
    }
  }
  const chain = (args as RulePlacementArgs).chain;
  if (Chain.isInstance(chain)) {
    props.family ??= chain.family;
    props.table ??= chain.table;
  }
  props.markerId ??= deriveMarkerId(pulumi.getProject(), pulumi.getStack(), name);

  // `rule` carries the predicted line, which check() computes. Registering it as an output of
  // the rule fields makes it secret whenever one of them is, so a secret comment never shows
  // in the rule text in state.
  const ruleFields = Object.entries(props)
    .filter(([key]) => key !== "connection")
    .map(([, value]) => value);
  props.rule = pulumi.all(ruleFields).apply(() => "");

  for (const output of outputs) props[output] = undefined;
  return { props, dependsOn };
}

/** Adds the dependencies and the secret outputs every rule resource needs to `opts`. */
export function ruleOptions(
  opts: pulumi.CustomResourceOptions,
  dependsOn: pulumi.Resource[],
): pulumi.CustomResourceOptions {
  return pulumi.mergeOptions(opts, { dependsOn, additionalSecretOutputs: ["connection"] });
}
