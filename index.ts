/**
 * The Pulumi program of this repository: the RateLimit recipe on every host of a lab made with
 * `npm run lab -- up` (hosts from the lab's inventory file, both iptables families).
 *
 * Stack config, all optional:
 *   lab     which lab: the name given to `npm run lab -- up --name` (default "default")
 *   rate    new connections per source address (default "50/sec")
 *   burst   connections a source may open at once (default 20)
 *
 * Lab hosts run no init system, so the rules are not persisted for boot (`persist: false`).
 */
import { readFileSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { RateLimit } from "./src/index";
import { inventoryPath, readInventory } from "./src/lab/inventory";

const config = new pulumi.Config();
const inventory = readInventory(inventoryPath(config.get("lab") ?? "default"));
const rate = config.get("rate") ?? "50/sec";
const burst = config.getNumber("burst") ?? 20;

export const hosts = inventory.hosts.map((host) => {
  const limit = new RateLimit(host.name, {
    connection: {
      host: host.ipv4,
      port: host.port,
      user: host.user,
      privateKey: pulumi.secret(readFileSync(host.privateKeyPath, "utf8")),
      hostKey: host.hostKey,
    },
    family: "both",
    rate,
    burst,
    persist: false,
  });
  return { name: host.name, address: host.ipv4, backend: host.backend, rules: limit.rules };
});
