/**
 * IPv4 and IPv6 addresses and masks as iptables 1.8.9 parses and prints them.
 *
 * Addresses are byte arrays (4 or 16 bytes). Parsing follows libxtables: IPv4 parts are C
 * `strtoul` numbers in base 0 (so "010" is octal 8 and "0x0a" is 10), and a short address such
 * as "10.1" fills the missing parts with zeros. Host names are rejected: iptables would resolve
 * them with DNS on the host, which a pure function cannot reproduce.
 */
import type { Family } from "./types";

export type Address = Uint8Array;

/** Parses a C `strtoul(text, &end, 0)` number that must use the whole text; undefined if not. */
export function parseCNumber(text: string): number | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(text)) return Number.parseInt(text.slice(2), 16);
  if (/^0[0-7]*$/.test(text)) return text.length === 1 ? 0 : Number.parseInt(text.slice(1), 8);
  if (/^[1-9][0-9]*$/.test(text)) return Number(text);
  return undefined;
}

/** Parses the common form "a.b.c.d" of plain decimal parts without leading zeros. */
function parseDottedDecimal(text: string): Address | undefined {
  const bytes = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 46 /* "." */) {
      if (digits === 0 || part === 3) return undefined;
      bytes[part++] = value;
      value = 0;
      digits = 0;
    } else if (code >= 48 && code <= 57) {
      // A leading zero makes the part octal, which the general parser handles.
      if (digits === 1 && value === 0) return undefined;
      value = value * 10 + (code - 48);
      digits++;
      if (value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (digits === 0 || part !== 3) return undefined;
  bytes[3] = value;
  return bytes;
}

/** Parses a dotted IPv4 address the way libxtables does, or returns undefined. */
export function parseIpv4(text: string): Address | undefined {
  const fast = parseDottedDecimal(text);
  if (fast !== undefined) return fast;
  const parts = text.split(".");
  if (parts.length < 1 || parts.length > 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < parts.length; i++) {
    const value = parseCNumber(parts[i]);
    if (value === undefined || value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

/** Parses an IPv6 address in any form `inet_pton` accepts, or returns undefined. */
export function parseIpv6(text: string): Address | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;

  let head = text;
  const tailWords: number[] = [];
  // An embedded IPv4 address fills the last two words.
  const lastColon = text.lastIndexOf(":");
  if (text.indexOf(".") >= 0) {
    const v4 = text.slice(lastColon + 1);
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)) return undefined;
    const octets = v4.split(".").map(Number);
    if (octets.some((octet) => octet > 255)) return undefined;
    tailWords.push((octets[0] << 8) | octets[1], (octets[2] << 8) | octets[3]);
    head = text.slice(0, lastColon + 1);
    if (head.endsWith(":") && !head.endsWith("::")) head = head.slice(0, -1);
  }

  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const parseWords = (part: string): number[] | undefined => {
    if (part === "") return [];
    const words: number[] = [];
    for (const group of part.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
      words.push(Number.parseInt(group, 16));
    }
    return words;
  };
  const left = parseWords(halves[0]);
  const right = halves.length === 2 ? parseWords(halves[1]) : [];
  if (left === undefined || right === undefined) return undefined;

  const explicit = left.length + right.length + tailWords.length;
  let words: number[];
  if (halves.length === 2) {
    if (explicit > 7) return undefined;
    words = [...left, ...new Array<number>(8 - explicit).fill(0), ...right, ...tailWords];
  } else {
    if (explicit !== 8) return undefined;
    words = [...left, ...tailWords];
  }

  const bytes = new Uint8Array(16);
  words.forEach((word, index) => {
    bytes[index * 2] = word >> 8;
    bytes[index * 2 + 1] = word & 0xff;
  });
  return bytes;
}

/** Parses an address of the family, or returns undefined. */
export function parseAddress(text: string, family: Family): Address | undefined {
  return family === "ipv4" ? parseIpv4(text) : parseIpv6(text);
}

/** Returns the address length in bits for the family. */
export function addressBits(family: Family): number {
  return family === "ipv4" ? 32 : 128;
}

/** Builds the mask of a prefix length. */
export function prefixMask(length: number, family: Family): Address {
  const bytes = new Uint8Array(addressBits(family) / 8);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, length - i * 8));
    bytes[i] = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return bytes;
}

/** Returns the prefix length of a contiguous mask, or -1 when the mask has holes. */
export function maskPrefixLength(mask: Address): number {
  let length = 0;
  let ended = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const set = (byte >> bit) & 1;
      if (set && ended) return -1;
      if (set) length++;
      else ended = true;
    }
  }
  return length;
}

/** Returns `address & mask`. */
export function applyMask(address: Address, mask: Address): Address {
  return address.map((byte, index) => byte & mask[index]);
}

/** Tells whether every bit of the address is zero. */
export function isZero(address: Address): boolean {
  return address.every((byte) => byte === 0);
}

/** Tells whether two addresses are equal. */
export function sameAddress(a: Address, b: Address): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

/** Prints an address as `inet_ntop` (glibc) does: dotted quad, or RFC 5952 style IPv6. */
export function formatAddress(address: Address): string {
  if (address.length === 4) return `${address[0]}.${address[1]}.${address[2]}.${address[3]}`;

  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((address[i] << 8) | address[i + 1]);

  // The longest run of two or more zero words is written "::" (the first one on a tie).
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestLength < 2) bestStart = -1;

  // glibc prints IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) addresses with a
  // dotted tail.
  const dottedTail =
    bestStart === 0 && (bestLength === 6 || (bestLength === 5 && words[5] === 0xffff));

  let out = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += "::";
      i += bestLength - 1;
      continue;
    }
    if (dottedTail && i === 6) {
      if (!out.endsWith(":")) out += ":";
      out += `${address[12]}.${address[13]}.${address[14]}.${address[15]}`;
      break;
    }
    if (out !== "" && !out.endsWith(":")) out += ":";
    out += words[i].toString(16);
  }
  return out;
}

/** Prints an address with its mask as iptables-save prints `-s`/`-d`: `addr/len` or `addr/mask`. */
export function formatNetwork(address: Address, mask: Address): string {
  const length = maskPrefixLength(mask);
  const suffix = length >= 0 ? String(length) : formatAddress(mask);
  return `${formatAddress(address)}/${suffix}`;
}
