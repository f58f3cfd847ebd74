/**
 * `HashlimitRule`: one rule with the `hashlimit` match, which limits packets per source (or
 * destination, or port) with a token bucket kept in a kernel hash table.
 *
 * Ownership and replacement are those of `Rule`: it owns exactly the rule that carries its
 * marker comment, and a change of host, family, table, chain or marker id replaces it.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Backend, Family, TableName } from "../netfilter/types";
import { hashlimitRuleProviderShim } from "./provider-shims";
import { RULE_OUTPUTS } from "./rule";
import {
  ruleOptions,
  ruleProps,
  type MatchArgs,
  type RulePlacementArgs,
  type TargetArgs,
} from "./rule-inputs";

/** Key of a hashlimit bucket: source or destination address or port. */
export type HashlimitMode = "srcip" | "srcport" | "dstip" | "dstport";

export interface HashlimitRuleArgs extends RulePlacementArgs, MatchArgs, TargetArgs {
  /**
   * `--hashlimit-name`: the kernel table, also the file /proc/net/ipt_hashlimit/NAME (ip6t_ for
   * IPv6). 1 to 15 letters, digits, "_", "-" or ".". Rules sharing a name share buckets and the
   * settings of the rule that created the table. An update that changes this rule's settings
   * but not its name moves it through a temporary table, so the kernel uses the new settings.
   */
  readonly hashlimitName: pulumi.Input<string>;
  /** Matches while the rate stays at or below this: "50/sec", "3000/minute", "512kb/s". Set this or `above`. */
  readonly upto?: pulumi.Input<string>;
  /** Matches once the rate goes above this. Set this or `upto`. */
  readonly above?: pulumi.Input<string>;
  /** `--hashlimit-burst`: bucket size in packets, 1 to 1000000. @default 5 */
  readonly burst?: pulumi.Input<number>;
  /** Keys a bucket is kept per. @default ["srcip"] */
  readonly mode?: pulumi.Input<pulumi.Input<HashlimitMode>[]>;
  /** Prefix length that groups source addresses into one bucket. @default 32 (ipv4), 128 (ipv6) */
  readonly srcMask?: pulumi.Input<number>;
  /** Prefix length that groups destination addresses. @default 32 (ipv4), 128 (ipv6) */
  readonly dstMask?: pulumi.Input<number>;
  /** Hash table buckets. @default chosen by the kernel from the machine's memory */
  readonly htableSize?: pulumi.Input<number>;
  /** Maximum entries in the table. @default 8 times htableSize */
  readonly htableMax?: pulumi.Input<number>;
  /** Milliseconds after which an idle entry expires. @default the rate's unit (1000 for "/sec") */
  readonly htableExpireMs?: pulumi.Input<number>;
  /** Milliseconds between garbage collections of the table. @default 1000 */
  readonly htableGcIntervalMs?: pulumi.Input<number>;
}

export class HashlimitRule extends pulumi.dynamic.Resource {
  /** The rule as `iptables-save` prints it on the host (`-A CHAIN ...`), read back after apply. */
  declare readonly rule: pulumi.Output<string>;
  /** Packets the rule matched, at the last create, update or refresh. */
  declare readonly packets: pulumi.Output<number>;
  /** Bytes the rule matched, at the last create, update or refresh. */
  declare readonly bytes: pulumi.Output<number>;
  /** Live entries of the hash table (lines of /proc/net/ipt_hashlimit/NAME) at the last read. */
  declare readonly entries: pulumi.Output<number>;
  /** The host's iptables backend: "nft" or "legacy". */
  declare readonly backend: pulumi.Output<Backend>;
  /** The host key the host presented at the first operation (authorized_keys format). */
  declare readonly hostKey: pulumi.Output<string>;
  /** "in-order", or "out-of-order" when refresh found the rule moved among the managed rules. */
  declare readonly placement: pulumi.Output<string>;
  declare readonly chain: pulumi.Output<string>;
  declare readonly family: pulumi.Output<Family>;
  declare readonly table: pulumi.Output<TableName>;
  declare readonly order: pulumi.Output<number>;
  declare readonly markerId: pulumi.Output<string>;
  declare readonly hashlimitName: pulumi.Output<string>;

  constructor(name: string, args: HashlimitRuleArgs, opts: pulumi.CustomResourceOptions = {}) {
    const { props, dependsOn } = ruleProps(name, args, [...RULE_OUTPUTS, "entries"]);
    super(
      hashlimitRuleProviderShim,
      name,
      props,
      ruleOptions(opts, dependsOn),
      "iptables",
      "HashlimitRule",
    );
  }
}
