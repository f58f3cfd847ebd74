/**
 * The `conntrack` (revision 3) and `state` matches (extensions/libxt_conntrack.c, libxt_state.c).
 * Lists are sets: iptables-save prints states and statuses in a fixed order.
 */
import { IptablesError } from "../../errors";
import {
  formatAddress,
  maskPrefixLength,
  parseAddress,
  prefixMask,
  addressBits,
  type Address,
} from "../addresses";
import {
  invalidValue,
  optionTable,
  parseUnsigned,
  repeated,
  type MatchInstance,
  type OptionSpec,
  type RuleEnv,
} from "../model";
import { parseProtocol } from "../protocols";
import { parseServicePort } from "./ports";

const STATES: ReadonlyArray<readonly [string, number]> = [
  ["INVALID", 1 << 0],
  ["NEW", 1 << 3],
  ["RELATED", 1 << 2],
  ["ESTABLISHED", 1 << 1],
  ["UNTRACKED", 1 << 9],
  ["SNAT", 1 << 10],
  ["DNAT", 1 << 11],
];
const STATUSES: ReadonlyArray<readonly [string, number]> = [
  ["EXPECTED", 1 << 0],
  ["SEEN_REPLY", 1 << 1],
  ["ASSURED", 1 << 2],
  ["CONFIRMED", 1 << 3],
];

/** Parsed lists by option and text; state lists repeat across a rule set. */
const LIST_CACHE = new Map<string, number>();

function parseList(
  option: string,
  text: string,
  names: ReadonlyArray<readonly [string, number]>,
  extra: Record<string, number> = {},
): number {
  const key = `${option}\u0000${text}`;
  const cached = LIST_CACHE.get(key);
  if (cached !== undefined) return cached;
  const mask = parseListUncached(option, text, names, extra);
  if (LIST_CACHE.size < 10_000) LIST_CACHE.set(key, mask);
  return mask;
}

function parseListUncached(
  option: string,
  text: string,
  names: ReadonlyArray<readonly [string, number]>,
  extra: Record<string, number>,
): number {
  let mask = 0;
  for (const item of text.split(",")) {
    const upper = item.toUpperCase();
    const found = names.find(([name]) => name === upper);
    if (found !== undefined) mask |= found[1];
    else if (upper in extra) mask |= extra[upper];
    else {
      const allowed = [...names.map(([name]) => name), ...Object.keys(extra)].join(", ");
      throw invalidValue(option, text, `expected a comma-separated list of ${allowed}`);
    }
  }
  return mask;
}

function formatList(
  mask: number,
  names: ReadonlyArray<readonly [string, number]>,
  empty: string,
): string {
  const parts = names.filter(([, bit]) => (mask & bit) !== 0).map(([name]) => name);
  return parts.length === 0 ? empty : parts.join(",");
}

const STATE_OPTIONS = optionTable([[["state"], 1, true]]);

/** The state match: `--state` only. */
export class StateMatch implements MatchInstance {
  readonly name = "state";
  readonly options = STATE_OPTIONS;
  private mask = -1;
  private invert = false;

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.mask >= 0) throw repeated(spec.name);
    this.mask = parseList(spec.name, args[0], STATES.slice(0, 5));
    this.invert = invert;
  }

  finish(): void {
    if (this.mask < 0) {
      throw new IptablesError("RULE_SYNTAX", "the state match needs --state", {
        details: { option: "-m state" },
      });
    }
  }

  save(): string {
    return `${this.invert ? " !" : ""} --state ${formatList(this.mask, STATES, "")}`;
  }
}

const CONNTRACK_OPTIONS = optionTable([
  [["ctstate"], 1, true],
  [["ctproto"], 1, true],
  [["ctorigsrc"], 1, true],
  [["ctorigdst"], 1, true],
  [["ctreplsrc"], 1, true],
  [["ctrepldst"], 1, true],
  [["ctorigsrcport"], 1, true],
  [["ctorigdstport"], 1, true],
  [["ctreplsrcport"], 1, true],
  [["ctrepldstport"], 1, true],
  [["ctstatus"], 1, true],
  [["ctexpire"], 1, true],
  [["ctdir"], 1, false],
]);

