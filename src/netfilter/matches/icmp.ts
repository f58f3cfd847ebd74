/**
 * The `icmp` (IPv4) and `icmp6` (IPv6) matches. Type names are those of iptables 1.8.9
 * (extensions/libipt_icmp.c, libip6t_icmp6.c), matched as case-insensitive prefixes; a prefix
 * that fits two names is rejected as iptables rejects it. iptables-save prints numbers.
 */
import { IptablesError } from "../../errors";
import {
  invalidValue,
  optionTable,
  parseUnsigned,
  repeated,
  type MatchInstance,
  type OptionSpec,
  type RuleHeader,
} from "../model";
import type { Family } from "../types";

type IcmpName = readonly [name: string, type: number, codeMin: number, codeMax: number];

const ICMP_NAMES: readonly IcmpName[] = [
  ["any", 0xff, 0, 0xff],
  ["echo-reply", 0, 0, 0xff],
  ["pong", 0, 0, 0xff],
  ["destination-unreachable", 3, 0, 0xff],
  ["network-unreachable", 3, 0, 0],
  ["host-unreachable", 3, 1, 1],
  ["protocol-unreachable", 3, 2, 2],
  ["port-unreachable", 3, 3, 3],
  ["fragmentation-needed", 3, 4, 4],
  ["source-route-failed", 3, 5, 5],
  ["network-unknown", 3, 6, 6],
  ["host-unknown", 3, 7, 7],
  ["network-prohibited", 3, 9, 9],
  ["host-prohibited", 3, 10, 10],
  ["TOS-network-unreachable", 3, 11, 11],
  ["TOS-host-unreachable", 3, 12, 12],
  ["communication-prohibited", 3, 13, 13],
  ["host-precedence-violation", 3, 14, 14],
  ["precedence-cutoff", 3, 15, 15],
  ["source-quench", 4, 0, 0xff],
  ["redirect", 5, 0, 0xff],
  ["network-redirect", 5, 0, 0],
  ["host-redirect", 5, 1, 1],
  ["TOS-network-redirect", 5, 2, 2],
  ["TOS-host-redirect", 5, 3, 3],
  ["echo-request", 8, 0, 0xff],
  ["ping", 8, 0, 0xff],
  ["router-advertisement", 9, 0, 0xff],
  ["router-solicitation", 10, 0, 0xff],
  ["time-exceeded", 11, 0, 0xff],
  ["ttl-exceeded", 11, 0, 0xff],
  ["ttl-zero-during-transit", 11, 0, 0],
  ["ttl-zero-during-reassembly", 11, 1, 1],
  ["parameter-problem", 12, 0, 0xff],
  ["ip-header-bad", 12, 0, 0],
  ["required-option-missing", 12, 1, 1],
  ["timestamp-request", 13, 0, 0xff],
  ["timestamp-reply", 14, 0, 0xff],
  ["address-mask-request", 17, 0, 0xff],
  ["address-mask-reply", 18, 0, 0xff],
];

const ICMP6_NAMES: readonly IcmpName[] = [
  ["destination-unreachable", 1, 0, 0xff],
  ["no-route", 1, 0, 0],
  ["communication-prohibited", 1, 1, 1],
  ["beyond-scope", 1, 2, 2],
  ["address-unreachable", 1, 3, 3],
  ["port-unreachable", 1, 4, 4],
  ["failed-policy", 1, 5, 5],
  ["reject-route", 1, 6, 6],
  ["packet-too-big", 2, 0, 0xff],
  ["time-exceeded", 3, 0, 0xff],
  ["ttl-exceeded", 3, 0, 0xff],
  ["ttl-zero-during-transit", 3, 0, 0],
  ["ttl-zero-during-reassembly", 3, 1, 1],
  ["parameter-problem", 4, 0, 0xff],
  ["bad-header", 4, 0, 0],
  ["unknown-header-type", 4, 1, 1],
  ["unknown-option", 4, 2, 2],
  ["echo-request", 128, 0, 0xff],
  ["ping", 128, 0, 0xff],
  ["echo-reply", 129, 0, 0xff],
  ["pong", 129, 0, 0xff],
  ["mld-listener-query", 130, 0, 0xff],
  ["mld-listener-report", 131, 0, 0xff],
  ["mld-listener-done", 132, 0, 0xff],
  ["mld-listener-reduction", 132, 0, 0xff],
  ["router-solicitation", 133, 0, 0xff],
  ["router-advertisement", 134, 0, 0xff],
  ["neighbour-solicitation", 135, 0, 0xff],
  ["neighbor-solicitation", 135, 0, 0xff],
  ["neighbour-advertisement", 136, 0, 0xff],
  ["neighbor-advertisement", 136, 0, 0xff],
  ["redirect", 137, 0, 0xff],
];

