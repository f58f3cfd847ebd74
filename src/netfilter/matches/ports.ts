/**
 * The `tcp`, `udp` and `multiport` matches (libxt_tcp.c, libxt_udp.c, libxt_multiport.c).
 *
 * With the nft backend, iptables 1.8.9 translates a tcp or udp match that only compares ports
 * into native nf_tables expressions and reads them back, which changes how some negated ranges
 * print: `! --dport 0:1023` reads back as `--dport 1024:65535`, and `! --dport 0:65535` leaves no
 * trace at all. These rules were measured against the kernel and are covered by the fixtures.
 */
import { IptablesError } from "../../errors";
import {
  invalidRule,
  invalidValue,
  optionTable,
  outOfRange,
  parseUnsigned,
  repeated,
  savedDecimal,
  type MatchInstance,
  type OptionSpec,
  type SavedValueTest,
  type RuleEnv,
  type RuleHeader,
} from "../model";
import { SERVICES } from "../netdb";

export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
const MAX_PORT = 0xffff;

/** Parses a port number (C base 0) or a service name of the protocol. */
export function parsePort(
  option: string,
  text: string,
  protocol: "tcp" | "udp" | undefined,
): number {
  if (/^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$/.test(text)) {
    return parseUnsigned(option, text, 0, MAX_PORT);
  }
  if (protocol !== undefined && /^[A-Za-z][\w.+-]*$/.test(text)) {
    const table = SERVICES[protocol];
    if (Object.prototype.hasOwnProperty.call(table, text)) return table[text];
  }
  throw invalidValue(
    option,
    text,
    `expected a port number from 0 to 65535${protocol ? ` or a ${protocol} service name` : ""}`,
  );
}

interface PortRange {
  from: number;
  to: number;
  invert: boolean;
}

/** Parses "port", "from:to", "from:" or ":to" as the tcp and udp matches do. */
/**
 * Parses a port as `xtables_getportbyname` does for the udp and conntrack matches: getaddrinfo
 * reads decimal numbers only ("022" is 22, "0x16" is not a number) and looks names up for any
 * protocol, so "http" is 80 under udp too.
 *
 * NOTE: getaddrinfo also accepts numbers above 65535 and keeps their low 16 bits (65536 is
 * port 0); this parser rejects them.
 */
export function parseServicePort(option: string, text: string): number {
  if (/^\d+$/.test(text)) {
    const value = Number(text);
    if (value > MAX_PORT) throw outOfRange(option, text, "use a port from 0 to 65535");
    return value;
  }
  for (const protocol of ["tcp", "udp"] as const) {
    const table = SERVICES[protocol];
    if (Object.prototype.hasOwnProperty.call(table, text)) return table[text];
  }
  throw invalidValue(
    option,
    text,
    "expected a decimal port number from 0 to 65535 or a service name",
  );
}

function parsePortRange(option: string, text: string, protocol: "tcp" | "udp"): [number, number] {
  // libxt_tcp.c reads ports with its own parser (C numbers in base 0, tcp service names).
  // libxt_udp.c uses the generic port-range option type, which goes through getaddrinfo.
  const parse = (part: string): number =>
    protocol === "tcp" ? parsePort(option, part, "tcp") : parseServicePort(option, part);
  const colon = text.indexOf(":");
  if (colon < 0) {
    const port = parse(text);
    return [port, port];
  }
  const first = text.slice(0, colon);
  const second = text.slice(colon + 1);
  const from = first === "" ? 0 : parse(first);
  const to = second === "" ? MAX_PORT : parse(second);
  if (from > to)
    throw invalidValue(option, text, "the first port of a range must not exceed the second");
  return [from, to];
}

/** Tells whether a value is one port as iptables-save prints it: decimal, no leading zero. */
function isSavedPort(text: string, start: number, end: number): boolean {
  return savedDecimal(text, start, end, MAX_PORT) >= 0;
}

/**
 * Tells whether a multiport list prints back as written (ports as above, ranges with the first
 * port below the second) and fits in the match.
 */
