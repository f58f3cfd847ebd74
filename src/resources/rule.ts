/**
 * `Rule`: one rule in any chain (built-in or user-defined) of a host.
 *
 * It owns exactly the rule that carries its marker comment; rules without that marker (Docker,
 * fail2ban, hand-written) are never modified, moved or removed. A change of host, family,
 * table, chain or marker id replaces the resource. Any other change (its matches, target or
 * order) rewrites the rule in place, in one iptables-restore transaction.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Backend, Family, TableName } from "../netfilter/types";
import { ruleProviderShim } from "./provider-shims";
import {
  ruleOptions,
  ruleProps,
  type MatchArgs,
  type RulePlacementArgs,
  type TargetArgs,
} from "./rule-inputs";

export interface RuleArgs extends RulePlacementArgs, MatchArgs, TargetArgs {
  /**
   * The whole rule as iptables takes it after `-A CHAIN`, such as
   * `"-p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT"`, instead of typed fields
   * (only `comment` may be given beside it).
   * @default the rule is built from the typed fields
   */
  readonly args?: pulumi.Input<string>;
  /** `-m limit --limit`: a rate such as "1/sec" or "6/minute". @default no limit match */
  readonly limit?: pulumi.Input<string>;
  /** `--limit-burst`: 1 to 10000. @default 5 */
  readonly limitBurst?: pulumi.Input<number>;
}

/** Outputs the provider adds to the inputs of every rule resource. */
export const RULE_OUTPUTS = ["packets", "bytes", "backend", "hostKey", "placement"] as const;

export class Rule extends pulumi.dynamic.Resource {
  /** The rule as `iptables-save` prints it on the host (`-A CHAIN ...`), read back after apply. */
  declare readonly rule: pulumi.Output<string>;
  /** Packets the rule matched, at the last create, update or refresh. */
  declare readonly packets: pulumi.Output<number>;
  /** Bytes the rule matched, at the last create, update or refresh. */
  declare readonly bytes: pulumi.Output<number>;
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

  constructor(name: string, args: RuleArgs, opts: pulumi.CustomResourceOptions = {}) {
    const { props, dependsOn } = ruleProps(name, args, RULE_OUTPUTS);
    super(ruleProviderShim, name, props, ruleOptions(opts, dependsOn), "iptables", "Rule");
  }
}
