/**
 * Matches with a few options each: comment, connlimit, recent, iprange, mark, addrtype and mac
 * (extensions/libxt_*.c of iptables 1.8.9 and the kernel's xt_*.c checks).
 */
import { IptablesError } from "../../errors";
import {
  addressBits,
  formatAddress,
  maskPrefixLength,
  parseAddress,
  prefixMask,
  type Address,
} from "../addresses";
import {
  invalidRule,
  invalidValue,
  optionTable,
  parseUnsigned,
  repeated,
  type MatchInstance,
  type OptionSpec,
  type SavedValueTest,
  type RuleEnv,
} from "../model";
import { quoteArg, savedArgLength } from "../tokenize";

/** iptables cuts a comment to 255 characters (XT_MAX_COMMENT_LEN is 256 with the NUL). */
export const COMMENT_MAX_LENGTH = 255;

function missing(match: string, what: string): IptablesError {
  return new IptablesError("RULE_SYNTAX", `the ${match} match needs ${what}`, {
    details: { option: `-m ${match}` },
  });
}

const COMMENT_OPTIONS = optionTable([[["comment"], 1, false]]);

/** The comment match. */
export class CommentMatch implements MatchInstance {
  readonly name = "comment";
  readonly options = COMMENT_OPTIONS;
  private text: string | undefined;

  option(spec: OptionSpec, args: readonly string[]): void {
    if (this.text !== undefined) throw repeated(spec.name);
    this.text = args[0].slice(0, COMMENT_MAX_LENGTH);
  }

  finish(): void {
    if (this.text === undefined) throw missing("comment", "--comment");
  }

  save(): string {
    return ` --comment ${quoteArg(this.text ?? "")}`;
  }

  savedValueTest(option: string): SavedValueTest | undefined {
    return option === "comment" ? isSavedComment : undefined;
  }

  /** The comment text, after cutting to 255 characters. */
  get comment(): string {
    return this.text ?? "";
  }
}

function isSavedComment(text: string, start: number, end: number): boolean {
  const length = savedArgLength(text, start, end);
  return length >= 0 && length <= COMMENT_MAX_LENGTH;
}

const CONNLIMIT_OPTIONS = optionTable([
  [["connlimit-upto"], 1, true],
  [["connlimit-above"], 1, true],
  [["connlimit-mask"], 1, false],
  [["connlimit-saddr"], 0, false],
  [["connlimit-daddr"], 0, false],
]);

/** The connlimit match. */
export class ConnlimitMatch implements MatchInstance {
  readonly name = "connlimit";
  readonly options = CONNLIMIT_OPTIONS;
  private limit: number | undefined;
  private above = false;
  private mask: number;
  private daddr = false;
  private readonly seen = new Set<string>();

  constructor(private readonly env: RuleEnv) {
    this.mask = addressBits(env.family);
  }

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    const key = spec.name === "connlimit-above" ? "connlimit-upto" : spec.name;
    if (this.seen.has(key)) throw repeated(spec.name);
    this.seen.add(key);
    switch (spec.name) {
      case "connlimit-upto":
      case "connlimit-above":
        this.limit = parseUnsigned(spec.name, args[0], 0, 0xffff_ffff);
        this.above = (spec.name === "connlimit-above") !== invert;
        break;
      case "connlimit-mask":
        this.mask = this.parseMask(spec.name, args[0]);
        break;
      case "connlimit-saddr":
        this.daddr = false;
        break;
      case "connlimit-daddr":
        this.daddr = true;
        break;
    }
  }

  /** Parses a prefix length up to 128 (IPv4 counts anything above 32 as 32) or a contiguous mask. */
  private parseMask(option: string, text: string): number {
    const bits = addressBits(this.env.family);
    if (/^\d+$/.test(text)) return Math.min(parseUnsigned(option, text, 0, 128), bits);
    const mask = parseAddress(text, this.env.family);
    const length = mask === undefined ? -1 : maskPrefixLength(mask);
    if (length < 0)
      throw invalidValue(
        option,
        text,
        `expected a prefix length from 0 to ${bits} or a contiguous mask`,
      );
    return length;
  }

  finish(): void {
    if (this.limit === undefined)
      throw missing("connlimit", "--connlimit-above or --connlimit-upto");
  }

  save(): string {
    return (
      ` --connlimit-${this.above ? "above" : "upto"} ${this.limit} --connlimit-mask ${this.mask}` +
      ` --connlimit-${this.daddr ? "daddr" : "saddr"}`
    );
  }
}

