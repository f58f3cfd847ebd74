/**
 * Targets: the standard verdicts, jumps to user chains, REJECT per family and LOG
 * (extensions/libipt_REJECT.c, libip6t_REJECT.c, libxt_LOG.c of iptables 1.8.9).
 */
import { IptablesError } from "../errors";
import {
  invalidRule,
  invalidValue,
  optionTable,
  repeated,
  type OptionSpec,
  type SavedValueTest,
  type RuleEnv,
  type RuleHeader,
  type TargetInstance,
} from "./model";
import { quoteArg, savedArgLength } from "./tokenize";

const NO_OPTIONS = optionTable([]);

/** ACCEPT, DROP, RETURN or a jump to a user chain. */
export class VerdictTarget implements TargetInstance {
  readonly options = NO_OPTIONS;

  constructor(readonly name: string) {}

  option(spec: OptionSpec): void {
    throw invalidRule(spec.name, `-j ${this.name} takes no options`);
  }

  finish(): void {}

  save(): string {
    return "";
  }
}

const REJECT_IPV4: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["icmp-net-unreachable", ["net-unreach"]],
  ["icmp-host-unreachable", ["host-unreach"]],
  ["icmp-proto-unreachable", ["proto-unreach"]],
  ["icmp-port-unreachable", ["port-unreach"]],
  ["icmp-net-prohibited", ["net-prohib"]],
  ["icmp-host-prohibited", ["host-prohib"]],
  ["tcp-reset", ["tcp-rst"]],
  ["icmp-admin-prohibited", ["admin-prohib"]],
];
const REJECT_IPV6: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["icmp6-no-route", ["no-route"]],
  ["icmp6-adm-prohibited", ["adm-prohibited"]],
  ["icmp6-addr-unreachable", ["addr-unreach"]],
  ["icmp6-port-unreachable", ["port-unreach"]],
  ["tcp-reset", ["tcp-rst"]],
  ["icmp6-policy-fail", ["policy-fail"]],
  ["icmp6-reject-route", ["reject-route"]],
];
/** Built-in chains whose hooks REJECT may be used in (xt_REJECT's hook mask). */
const REJECT_CHAINS = new Set(["INPUT", "FORWARD", "OUTPUT"]);
const BUILTIN_CHAIN_NAMES = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

const REJECT_OPTIONS = optionTable([[["reject-with"], 1, false]]);

/** The REJECT target. */
export class RejectTarget implements TargetInstance {
  readonly name = "REJECT";
  readonly options = REJECT_OPTIONS;
  private type: string;

  constructor(private readonly env: RuleEnv) {
    this.type = env.family === "ipv4" ? "icmp-port-unreachable" : "icmp6-port-unreachable";
  }

  option(spec: OptionSpec, args: readonly string[]): void {
    const table = this.env.family === "ipv4" ? REJECT_IPV4 : REJECT_IPV6;
    const found = table.find(([name, aliases]) => name === args[0] || aliases.includes(args[0]));
    if (found === undefined) {
      const names = table.flatMap(([name, aliases]) => [name, ...aliases]).join(", ");
      throw invalidValue(spec.name, args[0], `expected one of ${names} for ${this.env.family}`);
    }
    this.type = found[0];
  }

  finish(header: RuleHeader): void {
    if (this.type === "tcp-reset" && (header.protocol?.number !== 6 || header.protocol.invert)) {
      throw invalidRule("reject-with", 'tcp-reset needs "-p tcp" (not negated)');
    }
    if (BUILTIN_CHAIN_NAMES.has(this.env.chain) && !REJECT_CHAINS.has(this.env.chain)) {
      throw new IptablesError(
        "RULE_INVALID_VALUE",
        `-j REJECT is valid only in the INPUT, FORWARD and OUTPUT chains, not ${this.env.chain}`,
        { details: { option: "-j REJECT" } },
      );
    }
  }

  save(): string {
    return ` --reject-with ${this.type}`;
  }
}

