/**
 * Addresses and names of lab hosts, and the guard routes that keep lab traffic on this machine.
 *
 * Every lab takes one slot (1 to 250). Slot S owns the bridge `pilbrS` with 198.18.S.1/24 and
 * fd6c:6162:0:S::1/64 (S in hex); its host I is the network namespace `pil-S-hI` with
 * 198.18.S.(10+I) and fd6c:6162:0:S::(10+I).
 */
import { runLocal } from "./exec";

/** The IPv4 benchmarking range (RFC 2544) all lab addresses come from. */
export const LAB_IPV4_RANGE = "198.18.0.0/15";
/** The ULA prefix all lab IPv6 addresses come from. */
export const LAB_IPV6_RANGE = "fd6c:6162::/48";

export const MIN_SLOT = 1;
export const MAX_SLOT = 250;
export const MAX_HOSTS_PER_LAB = 240;

export function bridgeName(slot: number): string {
  return `pilbr${slot}`;
}

export function netnsName(slot: number, index: number): string {
  return `pil-${slot}-h${index}`;
}

/** The root-namespace end of host `index`'s veth pair (at most 15 characters, as Linux requires). */
export function vethName(slot: number, index: number): string {
  return `pil${slot}h${index}`;
}

export function gatewayIpv4(slot: number): string {
  return `198.18.${slot}.1`;
}

export function gatewayIpv6(slot: number): string {
  return `fd6c:6162:0:${slot.toString(16)}::1`;
}

export function hostIpv4(slot: number, index: number): string {
  return `198.18.${slot}.${10 + index}`;
}

export function hostIpv6(slot: number, index: number): string {
  return `fd6c:6162:0:${slot.toString(16)}::${(10 + index).toString(16)}`;
}

/**
 * Installs `unreachable` routes for the whole IPv4 and IPv6 lab ranges in the root namespace.
 *
 * The routes are less specific than each lab's bridge route, so they only catch packets for lab
 * addresses that are not up: those fail at once here instead of leaving by the default route.
 * They are left in place by teardown, because a later connection attempt to a lab address must
 * never leave the machine either. `ip route replace` makes this idempotent.
 */
export async function installGuardRoutes(): Promise<void> {
  await runLocal(["ip", "-4", "route", "replace", "unreachable", LAB_IPV4_RANGE]);
  await runLocal(["ip", "-6", "route", "replace", "unreachable", LAB_IPV6_RANGE]);
}

/** Tells whether both guard routes are present in the root namespace. */
export async function guardRoutesPresent(): Promise<boolean> {
  const v4 = await runLocal(["ip", "-4", "route", "show", "type", "unreachable", LAB_IPV4_RANGE]);
  const v6 = await runLocal(["ip", "-6", "route", "show", "type", "unreachable", LAB_IPV6_RANGE]);
  return v4.stdout.includes(LAB_IPV4_RANGE) && v6.stdout.includes(LAB_IPV6_RANGE);
}
