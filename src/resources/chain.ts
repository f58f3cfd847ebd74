/**
 * `Chain`: one user-defined chain in one table and family of a host.
 *
 * It owns the chain itself, never the rules other tools put into it (unless `purgeUnmanaged`),
 * and never rules elsewhere that jump to it: deleting a chain that foreign rules still jump to
 * fails and names those rules. A change of host, family, table or name replaces the chain.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Backend, Family, TableName } from "../netfilter/types";
import type { ConnectionArgs } from "./connection";
import { chainProviderShim } from "./provider-shims";

export interface ChainArgs {
  /** How to reach the host. Stored in state as a secret. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /**
   * The chain name: 1 to 28 letters, digits or "_", "-", ".", ":", "+", "@", not starting with
   * "-", and neither a built-in chain nor a target name such as ACCEPT or LOG.
   */
  readonly name: pulumi.Input<string>;
  /** @default "ipv4" */
  readonly family?: pulumi.Input<Family>;
  /** @default "filter" */
  readonly table?: pulumi.Input<TableName>;
  /**
   * Removes rules in this chain that no resource of this library manages: at create, at every
   * update, and at delete. Refresh counts them (output `foreignRules`), so the next up after a
   * refresh removes rules added since.
   * @default false - foreign rules in the chain are kept, and block its deletion
   */
  readonly purgeUnmanaged?: pulumi.Input<boolean>;
  /**
   * Manages a chain that already exists on the host.
   * @default false - creating a chain that already exists fails and changes nothing, because
   * another tool or stack may own it
   */
  readonly adopt?: pulumi.Input<boolean>;
  /**
   * Fails the create, before the chain exists, when the host runs neither systemd nor upstart,
   * so that rules a PersistenceUnit could not restore at boot never go live. RateLimit sets it
   * when it persists its rules.
   * @default false
   */
  readonly requireBootRestore?: pulumi.Input<boolean>;
  /**
   * Chains of the same table that must exist when this chain is created, such as DOCKER-USER,
   * which Docker creates. A missing one fails the create before the chain exists. RateLimit
   * passes its hook's chain.
   * @default none
   */
  readonly requireChains?: pulumi.Input<pulumi.Input<string>[]>;
}

const CHAIN_BRAND = Symbol.for("pulumi-iptables.Chain");

export class Chain extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  declare readonly family: pulumi.Output<Family>;
  declare readonly table: pulumi.Output<TableName>;
  declare readonly purgeUnmanaged: pulumi.Output<boolean>;
  /** Rules in the chain that no resource of this library manages, at the last read. */
  declare readonly foreignRules: pulumi.Output<number>;
  /** The host's iptables backend: "nft" or "legacy". */
  declare readonly backend: pulumi.Output<Backend>;
  /** The host key the host presented at the first operation (authorized_keys format). */
  declare readonly hostKey: pulumi.Output<string>;

  /** Tells whether `value` is a `Chain`, also across copies of this package. */
  static override isInstance(value: unknown): value is Chain {
    return typeof value === "object" && value !== null && CHAIN_BRAND in value;
  }

  constructor(name: string, args: ChainArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      chainProviderShim,
      name,
      {
        // Every argument goes to check(), so a misspelt one fails there instead of vanishing.
        ...args,
        connection: pulumi.secret(args.connection),
        foreignRules: undefined,
        backend: undefined,
        hostKey: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["connection"] }),
      "iptables",
      "Chain",
    );
    Object.defineProperty(this, CHAIN_BRAND, { value: true });
  }
}