/** Returns the names --icmp-type or --icmpv6-type accepts for a family. */
export function icmpTypeNames(family: Family): readonly string[] {
  return (family === "ipv4" ? ICMP_NAMES : ICMP6_NAMES).map(([name]) => name);
}

const ICMP_OPTIONS = optionTable([[["icmp-type"], 1, true]]);
const ICMP6_OPTIONS = optionTable([[["icmpv6-type"], 1, true]]);

/** The icmp or icmp6 match. */
export class IcmpMatch implements MatchInstance {
  readonly name: "icmp" | "icmp6";
  readonly options: ReadonlyMap<string, OptionSpec>;
  private type = -1;
  private codeMin = 0;
  private codeMax = 0xff;
  private invert = false;

  constructor(private readonly family: Family) {
    this.name = family === "ipv4" ? "icmp" : "icmp6";
    this.options = family === "ipv4" ? ICMP_OPTIONS : ICMP6_OPTIONS;
  }

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    if (this.type >= 0) throw repeated(spec.name);
    [this.type, this.codeMin, this.codeMax] = this.parseType(spec.name, args[0]);
    this.invert = invert;
  }

  private parseType(option: string, text: string): [number, number, number] {
    const table = this.family === "ipv4" ? ICMP_NAMES : ICMP6_NAMES;
    const lower = text.toLowerCase();
    const found = table.filter(([name]) => name.toLowerCase().startsWith(lower));
    if (found.length > 1 && text !== "") {
      throw invalidValue(
        option,
        text,
        `ambiguous: it starts ${found.map(([name]) => name).join(" and ")}`,
      );
    }
    if (found.length === 1 && text !== "") return [found[0][1], found[0][2], found[0][3]];

    const [typeText, codeText, extra] = text.split("/");
    if (extra !== undefined || !/^\w+$/.test(typeText ?? "")) {
      throw invalidValue(
        option,
        text,
        'expected a type name such as "echo-request", or "TYPE" or "TYPE/CODE" numbers',
      );
    }
    const type = parseUnsigned(option, typeText, 0, 255);
    if (codeText === undefined) return [type, 0, 0xff];
    const code = parseUnsigned(option, codeText, 0, 255);
    return [type, code, code];
  }

  finish(header: RuleHeader): void {
    const protocol = this.family === "ipv4" ? 1 : 58;
    const flag = this.family === "ipv4" ? "icmp" : "icmpv6";
    if (
      header.protocol === undefined ||
      header.protocol.number !== protocol ||
      header.protocol.invert
    ) {
      throw new IptablesError(
        "RULE_MISSING_MATCH",
        `the ${this.name} match requires "-p ${flag}" (not negated)`,
        {
          details: { option: `-m ${this.name}` },
        },
      );
    }
    if (this.type < 0) {
      throw new IptablesError("RULE_SYNTAX", `the ${this.name} match needs --${flag}-type`, {
        details: { option: `-m ${this.name}` },
      });
    }
  }

  save(): string {
    const option = this.family === "ipv4" ? "icmp-type" : "icmpv6-type";
    let value: string;
    if (this.family === "ipv4" && this.type === 0xff) value = "any";
    else {
      value = String(this.type);
      if (this.codeMin !== 0 || this.codeMax !== 0xff) value += `/${this.codeMin}`;
    }
    return `${this.invert ? " !" : ""} --${option} ${value}`;
  }
}