function isSavedPortList(text: string, start: number, end: number): boolean {
  let slots = 0;
  let itemStart = start;
  while (itemStart <= end) {
    let itemEnd = text.indexOf(",", itemStart);
    if (itemEnd < 0 || itemEnd > end) itemEnd = end;
    let colon = itemStart;
    while (colon < itemEnd && text.charCodeAt(colon) !== 58 /* ":" */) colon++;
    if (colon === itemEnd) {
      if (!isSavedPort(text, itemStart, itemEnd)) return false;
      slots += 1;
    } else {
      const from = savedDecimal(text, itemStart, colon, MAX_PORT);
      const to = savedDecimal(text, colon + 1, itemEnd, MAX_PORT);
      if (from < 0 || to <= from) return false;
      slots += 2;
    }
    if (slots > MULTIPORT_SLOTS) return false;
    itemStart = itemEnd + 1;
  }
  return true;
}

function formatRange(from: number, to: number): string {
  return from === to ? String(from) : `${from}:${to}`;
}

const TCP_FLAGS: ReadonlyArray<readonly [string, number]> = [
  ["FIN", 0x01],
  ["SYN", 0x02],
  ["RST", 0x04],
  ["PSH", 0x08],
  ["ACK", 0x10],
  ["URG", 0x20],
];

function parseTcpFlags(option: string, text: string): number {
  let flags = 0;
  for (const name of text.split(",")) {
    const upper = name.toUpperCase();
    if (upper === "ALL") flags |= 0x3f;
    else if (upper === "NONE") continue;
    else {
      const found = TCP_FLAGS.find(([flag]) => flag === upper);
      if (found === undefined) {
        throw invalidValue(
          option,
          text,
          "expected a comma-separated list of FIN, SYN, RST, PSH, ACK, URG, ALL or NONE",
        );
      }
      flags |= found[1];
    }
  }
  return flags;
}

function formatTcpFlags(flags: number): string {
  if (flags === 0) return "NONE";
  return TCP_FLAGS.filter(([, bit]) => (flags & bit) !== 0)
    .map(([name]) => name)
    .join(",");
}

const TCP_OPTIONS = optionTable([
  [["sport", "source-port"], 1, true],
  [["dport", "destination-port"], 1, true],
  [["syn"], 0, true],
  [["tcp-flags"], 2, true],
  [["tcp-option"], 1, true],
]);
const UDP_OPTIONS = optionTable([
  [["sport", "source-port"], 1, true],
  [["dport", "destination-port"], 1, true],
]);

/** The tcp or udp match. */
export class TcpUdpMatch implements MatchInstance {
  readonly name: "tcp" | "udp";
  readonly options: ReadonlyMap<string, OptionSpec>;
  private sport: PortRange = { from: 0, to: MAX_PORT, invert: false };
  private dport: PortRange = { from: 0, to: MAX_PORT, invert: false };
  private flagMask = 0;
  private flagCompare = 0;
  private flagsInvert = false;
  private flagsSet = false;
  private tcpOption = 0;
  private tcpOptionInvert = false;
  private readonly seen = new Set<string>();

  constructor(
    name: "tcp" | "udp",
    private readonly env: RuleEnv,
  ) {
    this.name = name;
    this.options = name === "tcp" ? TCP_OPTIONS : UDP_OPTIONS;
  }

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    const key = spec.name === "syn" ? "tcp-flags" : spec.name;
    if (this.seen.has(key)) {
      if (spec.name === "syn" || (spec.name === "tcp-flags" && this.flagsSet)) {
        throw new IptablesError(
          "RULE_SYNTAX",
          "only one of --syn or --tcp-flags is allowed per tcp match",
          {
            details: { option: `--${spec.name}` },
          },
        );
      }
      throw repeated(spec.name);
    }
    this.seen.add(key);

