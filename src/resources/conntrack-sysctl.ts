/**
 * `ConntrackSysctl`: the connection tracking settings of one host.
 *
 * It owns the live values of the keys it is given (`nf_conntrack_max`, the bucket count and
 * other `net.netfilter.nf_conntrack_*` keys) and, with `persist`, the files that set them at
 * boot: /etc/sysctl.d/90-pulumi-iptables-conntrack.conf, /etc/modules-load.d (loads
 * nf_conntrack before sysctl.d is applied) and /etc/modprobe.d (`hashsize=` for the buckets).
 * It records each key's value before its first change and restores it when the key is dropped
 * or the resource is deleted. Keys it is not given are never touched. Use one ConntrackSysctl
 * per host: a second one would overwrite the same files. A change of host replaces it.
 *
 * Sizing (`max`, `buckets`) needs the host's initial network namespace: in a container or
 * another network namespace the kernel makes those keys read-only, and the resource fails with
 * SYSCTL_READ_ONLY naming where to set them instead. Per-namespace keys such as
 * `nf_conntrack_tcp_timeout_established` work there.
 */
import * as pulumi from "@pulumi/pulumi";
import type { ConnectionArgs } from "./connection";
import { conntrackSysctlProviderShim } from "./provider-shims";

export interface ConntrackSysctlArgs {
  /** How to reach the host. Stored in state as a secret. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /**
   * `net.netfilter.nf_conntrack_max`: tracked connections at most; past it the kernel drops new
   * connections ("nf_conntrack: table full, dropping packet"). 256 to 268435456; about 4 times
   * `buckets` is the usual sizing, and a ratio under 1 or over 16 gives a warning.
   * @default left as it is
   */
  readonly max?: pulumi.Input<number>;
  /**
   * Hash table buckets (`net.netfilter.nf_conntrack_buckets`, module parameter `hashsize`),
   * 256 to 67108864.
   * @default left as it is
   */
  readonly buckets?: pulumi.Input<number>;
  /**
   * Other conntrack keys and their integer values, by full key (`net.netfilter.nf_conntrack_udp_timeout`)
   * or by the name after `net.netfilter.` (`nf_conntrack_udp_timeout`).
   * @default none
   */
  readonly settings?: pulumi.Input<Record<string, pulumi.Input<number>>>;
  /**
   * Also sets the values at boot through sysctl.d, modules-load.d and modprobe.d.
   * @default true
   */
  readonly persist?: pulumi.Input<boolean>;
}

export class ConntrackSysctl extends pulumi.dynamic.Resource {
  /** `nf_conntrack_count`: connections tracked at the last create, update or refresh. */
  declare readonly count: pulumi.Output<number>;
  /** `nf_conntrack_max` as read from the host. */
  declare readonly liveMax: pulumi.Output<number>;
  /** `nf_conntrack_buckets` as read from the host. */
  declare readonly liveBuckets: pulumi.Output<number>;
  /** The live value of each key in `settings`, by full key. */
  declare readonly liveSettings: pulumi.Output<Record<string, number>>;
  /** The value of each managed key before its first change; restored on delete. */
  declare readonly previous: pulumi.Output<Record<string, number>>;
  /** The boot files written on the host. */
  declare readonly persistedFiles: pulumi.Output<string[]>;
  /** False when refresh found a live value or a boot file changed; up repairs it. */
  declare readonly inSync: pulumi.Output<boolean>;
  /** The host key the host presented at the first operation (authorized_keys format). */
  declare readonly hostKey: pulumi.Output<string>;
  declare readonly max: pulumi.Output<number | undefined>;
  declare readonly buckets: pulumi.Output<number | undefined>;
  declare readonly settings: pulumi.Output<Record<string, number>>;

  constructor(name: string, args: ConntrackSysctlArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      conntrackSysctlProviderShim,
      name,
      {
        connection: pulumi.secret(args.connection),
        max: args.max,
        buckets: args.buckets,
        settings: args.settings,
        persist: args.persist,
        count: undefined,
        liveMax: undefined,
        liveBuckets: undefined,
        liveSettings: undefined,
        previous: undefined,
        persistedFiles: undefined,
        inSync: undefined,
        hostKey: undefined,
      },
      pulumi.mergeOptions(opts, { additionalSecretOutputs: ["connection"] }),
      "iptables",
      "ConntrackSysctl",
    );
  }
}
