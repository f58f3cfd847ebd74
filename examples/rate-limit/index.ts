/**
 * Rate limiting of new connections on every host of a fleet listed in stack config.
 *
 * For each host, a `remote.Command` of `@pulumi/command` first makes sure iptables and the
 * conntrack tools are installed. Then a `RateLimit` sends new connections (optionally only to
 * some TCP ports) through a per-source-address hashlimit. Within the rate they pass; above it,
 * a sampled LOG line is written and the connection is rejected. Rules of Docker, fail2ban and
 * anything else on the hosts are left alone.
 *
 * Stack config (see Pulumi.example.yaml):
 *   fleet       list of { name, host, port?, user?, sudo?, family?, ports?, hostKey?, persist? }
 *   privateKey  secret: the SSH key every host accepts
 *   rate        new connections per source, such as "50/sec" (default) or "3000/minute"
 *   burst       connections a source may open at once (default 20)
 */
import * as pulumi from "@pulumi/pulumi";
import { remote } from "@pulumi/command";
// In a project of your own, import from "pulumi-iptables", which package.json already lists.
// This copy imports the sources, so the repository type-checks it without an install.
import { RateLimit } from "../../src/index";

/** One host of the fleet, as the `fleet` config list gives it. */
interface FleetHost {
  /** Unique among the hosts: names the resources and the hashlimit table (at most 15 characters). */
  readonly name: string;
  /** Address or DNS name. */
  readonly host: string;
  /** @default 22 */
  readonly port?: number;
  /** @default "root" */
  readonly user?: string;
  /** Run as root through `sudo -n` (for a `user` other than root). @default false */
  readonly sudo?: boolean;
  /** @default "both" */
  readonly family?: "ipv4" | "ipv6" | "both";
  /** Limit only new connections to these TCP ports. @default every new connection */
  readonly ports?: number[];
  /** The host's public key (authorized_keys format). @default the key seen first is pinned */
  readonly hostKey?: string;
  /**
   * Restore the rules at boot (a systemd unit or an upstart job); false for hosts without
   * either, such as containers.
   * @default true
   */
  readonly persist?: boolean;
}

/** Installs iptables and conntrack with the host's package manager, unless already there. */
const INSTALL_SCRIPT = `set -e
if command -v iptables-restore >/dev/null 2>&1 && command -v conntrack >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables conntrack
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y -q iptables-nft conntrack-tools
elif command -v yum >/dev/null 2>&1; then
  yum install -y -q iptables conntrack-tools
else
  echo "no apt-get, dnf or yum on this host: install iptables and conntrack by hand" >&2
  exit 1
fi`;

const config = new pulumi.Config();
const fleet = config.requireObject<FleetHost[]>("fleet");
const privateKey = config.requireSecret("privateKey");
const rate = config.get("rate") ?? "50/sec";
const burst = config.getNumber("burst") ?? 20;

export const hosts = fleet.map((entry) => {
  // The connection of @pulumi/command; RateLimit takes the same object plus `sudo`.
  const ssh = {
    host: entry.host,
    port: entry.port ?? 22,
    user: entry.user ?? "root",
    privateKey,
    ...(entry.hostKey === undefined ? {} : { hostKey: entry.hostKey }),
  };
  const asRoot = entry.sudo
    ? `sudo -n sh -c '${INSTALL_SCRIPT.replace(/'/g, `'\\''`)}'`
    : INSTALL_SCRIPT;
  const install = new remote.Command(`${entry.name}-install-iptables`, {
    connection: ssh,
    create: asRoot,
  });

  const limit = new RateLimit(
    entry.name,
    {
      connection: { ...ssh, sudo: entry.sudo ?? false },
      family: entry.family ?? "both",
      rate,
      burst,
      hook: entry.ports === undefined ? undefined : { protocol: "tcp", ports: entry.ports },
      persist: entry.persist ?? true,
    },
    { dependsOn: [install] },
  );
  return { name: entry.name, rules: limit.rules };
});