    switch (spec.name) {
      case "sport":
      case "dport": {
        const [from, to] = parsePortRange(spec.name, args[0], this.name);
        this[spec.name] = { from, to, invert };
        break;
      }
      case "syn":
        this.flagMask = 0x17;
        this.flagCompare = 0x02;
        this.flagsInvert = invert;
        this.flagsSet = true;
        break;
      case "tcp-flags":
        this.flagMask = parseTcpFlags(spec.name, args[0]);
        this.flagCompare = parseTcpFlags(spec.name, args[1]);
        this.flagsInvert = invert;
        this.flagsSet = true;
        break;
      case "tcp-option":
        this.tcpOption = parseUnsigned(spec.name, args[0], 0, 255);
        this.tcpOptionInvert = invert;
        break;
    }
  }

  finish(header: RuleHeader): void {
    const expected = this.name === "tcp" ? PROTO_TCP : PROTO_UDP;
    const protocol = header.protocol;
    if (protocol === undefined || protocol.number !== expected) {
      throw new IptablesError(
        "RULE_MISSING_MATCH",
        `the ${this.name} match requires "-p ${this.name}"; add it before the ${this.name} options`,
        { details: { option: `-m ${this.name}` } },
      );
    }
    // The kernel refuses a protocol match under "! -p"; iptables-nft only checks it for the
    // matches it cannot translate to native expressions.
    if (protocol.invert && !(this.env.backend === "nft" && this.isNative())) {
      throw invalidRule(
        "protocol",
        `the ${this.name} match cannot be used with "! -p ${this.name}"`,
      );
    }
  }

  /**
   * Folds the port options of the next adjacent match of the same protocol into this one, as
   * iptables-nft does when it reads native expressions back. Returns false when both matches set
   * the same port, which this model does not cover.
   */
  absorb(next: TcpUdpMatch): boolean {
    if (next.name !== this.name || !next.isNative()) return false;
    const isSet = (range: PortRange): boolean =>
      range.invert || range.from !== 0 || range.to !== MAX_PORT;
    if ((isSet(this.sport) && isSet(next.sport)) || (isSet(this.dport) && isSet(next.dport)))
      return false;
    if (isSet(next.sport)) this.sport = next.sport;
    if (isSet(next.dport)) this.dport = next.dport;
    return true;
  }

  /**
   * Tells whether iptables-nft 1.8.9 translates this match to native expressions: only port
   * tests are translated, and a match without any port test stays an xt match.
   */
  isNative(): boolean {
    const portTest = (range: PortRange): boolean =>
      range.invert || range.from !== 0 || range.to !== MAX_PORT;
    return (
      this.flagMask === 0 &&
      !this.flagsInvert &&
      this.tcpOption === 0 &&
      !this.tcpOptionInvert &&
      (portTest(this.sport) || portTest(this.dport))
    );
  }

  save(): string | undefined {
    let sport = this.sport;
    let dport = this.dport;
    let dropped = false;
    if (this.env.backend === "nft" && this.isNative()) {
      [sport, dport] = [sport, dport].map((range) => nftReadBack(range));
      dropped = [this.sport, this.dport].some(
        (range) => range.invert && range.from === 0 && range.to === MAX_PORT,
      );
    }

    let out = "";
    // iptables-save skips a full range even when it is negated (tcp_save in libxt_tcp.c).
    const isDefault = (range: PortRange): boolean => range.from === 0 && range.to === MAX_PORT;
    for (const [option, range] of [
      ["sport", sport],
      ["dport", dport],
    ] as const) {
      if (isDefault(range)) continue;
      out += `${range.invert ? " !" : ""} --${option} ${formatRange(range.from, range.to)}`;
    }
    if (this.tcpOption !== 0 || this.tcpOptionInvert) {
      out += `${this.tcpOptionInvert ? " !" : ""} --tcp-option ${this.tcpOption}`;
    }
    if (this.flagMask !== 0 || this.flagsInvert) {
      out +=
        `${this.flagsInvert ? " !" : ""} --tcp-flags ` +
        `${formatTcpFlags(this.flagMask)} ${formatTcpFlags(this.flagCompare)}`;
    }
    if (out === "" && dropped) return undefined;
    return out;
  }

  /**
   * Returns a test for single ports. A single port prints as written on both backends, because
   * iptables-nft reads a negated single port back unchanged, and it keeps the match a port
   * test, as the printed value it replaces was.
   */
  savedValueTest(option: string): SavedValueTest | undefined {
    return option === "sport" || option === "dport" ? isSavedPort : undefined;
  }
}

