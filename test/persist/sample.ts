/** A managed rule set shaped like RateLimit's, for the persistence tests. */
import type { PersistedTable } from "../../src/persist/rules-file";
import type { FamilyCommands } from "../../src/persist/boot-job";

function marker(id: string, order: number) {
  return { id, order };
}

export const IPV4_TABLES: readonly PersistedTable[] = [
  {
    table: "filter",
    ownedChains: ["RATE-LIMIT"],
    rules: [
      {
        marker: marker("web/reject", 30),
        chain: "RATE-LIMIT",
        line: '-A RATE-LIMIT -m comment --comment "pulumi-iptables:web/reject:30" -j REJECT --reject-with icmp-port-unreachable',
      },
      {
        marker: marker("web/hook", 0),
        chain: "INPUT",
        line: '-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m comment --comment "pulumi-iptables:web/hook:0" -j RATE-LIMIT',
      },
      {
        marker: marker("web/accept", 10),
        chain: "RATE-LIMIT",
        line: '-A RATE-LIMIT -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 100 --hashlimit-mode srcip --hashlimit-name web-conn -m comment --comment "pulumi-iptables:web/accept:10" -j RETURN',
      },
      {
        marker: marker("web/log", 20),
        chain: "RATE-LIMIT",
        line: '-A RATE-LIMIT -m limit --limit 1/sec -m comment --comment "pulumi-iptables:web/log:20" -j LOG --log-prefix "rate-limit: "',
      },
    ],
  },
  {
    table: "raw",
    ownedChains: [],
    rules: [
      {
        marker: marker("web/notrack", 0),
        chain: "PREROUTING",
        line: '-A PREROUTING -i lo -m comment --comment "pulumi-iptables:web/notrack:0" -j CT --notrack',
      },
    ],
  },
];

export const IPV6_TABLES: readonly PersistedTable[] = [
  {
    table: "filter",
    ownedChains: ["RATE-LIMIT"],
    rules: [
      {
        marker: marker("web/hook", 0),
        chain: "INPUT",
        line: '-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m comment --comment "pulumi-iptables:web/hook:0" -j RATE-LIMIT',
      },
      {
        marker: marker("web/accept", 10),
        chain: "RATE-LIMIT",
        line: '-A RATE-LIMIT -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 100 --hashlimit-mode srcip --hashlimit-name web-conn6 --hashlimit-srcmask 64 -m comment --comment "pulumi-iptables:web/accept:10" -j RETURN',
      },
      {
        marker: marker("web/reject", 30),
        chain: "RATE-LIMIT",
        line: '-A RATE-LIMIT -m comment --comment "pulumi-iptables:web/reject:30" -j REJECT --reject-with icmp6-port-unreachable',
      },
    ],
  },
];

export function nftCommands(family: "ipv4" | "ipv6"): FamilyCommands {
  const base = family === "ipv4" ? "iptables" : "ip6tables";
  return {
    saveCommand: `/usr/sbin/${base}-nft-save`,
    restoreCommand: `/usr/sbin/${base}-nft-restore`,
    wait: true,
  };
}