const RECENT_COMMANDS = ["set", "rcheck", "update", "remove"] as const;
/** xt_recent names are at most 199 characters (XT_RECENT_NAME_LEN is 200 with the NUL). */
const RECENT_NAME_MAX = 199;

const RECENT_OPTIONS = optionTable([
  [["set"], 0, true],
  [["rcheck"], 0, true],
  [["update"], 0, true],
  [["remove"], 0, true],
  [["seconds"], 1, false],
  [["reap"], 0, false],
  [["hitcount"], 1, false],
  [["rttl"], 0, false],
  [["name"], 1, false],
  [["mask"], 1, false],
  [["rsource"], 0, false],
  [["rdest"], 0, false],
]);

/** The recent match (revision 1, with --mask). */
export class RecentMatch implements MatchInstance {
  readonly name = "recent";
  readonly options = RECENT_OPTIONS;
  private command: (typeof RECENT_COMMANDS)[number] | undefined;
  private invert = false;
  private seconds = 0;
  private reap = false;
  private hitcount = 0;
  private rttl = false;
  private recentName = "DEFAULT";
  private mask: Address;
  private dest = false;
  private readonly seen = new Set<string>();

  constructor(private readonly env: RuleEnv) {
    this.mask = prefixMask(addressBits(env.family), env.family);
  }

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if ((RECENT_COMMANDS as readonly string[]).includes(spec.name)) {
      if (this.command !== undefined) {
        throw new IptablesError(
          "RULE_SYNTAX",
          `--${this.command} and --${spec.name} cannot be used together`,
          {
            details: { option: `--${spec.name}` },
          },
        );
      }
      this.command = spec.name as (typeof RECENT_COMMANDS)[number];
      this.invert = invert;
      return;
    }
    if (spec.name !== "rsource" && spec.name !== "rdest") {
      if (this.seen.has(spec.name)) throw repeated(spec.name);
      this.seen.add(spec.name);
    }
    switch (spec.name) {
      case "seconds":
        this.seconds = parseUnsigned(spec.name, args[0], 0, 0xffff_ffff);
        break;
      case "reap":
        this.reap = true;
        break;
      case "hitcount":
        this.hitcount = parseUnsigned(spec.name, args[0], 0, 0xffff_ffff);
        break;
      case "rttl":
        this.rttl = true;
        break;
      case "name": {
        const name = args[0];
        if (
          name === "" ||
          name.length > RECENT_NAME_MAX ||
          name === "." ||
          name === ".." ||
          name.includes("/")
        ) {
          throw invalidValue(
            spec.name,
            name,
            'the name becomes a file under /proc/net/xt_recent: use 1 to 199 characters without "/"',
          );
        }
        if (!/^[\x21-\x7e]+$/.test(name) || /["'\\]/.test(name)) {
          throw invalidValue(
            spec.name,
            name,
            "use printable characters without spaces, quotes or backslashes",
          );
        }
        this.recentName = name;
        break;
      }
      case "mask": {
        const mask = parseAddress(args[0], this.env.family);
        if (mask === undefined)
          throw invalidValue(
            spec.name,
            args[0],
            "expected a mask in address form, such as 255.255.255.0",
          );
        this.mask = mask;
        break;
      }
      case "rsource":
        this.dest = false;
        break;
      case "rdest":
        this.dest = true;
        break;
    }
  }

  finish(): void {
    if (this.command === undefined)
      throw missing("recent", "one of --set, --rcheck, --update or --remove");
    if (this.reap && !this.seen.has("seconds"))
      throw invalidRule("reap", "--reap requires --seconds");
    if (
      (this.seconds !== 0 || this.hitcount !== 0 || this.rttl) &&
      (this.command === "set" || this.command === "remove")
    ) {
      let option = "rttl";
      if (this.seconds !== 0) option = "seconds";
      else if (this.hitcount !== 0) option = "hitcount";
      throw invalidRule(
        option,
        "the kernel accepts --seconds, --hitcount and --rttl only with --rcheck or --update",
      );
    }
  }

  save(): string {
    let out = `${this.invert ? " !" : ""} --${this.command}`;
    if (this.seconds !== 0) out += ` --seconds ${this.seconds}`;
    if (this.reap) out += " --reap";
    if (this.hitcount !== 0) out += ` --hitcount ${this.hitcount}`;
    if (this.rttl) out += " --rttl";
    out += ` --name ${this.recentName} --mask ${formatAddress(this.mask)}`;
    out += this.dest ? " --rdest" : " --rsource";
    return out;
  }
}