const LOG_LEVELS: Readonly<Record<string, number>> = {
  emerg: 0,
  panic: 0,
  alert: 1,
  crit: 2,
  err: 3,
  error: 3,
  warning: 4,
  warn: 4,
  notice: 5,
  info: 6,
  debug: 7,
};
const LOG_DEFAULT_LEVEL = 4;
/** The kernel's prefix buffer has room for 29 characters, and iptables cuts longer prefixes. */
export const LOG_PREFIX_MAX_LENGTH = 29;
const LOG_FLAGS = [
  "log-tcp-sequence",
  "log-tcp-options",
  "log-ip-options",
  "log-uid",
  "log-macdecode",
] as const;

const LOG_OPTIONS = optionTable([
  [["log-level"], 1, false],
  [["log-prefix"], 1, false],
  ...LOG_FLAGS.map((flag) => [[flag], 0, false] as const),
]);

/** The LOG target. */
export class LogTarget implements TargetInstance {
  readonly name = "LOG";
  readonly options = LOG_OPTIONS;
  private level = LOG_DEFAULT_LEVEL;
  private prefix = "";
  private readonly flags = new Set<string>();
  private readonly seen = new Set<string>();

  option(spec: OptionSpec, args: readonly string[]): void {
    if (this.seen.has(spec.name)) throw repeated(spec.name);
    this.seen.add(spec.name);
    if (spec.name === "log-level") {
      const text = args[0];
      if (/^[0-7]$/.test(text)) this.level = Number(text);
      // Level names are case-sensitive: iptables 1.8.9 rejects "INFO".
      else if (Object.prototype.hasOwnProperty.call(LOG_LEVELS, text))
        this.level = LOG_LEVELS[text];
      else
        throw invalidValue(
          spec.name,
          text,
          `expected 0 to 7 or one of ${Object.keys(LOG_LEVELS).join(", ")}`,
        );
    } else if (spec.name === "log-prefix") {
      if (args[0] === "") throw invalidValue(spec.name, args[0], "the prefix must not be empty");
      this.prefix = args[0].slice(0, LOG_PREFIX_MAX_LENGTH);
    } else {
      this.flags.add(spec.name);
    }
  }

  finish(): void {}

  save(): string {
    let out = "";
    if (this.prefix !== "") out += ` --log-prefix ${quoteArg(this.prefix)}`;
    if (this.level !== LOG_DEFAULT_LEVEL) out += ` --log-level ${this.level}`;
    for (const flag of LOG_FLAGS) if (this.flags.has(flag)) out += ` --${flag}`;
    return out;
  }

  savedValueTest(option: string): SavedValueTest | undefined {
    return option === "log-prefix" ? isSavedLogPrefix : undefined;
  }
}

function isSavedLogPrefix(text: string, start: number, end: number): boolean {
  const length = savedArgLength(text, start, end);
  return length >= 1 && length <= LOG_PREFIX_MAX_LENGTH;
}

/** Targets of iptables that this library does not model; a jump to them is rejected. */
export const UNSUPPORTED_TARGETS = new Set([
  "AUDIT",
  "CHECKSUM",
  "CLASSIFY",
  "CLUSTERIP",
  "CONNMARK",
  "CONNSECMARK",
  "CT",
  "DNAT",
  "DNPT",
  "DSCP",
  "ECN",
  "HL",
  "HMARK",
  "IDLETIMER",
  "LED",
  "MARK",
  "MASQUERADE",
  "NETMAP",
  "NFLOG",
  "NFQUEUE",
  "NOTRACK",
  "QUEUE",
  "RATEEST",
  "REDIRECT",
  "SECMARK",
  "SET",
  "SNAT",
  "SNPT",
  "SYNPROXY",
  "TCPMSS",
  "TCPOPTSTRIP",
  "TEE",
  "TOS",
  "TPROXY",
  "TRACE",
  "TTL",
  "ULOG",
]);
