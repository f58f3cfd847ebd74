/**
 * Protocol names and numbers as iptables 1.8.9 resolves and prints them (`xtables_parse_protocol`
 * and `proto_to_name` in libxtables): a number, "all", a name or alias from /etc/protocols, or
 * one of iptables' built-in names; printed with the /etc/protocols name when there is one.
 */
import { invalidValue, parseUnsigned } from "./model";
import { PROTOCOL_ENTRIES } from "./netdb";

/** Names iptables resolves without /etc/protocols (`xtables_chain_protos`). */
const BUILTIN_PROTOCOLS: Readonly<Record<string, number>> = {
  tcp: 6,
  sctp: 132,
  udp: 17,
  udplite: 136,
  icmp: 1,
  icmpv6: 58,
  "ipv6-icmp": 58,
  esp: 50,
  ah: 51,
  "ipv6-mh": 135,
  mh: 135,
  all: 0,
};

const BY_NAME = new Map<string, number>();
const BY_NUMBER = new Map<number, string>();
for (const [name, number, aliases] of PROTOCOL_ENTRIES) {
  for (const alias of [name, ...aliases]) if (!BY_NAME.has(alias)) BY_NAME.set(alias, number);
  if (!BY_NUMBER.has(number)) BY_NUMBER.set(number, name);
}

/** Parses a protocol given to `-p` or `--ctproto` into its number (0 for "all"). */
export function parseProtocol(option: string, text: string): number {
  if (/^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$/.test(text))
    return parseUnsigned(option, text, 0, 255);
  if (text === "all") return 0;
  const fromFile = BY_NAME.get(text);
  if (fromFile !== undefined) return fromFile;
  if (Object.prototype.hasOwnProperty.call(BUILTIN_PROTOCOLS, text)) return BUILTIN_PROTOCOLS[text];
  throw invalidValue(
    option,
    text,
    'expected a protocol name such as "tcp", "udp", "icmp" or a number from 0 to 255',
  );
}

/** Prints a protocol number as iptables-save prints `-p`: the /etc/protocols name, else the number. */
export function formatProtocol(number: number): string {
  const fromFile = BY_NUMBER.get(number);
  if (fromFile !== undefined) return fromFile;
  const builtin = Object.entries(BUILTIN_PROTOCOLS).find(([, value]) => value === number);
  return builtin === undefined ? String(number) : builtin[0];
}