const IPRANGE_OPTIONS = optionTable([
  [["src-range"], 1, true],
  [["dst-range"], 1, true],
]);

/** The iprange match (revision 1). */
export class IprangeMatch implements MatchInstance {
  readonly name = "iprange";
  readonly options = IPRANGE_OPTIONS;
  private readonly ranges = new Map<string, string>();

  constructor(private readonly env: RuleEnv) {}

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.ranges.has(spec.name)) throw repeated(spec.name);
    const parts = args[0].split("-");
    const from = parts.length <= 2 ? parseAddress(parts[0], this.env.family) : undefined;
    const to = parts.length === 2 ? parseAddress(parts[1], this.env.family) : from;
    if (from === undefined || to === undefined) {
      throw invalidValue(spec.name, args[0], 'expected "FROM-TO" addresses, or one address');
    }
    this.ranges.set(
      spec.name,
      `${invert ? " !" : ""} --${spec.name} ${formatAddress(from)}-${formatAddress(to)}`,
    );
  }

  finish(): void {
    if (this.ranges.size === 0) throw missing("iprange", "--src-range or --dst-range");
  }

  save(): string {
    return (this.ranges.get("src-range") ?? "") + (this.ranges.get("dst-range") ?? "");
  }
}

const MARK_OPTIONS = optionTable([[["mark"], 1, true]]);

/** The mark match (revision 1). */
export class MarkMatch implements MatchInstance {
  readonly name = "mark";
  readonly options = MARK_OPTIONS;
  private text: string | undefined;

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.text !== undefined) throw repeated(spec.name);
    const [valueText, maskText, extra] = args[0].split("/");
    if (extra !== undefined)
      throw invalidValue(spec.name, args[0], 'expected "VALUE" or "VALUE/MASK"');
    const value = parseUnsigned(spec.name, valueText, 0, 0xffff_ffff);
    const mask =
      maskText === undefined ? 0xffff_ffff : parseUnsigned(spec.name, maskText, 0, 0xffff_ffff);
    const printed =
      mask === 0xffff_ffff
        ? `0x${value.toString(16)}`
        : `0x${value.toString(16)}/0x${mask.toString(16)}`;
    this.text = `${invert ? " !" : ""} --mark ${printed}`;
  }

  finish(): void {
    if (this.text === undefined) throw missing("mark", "--mark");
  }

  save(): string {
    return this.text ?? "";
  }

  savedValueTest(option: string): SavedValueTest | undefined {
    return option === "mark" ? isSavedMark : undefined;
  }
}

/**
 * Tells whether a mark prints back as written: "0x" and lower-case hex without leading zeros,
 * then "/" and the mask written the same way unless the mask is 0xffffffff, which prints as none.
 */
function isSavedMark(text: string, start: number, end: number): boolean {
  const slash = text.indexOf("/", start);
  if (slash < 0 || slash >= end) return savedHex(text, start, end) >= 0;
  const mask = savedHex(text, slash + 1, end);
  return savedHex(text, start, slash) >= 0 && mask >= 0 && mask !== 0xffff_ffff;
}