/** Options in the order iptables-save prints them. */
const PRINT_ORDER = [
  "ctstate",
  "ctproto",
  "ctorigsrc",
  "ctorigdst",
  "ctreplsrc",
  "ctrepldst",
  "ctorigsrcport",
  "ctorigdstport",
  "ctreplsrcport",
  "ctrepldstport",
  "ctstatus",
  "ctexpire",
  "ctdir",
] as const;

/** The conntrack match. */
export class ConntrackMatch implements MatchInstance {
  readonly name = "conntrack";
  readonly options = CONNTRACK_OPTIONS;
  private readonly values = new Map<string, { text: string; invert: boolean }>();

  constructor(private readonly env: RuleEnv) {}

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.values.has(spec.name)) throw repeated(spec.name);
    this.values.set(spec.name, { text: this.format(spec.name, args[0]), invert });
  }

  private format(option: string, text: string): string {
    switch (option) {
      case "ctstate":
        return formatList(parseList(option, text, STATES), STATES, "");
      case "ctstatus":
        return formatList(parseList(option, text, STATUSES, { NONE: 0 }), STATUSES, "NONE");
      case "ctproto":
        return String(parseProtocol(option, text));
      case "ctorigsrc":
      case "ctorigdst":
      case "ctreplsrc":
      case "ctrepldst":
        return this.formatHost(option, text);
      case "ctorigsrcport":
      case "ctorigdstport":
      case "ctreplsrcport":
      case "ctrepldstport":
        return this.formatRange(option, text, 0xffff, (part) => parseServicePort(option, part));
      case "ctexpire":
        return this.formatRange(option, text, 0xffff_ffff, (part) =>
          parseUnsigned(option, part, 0, 0xffff_ffff),
        );
      case "ctdir": {
        const upper = text.toUpperCase();
        if (upper !== "ORIGINAL" && upper !== "REPLY")
          throw invalidValue(option, text, "expected ORIGINAL or REPLY");
        return upper;
      }
    }
    throw invalidValue(option, text, "unsupported option");
  }

  /** Addresses print as given (not masked); the mask prints as "/len" unless it is full. */
  private formatHost(option: string, text: string): string {
    const [addressText, maskText, extra] = text.split("/");
    const address = parseAddress(addressText, this.env.family);
    if (address === undefined || extra !== undefined) {
      throw invalidValue(
        option,
        text,
        `expected an ${this.env.family === "ipv4" ? "IPv4" : "IPv6"} address with an optional /mask`,
      );
    }
    const bits = addressBits(this.env.family);
    let mask: Address = prefixMask(bits, this.env.family);
    if (maskText !== undefined) mask = parseMask(option, maskText, this.env, text);
    const length = maskPrefixLength(mask);
    // NOTE: iptables 1.8.9 prints nothing after the address when the mask has holes, so such a
    // rule reads back as a host match although the kernel keeps the mask.
    const suffix = length === bits || length < 0 ? "" : `/${length}`;
    return `${formatAddress(address)}${suffix}`;
  }

  private formatRange(
    option: string,
    text: string,
    max: number,
    parse: (part: string) => number,
  ): string {
    const parts = text.split(":");
    if (parts.length > 2 || parts.some((part) => part === "")) {
      throw invalidValue(
        option,
        text,
        `expected a value or a range "from:to" of values up to ${max}`,
      );
    }
    const from = parse(parts[0]);
    const to = parts.length === 2 ? parse(parts[1]) : from;
    return from === to ? String(from) : `${from}:${to}`;
  }

  finish(): void {
    if (this.values.size === 0) {
      throw new IptablesError("RULE_SYNTAX", "the conntrack match needs at least one --ct option", {
        details: { option: "-m conntrack" },
      });
    }
  }

  save(): string {
    let out = "";
    for (const option of PRINT_ORDER) {
      const value = this.values.get(option);
      if (value === undefined) continue;
      out += `${value.invert ? " !" : ""} --${option} ${value.text}`;
    }
    return out;
  }
}

/** Parses a mask given as a prefix length or in address form. */
export function parseMask(option: string, text: string, env: RuleEnv, whole: string): Address {
  const bits = addressBits(env.family);
  if (/^\d+$/.test(text) || /^0[xX]/.test(text)) {
    const length = parseUnsigned(option, text, 0, bits);
    return prefixMask(length, env.family);
  }
  const mask = parseAddress(text, env.family);
  if (mask === undefined)
    throw invalidValue(
      option,
      whole,
      `expected a mask as a prefix length from 0 to ${bits} or as an address`,
    );
  return mask;
}
