/**
 * The lab inventory: the file tests, examples and the root Pulumi program read to reach lab hosts.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Backend } from "../netfilter/types";

/** Where labs keep their state. Override with PULUMI_IPTABLES_LAB_DIR. */
export function labBaseDir(): string {
  return process.env.PULUMI_IPTABLES_LAB_DIR ?? "/var/lib/pulumi-iptables-lab";
}

/** The lab that `npm run lab -- up` manages when no `--name` is given. */
export const DEFAULT_LAB_NAME = "default";

export function labDir(name: string): string {
  return join(labBaseDir(), name);
}

export function inventoryPath(name: string = DEFAULT_LAB_NAME): string {
  return join(labDir(name), "inventory.json");
}

/** One lab host as the inventory file lists it. */
export interface InventoryHost {
  readonly index: number;
  /** Short name, also the host's hostname: "h0", "h1", ... */
  readonly name: string;
  /** The host's network namespace, as `ip netns list` shows it. */
  readonly netns: string;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly port: number;
  /** The user the lab key logs in as. */
  readonly user: string;
  /** Path of the private key (OpenSSH format, no passphrase) authorized for `user` and `sudoUser`. */
  readonly privateKeyPath: string;
  /** The host's public key in authorized_keys format, for pinning. */
  readonly hostKey: string;
  readonly backend: Backend;
  /** A non-root user with passwordless sudo, who can also log in with `sudoPassword`. */
  readonly sudoUser: string;
  readonly sudoPassword: string;
  /** PID of the host's sshd; its namespaces are the host's namespaces. */
  readonly sshdPid: number;
}

export interface Inventory {
  readonly name: string;
  readonly slot: number;
  /** The root-namespace side of the lab bridge: the address lab hosts see this machine as. */
  readonly gatewayIpv4: string;
  readonly gatewayIpv6: string;
  readonly hosts: readonly InventoryHost[];
}

/** Reads a lab's inventory file. Raises a plain Error naming the fix when no lab is up. */
export function readInventory(path: string = inventoryPath()): Inventory {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(
      `lab inventory ${path} not found: start lab hosts with "npm run lab -- up 3" (as root)`,
      { cause: error },
    );
  }
  return JSON.parse(text) as Inventory;
}