/** Returns a 32-bit number written as "0x" and lower-case hex without leading zeros, else -1. */
function savedHex(text: string, start: number, end: number): number {
  const digits = end - start - 2;
  if (digits < 1 || digits > 8 || !text.startsWith("0x", start)) return -1;
  if (digits > 1 && text.charCodeAt(start + 2) === 48 /* "0" */) return -1;
  let value = 0;
  for (let i = start + 2; i < end; i++) {
    const code = text.charCodeAt(i);
    let digit: number;
    if (code >= 48 && code <= 57) digit = code - 48;
    else if (code >= 97 && code <= 102) digit = code - 87;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

const ADDRESS_TYPES = [
  "UNSPEC",
  "UNICAST",
  "LOCAL",
  "BROADCAST",
  "ANYCAST",
  "MULTICAST",
  "BLACKHOLE",
  "UNREACHABLE",
  "PROHIBIT",
  "THROW",
  "NAT",
  "XRESOLVE",
] as const;
/** Types the kernel's xt_addrtype refuses for IPv6. */
const IPV6_UNSUPPORTED_TYPES = new Set([
  "BROADCAST",
  "BLACKHOLE",
  "PROHIBIT",
  "THROW",
  "NAT",
  "XRESOLVE",
]);

const ADDRTYPE_OPTIONS = optionTable([
  [["src-type"], 1, true],
  [["dst-type"], 1, true],
  [["limit-iface-in"], 0, false],
  [["limit-iface-out"], 0, false],
]);

/** The addrtype match (revision 1). */
export class AddrtypeMatch implements MatchInstance {
  readonly name = "addrtype";
  readonly options = ADDRTYPE_OPTIONS;
  private readonly types = new Map<string, { mask: number; invert: boolean }>();
  private limitIface: "in" | "out" | undefined;

  constructor(private readonly env: RuleEnv) {}

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (spec.name === "limit-iface-in" || spec.name === "limit-iface-out") {
      if (this.limitIface !== undefined) {
        throw new IptablesError(
          "RULE_SYNTAX",
          "--limit-iface-in and --limit-iface-out cannot be used together",
          {
            details: { option: `--${spec.name}` },
          },
        );
      }
      this.limitIface = spec.name === "limit-iface-in" ? "in" : "out";
      return;
    }
    if (this.types.has(spec.name)) throw repeated(spec.name);
    let mask = 0;
    for (const item of args[0].split(",")) {
      const index = ADDRESS_TYPES.findIndex((name) => name === item.toUpperCase());
      if (index < 0)
        throw invalidValue(
          spec.name,
          args[0],
          `expected a comma-separated list of ${ADDRESS_TYPES.join(", ")}`,
        );
      if (this.env.family === "ipv6" && IPV6_UNSUPPORTED_TYPES.has(ADDRESS_TYPES[index])) {
        throw invalidRule(
          spec.name,
          `the kernel does not match address type ${ADDRESS_TYPES[index]} for IPv6`,
        );
      }
      mask |= 1 << index;
    }
    this.types.set(spec.name, { mask, invert });
  }

  finish(): void {
    if (this.types.size === 0) throw missing("addrtype", "--src-type or --dst-type");
    const chain = this.env.chain;
    if (this.limitIface === "in" && (chain === "OUTPUT" || chain === "POSTROUTING")) {
      throw invalidRule(
        "limit-iface-in",
        `the kernel rejects it in the ${chain} chain, which has no input interface`,
      );
    }
    if (this.limitIface === "out" && (chain === "PREROUTING" || chain === "INPUT")) {
      throw invalidRule(
        "limit-iface-out",
        `the kernel rejects it in the ${chain} chain, which has no output interface`,
      );
    }
  }

  save(): string {
    let out = "";
    for (const option of ["src-type", "dst-type"]) {
      const value = this.types.get(option);
      if (value === undefined) continue;
      const names = ADDRESS_TYPES.filter((_, index) => (value.mask & (1 << index)) !== 0).join(",");
      out += `${value.invert ? " !" : ""} --${option} ${names}`;
    }
    if (this.limitIface !== undefined) out += ` --limit-iface-${this.limitIface}`;
    return out;
  }
}

/** Built-in chains whose hooks see a source MAC address (xt_mac's hook mask). */
const MAC_CHAINS = new Set(["PREROUTING", "INPUT", "FORWARD"]);
const BUILTIN_CHAIN_NAMES = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

const MAC_OPTIONS = optionTable([[["mac-source"], 1, true]]);

/** The mac match. */
export class MacMatch implements MatchInstance {
  readonly name = "mac";
  readonly options = MAC_OPTIONS;
  private text: string | undefined;

  constructor(private readonly env: RuleEnv) {}

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.text !== undefined) throw repeated(spec.name);
    const parts = args[0].split(":");
    if (parts.length !== 6 || parts.some((part) => !/^[0-9a-fA-F]{1,2}$/.test(part))) {
      throw invalidValue(
        spec.name,
        args[0],
        "expected six hexadecimal bytes such as 02:00:00:aa:bb:cc",
      );
    }
    const mac = parts.map((part) => part.toLowerCase().padStart(2, "0")).join(":");
    this.text = `${invert ? " !" : ""} --mac-source ${mac}`;
  }

  finish(): void {
    if (this.text === undefined) throw missing("mac", "--mac-source");
    if (BUILTIN_CHAIN_NAMES.has(this.env.chain) && !MAC_CHAINS.has(this.env.chain)) {
      throw invalidRule(
        "mac-source",
        `the kernel accepts the mac match only in PREROUTING, INPUT and FORWARD, not ${this.env.chain}`,
      );
    }
  }

  save(): string {
    return this.text ?? "";
  }
}
