/**
 * `PersistenceUnit`: the boot-time restore of managed rules on one host.
 *
 * It owns one boot job: a systemd unit (`pulumi-iptables-NAME.service`) or an upstart job
 * (`/etc/init/pulumi-iptables-NAME.conf`) and its folder /etc/pulumi-iptables/NAME, which contains
 * a rules file per family and the restore script. The rules files are rendered from the given
 * resources' outputs (the rules as read back from the host), never from a dump of the live
 * tables, so Docker's or fail2ban's rules are never captured. It never changes live rules: the
 * rule resources do that, and the job only runs at boot (or when restarted by hand, which is
 * idempotent). A change of host or job name replaces it; any change of the persisted rules
 * rewrites the files. Delete disables the unit and removes its files.
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import type { Chain } from "./chain";
import type { ConnectionArgs } from "./connection";
import type { HashlimitRule } from "./hashlimit-rule";
import { persistenceUnitProviderShim } from "./provider-shims";
import type { Rule } from "./rule";

export interface PersistenceUnitArgs {
  /** How to reach the host. Stored in state as a secret. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /**
   * The host's init system. "auto" reads it from the host: systemd when /run/systemd/system
   * exists, upstart when `initctl version` reports upstart; any other host fails with INIT_UNSUPPORTED.
   * @default "auto"
   */
  readonly init?: pulumi.Input<"auto" | "systemd" | "upstart">;
  /**
   * The boot job's name, 1 to 40 lowercase letters, digits and "-": the unit is
   * `pulumi-iptables-<jobName>.service`. Give each PersistenceUnit of a host its own name.
   * @default "<project>-<stack>-<resource name>", lowercased, other characters replaced by "-",
   * and cut to 40 characters with a hash suffix when longer, so stacks sharing a host never collide
   */
  readonly jobName?: pulumi.Input<string>;
  /** User chains to create at boot. @default none */
  readonly chains?: readonly Chain[];
  /**
   * Rules to restore at boot. A rule in a user chain that is not in `chains` and not built in
   * (such as Docker's DOCKER-USER) is left out with a warning, because that chain does not exist
   * yet when the job runs.
   * @default none
   */
  readonly rules?: readonly (Rule | HashlimitRule)[];
}

/** A chain as the provider receives it. */
export interface PersistedChainInput {
  readonly family: string;
  readonly table: string;
  readonly name: string;
}

/** A rule as the provider receives it: the rule resource's read-back outputs. */
export interface PersistedRuleInput {
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  readonly markerId: string;
  readonly order: number;
  readonly rule: string;
}

export class PersistenceUnit extends pulumi.dynamic.Resource {
  /** The init system the job was written for: "systemd" or "upstart". */
  declare readonly resolvedInit: pulumi.Output<string>;
  /** The unit name for systemctl, or the job name for initctl. */
  declare readonly unitName: pulumi.Output<string>;
  /** The files written on the host. */
  declare readonly files: pulumi.Output<string[]>;
  /** Rules left out of the files, as "family/table/chain/markerId", with the reason logged. */
  declare readonly skippedRules: pulumi.Output<string[]>;
  /** False when refresh found a file changed or missing, or the unit disabled; up repairs it. */
  declare readonly inSync: pulumi.Output<boolean>;
  /** The host key the host presented at the first operation (authorized_keys format). */
  declare readonly hostKey: pulumi.Output<string>;
  declare readonly jobName: pulumi.Output<string>;

  constructor(name: string, args: PersistenceUnitArgs, opts: pulumi.CustomResourceOptions = {}) {
    const chains = (args.chains ?? []).map((chain) =>
      pulumi.all([chain.family, chain.table, chain.name]).apply(([family, table, chainName]) => ({
        // A family or table left out of a resource's inputs is the resource's default.
        family: family ?? "ipv4",
        table: table ?? "filter",
        name: chainName,
      })),
    );
    const rules = (args.rules ?? []).map((rule) =>
      pulumi
        .all([rule.family, rule.table, rule.chain, rule.markerId, rule.order, rule.rule])
        .apply(([family, table, chain, markerId, order, line]) => ({
          family: family ?? "ipv4",
          table: table ?? "filter",
          chain,
          markerId,
          order,
          rule: line,
        })),
    );
    super(
      persistenceUnitProviderShim,
      name,
      {
        connection: pulumi.secret(args.connection),
        init: args.init,
        jobName:
          args.jobName ?? defaultJobName(`${pulumi.getProject()}-${pulumi.getStack()}-${name}`),
        chains,
        rules,
        resolvedInit: undefined,
        unitName: undefined,
        files: undefined,
        skippedRules: undefined,
        inSync: undefined,
        hostKey: undefined,
      },
      pulumi.mergeOptions(opts, {
        additionalSecretOutputs: ["connection"],
        dependsOn: [...(args.chains ?? []), ...(args.rules ?? [])],
      }),
      "iptables",
      "PersistenceUnit",
    );
  }
}

/**
 * Derives a job name from a resource name. A name that had to be changed or shortened ends in
 * 8 hexadecimal digits of its SHA-256, so distinct names stay distinct.
 */
export function defaultJobName(name: string): string {
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+/, "");
  if (cleaned === name && cleaned.length >= 1 && cleaned.length <= 40) return cleaned;
  const digest = createHash("sha256").update(name).digest("hex").slice(0, 8);
  const stem = cleaned.slice(0, 31).replace(/-+$/, "");
  return stem === "" ? digest : `${stem}-${digest}`;
}