/**
 * Returns the range iptables-nft 1.8.9 prints after storing a port range as native expressions:
 * a negated range that starts at 0 comes back as the positive remainder, and a negated full range
 * comes back as no condition.
 */
function nftReadBack(range: PortRange): PortRange {
  if (!range.invert || range.from !== 0 || range.from === range.to) return range;
  if (range.to === MAX_PORT) return { from: 0, to: MAX_PORT, invert: false };
  return { from: range.to + 1, to: MAX_PORT, invert: false };
}

const MULTIPORT_OPTIONS = optionTable([
  [["sports", "source-ports"], 1, true],
  [["dports", "destination-ports"], 1, true],
  [["ports"], 1, true],
]);
const MULTIPORT_PROTOCOLS: Readonly<Record<number, "tcp" | "udp" | undefined>> = {
  6: "tcp",
  17: "udp",
  33: undefined,
  132: undefined,
  136: undefined,
};
/** A multiport match has room for 15 ports, and a range takes two of them (XT_MULTI_PORTS). */
const MULTIPORT_SLOTS = 15;

/** The multiport match (revision 1: ranges and negation). */
export class MultiportMatch implements MatchInstance {
  readonly name = "multiport";
  readonly options = MULTIPORT_OPTIONS;
  private option_: string | undefined;
  private text = "";
  private invert = false;

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.option_ !== undefined) {
      throw new IptablesError(
        "RULE_SYNTAX",
        "a multiport match takes one of --sports, --dports or --ports",
        {
          details: { option: `--${spec.name}` },
        },
      );
    }
    this.option_ = spec.name;
    this.text = args[0];
    this.invert = invert;
  }

  private ports: string[] = [];

  finish(header: RuleHeader): void {
    if (this.option_ === undefined) {
      throw new IptablesError(
        "RULE_SYNTAX",
        "the multiport match needs --sports, --dports or --ports",
        {
          details: { option: "-m multiport" },
        },
      );
    }
    const protocol = header.protocol;
    if (protocol === undefined || !(protocol.number in MULTIPORT_PROTOCOLS) || protocol.invert) {
      throw new IptablesError(
        "RULE_MISSING_MATCH",
        'the multiport match requires "-p tcp", "-p udp", "-p udplite", "-p sctp" or "-p dccp" (not negated)',
        { details: { option: "-m multiport" } },
      );
    }
    const service = MULTIPORT_PROTOCOLS[protocol.number];

    let slots = 0;
    for (const item of this.text.split(",")) {
      const colon = item.indexOf(":");
      if (colon < 0) {
        this.ports.push(String(parsePort(this.option_, item, service)));
        slots += 1;
        continue;
      }
      const from = parsePort(this.option_, item.slice(0, colon), service);
      const to = parsePort(this.option_, item.slice(colon + 1), service);
      if (from >= to) {
        throw invalidValue(
          this.option_,
          this.text,
          `the range ${item} must have its first port below its second`,
        );
      }
      this.ports.push(`${from}:${to}`);
      slots += 2;
    }
    if (slots > MULTIPORT_SLOTS) {
      throw outOfRange(
        this.option_,
        this.text,
        "a multiport match holds at most 15 ports, and a range counts as two",
      );
    }
  }

  save(): string {
    return `${this.invert ? " !" : ""} --${this.option_} ${this.ports.join(",")}`;
  }

  /** Numeric ports parse the same under every protocol, so only the list itself matters. */
  savedValueTest(option: string): SavedValueTest | undefined {
    return option === this.option_ ? isSavedPortList : undefined;
  }
}
