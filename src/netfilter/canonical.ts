/**
 * `canonicalRule` turns a rule written in any form the iptables command accepts into the exact
 * line iptables-save 1.8.9 prints for it, and `sameRule` compares two rules by that form.
 *
 * The reading follows iptables' own command-line parser (iptables/xshared.c, 1.8.9):
 * - `-A CHAIN` comes first. The other options come in any order, in short or long form
 *   (`--source`, `--match`, `--jump`, ...), and `!` before an option negates it.
 * - An option belongs to the most recently loaded match that defines it. When none does and
 *   `-p` names a protocol with a match (tcp, udp, icmp, icmp6), that match is loaded implicitly,
 *   which is how `-p tcp --dport 22` becomes `-p tcp -m tcp --dport 22`.
 * - `-s` and `-d` take comma-separated lists; a rule with lists expands to one kernel rule per
 *   source and destination pair, and `canonicalRule` returns one line each, joined by "\n".
 * iptables-save prints the addresses, interfaces, protocol and fragment flag first, then the
 * matches in the order they were loaded, then the target.
 * - Long options may be abbreviated to any unambiguous prefix, as getopt_long allows.
 */
import { IptablesError, quoteForMessage, type ErrorCode } from "../errors";
import {
  addressBits,
  applyMask,
  formatNetwork,
  isZero,
  parseAddress,
  prefixMask,
  type Address,
} from "./addresses";
import { ConntrackMatch, StateMatch, parseMask } from "./matches/conntrack";
import { IcmpMatch } from "./matches/icmp";
import { HashlimitMatch, LimitMatch } from "./matches/limits";
import { MultiportMatch, TcpUdpMatch } from "./matches/ports";
import {
  AddrtypeMatch,
  CommentMatch,
  ConnlimitMatch,
  IprangeMatch,
  MacMatch,
  MarkMatch,
  RecentMatch,
} from "./matches/simple";
import type {
  InterfaceMatch,
  MatchInstance,
  NetworkMatch,
  OptionSpec,
  ProtocolMatch,
  RuleEnv,
  RuleHeader,
  SavedValueTest,
  TargetInstance,
} from "./model";
import { isPlainName, savedDecimal } from "./model";
import { formatProtocol, parseProtocol } from "./protocols";
import { LogTarget, RejectTarget, UNSUPPORTED_TARGETS, VerdictTarget } from "./targets";
import { isKnownCanonical, rememberCanonical } from "./canonical-cache";
import { splitArgsQuoted, type SplitLine } from "./tokenize";
import { BACKENDS, FAMILIES, TABLES, type RuleContext } from "./types";

type MatchFactory = (env: RuleEnv) => MatchInstance;

/** The match modules this library models, by every name `-m` accepts. */
const MATCHES: Readonly<Record<string, MatchFactory | undefined>> = {
  tcp: (env) => new TcpUdpMatch("tcp", env),
  udp: (env) => new TcpUdpMatch("udp", env),
  icmp: (env) => (env.family === "ipv4" ? new IcmpMatch("ipv4") : unknownMatch("icmp", env)),
  icmp6: (env) => (env.family === "ipv6" ? new IcmpMatch("ipv6") : unknownMatch("icmp6", env)),
  multiport: () => new MultiportMatch(),
  conntrack: (env) => new ConntrackMatch(env),
  state: () => new StateMatch(),
  limit: (env) => new LimitMatch(env),
  hashlimit: (env) => new HashlimitMatch(env),
  comment: () => new CommentMatch(),
  connlimit: (env) => new ConnlimitMatch(env),
  recent: (env) => new RecentMatch(env),
  iprange: (env) => new IprangeMatch(env),
  mark: () => new MarkMatch(),
  addrtype: (env) => new AddrtypeMatch(env),
  mac: (env) => new MacMatch(env),
};
/** Names iptables maps to the icmp6 match (`xtables_find_match`). */
const MATCH_ALIASES: Readonly<Record<string, string>> = { icmpv6: "icmp6", "ipv6-icmp": "icmp6" };

/** The match `-p` loads implicitly, by protocol number. */
const PROTOCOL_MATCHES: Readonly<Record<number, string>> = {
  6: "tcp",
  17: "udp",
  1: "icmp",
  58: "icmp6",
};

const BUILTIN_CHAINS = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);
/** Chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN is 29 with the NUL). */
const CHAIN_NAME_MAX = 28;
/** Interface names are at most 15 characters (IFNAMSIZ is 16 with the NUL). */
const INTERFACE_NAME_MAX = 15;

function unknownMatch(name: string, env: RuleEnv): never {
  throw new IptablesError(
    "RULE_UNKNOWN_MATCH",
    `-m ${name} is not available for ${env.family}; ` +
      `use ${env.family === "ipv4" ? "-m icmp with -p icmp" : "-m icmp6 with -p icmpv6"}`,
    { details: { option: `-m ${name}` } },
  );
}

function ruleError(code: ErrorCode, option: string, message: string): IptablesError {
  return new IptablesError(code, message, { details: { option } });
}

/** Short generic options of the iptables command. */
const SHORT_GENERIC: Readonly<Record<string, string>> = {
  "-s": "source",
  "-d": "destination",
  "-i": "in-interface",
  "-o": "out-interface",
  "-p": "protocol",
  "-f": "fragment",
  "-m": "match",
  "-j": "jump",
  "-g": "goto",
  "-c": "set-counters",
};
/**
 * Short options whose value iptables 1.8.9 reads from the rest of their word ("-mtcp"). The
 * others take the whole word as their value, so "-ptcp" is protocol "-ptcp" on both backends.
 */
const SHORT_ATTACHED_VALUE = new Set(["-m", "-g", "-c"]);

/**
 * The long options iptables 1.8.9 always defines (`original_opts` in iptables/iptables.c), in
 * table order, mapped to the rule option they set; commands and flags that are not part of a
 * rule map to undefined. They matter for abbreviations: "--d" is ambiguous, "--in" is
 * --in-interface.
 */
const LONG_GENERIC: ReadonlyArray<readonly [string, string | undefined]> = [
  ["append", undefined],
  ["delete", undefined],
  ["insert", undefined],
  ["replace", undefined],
  ["list", undefined],
  ["list-rules", undefined],
  ["flush", undefined],
  ["zero", undefined],
  ["new-chain", undefined],
  ["delete-chain", undefined],
  ["rename-chain", undefined],
  ["policy", undefined],
  ["source", "source"],
  ["destination", "destination"],
  ["src", "source"],
  ["dst", "destination"],
  ["protocol", "protocol"],
  ["in-interface", "in-interface"],
  ["jump", "jump"],
  ["table", undefined],
  ["match", "match"],
  ["numeric", undefined],
  ["out-interface", "out-interface"],
  ["verbose", undefined],
  ["wait", undefined],
  ["wait-interval", undefined],
  ["exact", undefined],
  ["fragment", "fragment"],
  ["version", undefined],
  ["help", undefined],
  ["line-numbers", undefined],
  ["modprobe", undefined],
  ["set-counters", "set-counters"],
  ["goto", "goto"],
  ["ipv4", undefined],
  ["ipv6", undefined],
  ["check", undefined],
];

/** The option a long option of the command line resolves to. */
type LongOption =
  | { readonly kind: "generic"; readonly option: string | undefined; readonly name: string }
  | {
      readonly kind: "module";
      readonly owner: MatchInstance | TargetInstance;
      readonly spec: OptionSpec;
      readonly name: string;
    };

const GENERIC_BY_NAME: ReadonlyMap<string, LongOption> = new Map(
  LONG_GENERIC.map(([name, option]) => [name, { kind: "generic", option, name }]),
);

const GENERIC_BITS: Readonly<Record<string, number>> = {
  source: 1,
  destination: 2,
  "in-interface": 4,
  "out-interface": 8,
  protocol: 16,
  fragment: 32,
  match: 64,
  jump: 128,
  goto: 256,
  "set-counters": 512,
};
const NO_ADDRESSES: string[] = [];

/** Options and values of one rule, in the order they were given. */
interface ParsedRule {
  chain: string;
  sources: readonly string[];
  sourceInvert: boolean;
  destinations: readonly string[];
  destinationInvert: boolean;
  inInterface?: InterfaceMatch;
  outInterface?: InterfaceMatch;
  protocol?: ProtocolMatch;
  fragment?: { invert: boolean };
  matches: MatchInstance[];
  target?: TargetInstance;
  goto: boolean;
}

/** The option that read a value token: a generic option by name, or a match or target option. */
type ValueRole =
  string | { readonly owner: MatchInstance | TargetInstance; readonly option: string };

class RuleReader {
  private readonly owners: Array<MatchInstance | TargetInstance> = [];
  /** Per token index: the option that read the token as its value. */
  readonly roles: Array<ValueRole | undefined> = [];
  private role: ValueRole = "";
  private protocolMatchUsed = false;
  /** Generic options seen so far, as bits of GENERIC_BITS. */
  private seenGeneric = 0;
  readonly rule: ParsedRule;
  readonly env: RuleEnv;

  private readonly tokens: string[];
  private readonly quoted: readonly boolean[] | undefined;

  constructor(spec: SpecTokens, context: Required<RuleContext>) {
    const tokens = spec.values;
    this.tokens = tokens;
    this.quoted = spec.quoted;
    const command = tokens[0];
    const chain = tokens[1];
    if (command !== "-A" && command !== "--append") {
      throw ruleError(
        "RULE_SYNTAX",
        command ?? "",
        'a rule must start with "-A CHAIN" (or "--append CHAIN")',
      );
    }
    validateChainName(chain, "-A");
    this.env = { family: context.family, table: context.table, backend: context.backend, chain };
    this.rule = {
      chain,
      sources: NO_ADDRESSES,
      sourceInvert: false,
      destinations: NO_ADDRESSES,
      destinationInvert: false,
      matches: [],
      goto: false,
    };
  }

  /** Index of the next token to read. */
  private index = 2;
  /** The value attached to the current option with "=", if any. */
  private attached: string | undefined;

  read(): ParsedRule {
    let invert = false;
    while (this.index < this.tokens.length) {
      // Where an option is expected, "!" negates it even when quoted, because iptables-restore
      // drops the quotes before its option parser reads the word.
      const token = this.tokens[this.index++];
      if (token === "!") {
        if (invert) throw ruleError("RULE_SYNTAX", "!", 'two "!" in a row; negate an option once');
        invert = true;
        continue;
      }
      if (token.charCodeAt(0) !== 45 /* "-" */ || token === "-" || token === "--") {
        throw ruleError(
          "RULE_SYNTAX",
          token,
          `unexpected argument ${quoteForMessage(token, 60)}; every value must follow its option`,
        );
      }

      let name = token;
      this.attached = undefined;
      if (token.charCodeAt(1) === 45) {
        const equals = token.indexOf("=");
        if (equals > 0) {
          name = token.slice(0, equals);
          this.attached = token.slice(equals + 1);
        }
      } else if (token.length > 2) {
        this.shortOptions(token, invert);
        invert = false;
        continue;
      }

      if (name.charCodeAt(1) !== 45) {
        const generic = SHORT_GENERIC[name];
        if (generic === undefined) {
          throw ruleError(
            "RULE_UNKNOWN_OPTION",
            name,
            `unknown option ${quoteForMessage(name, 40)}; a rule accepts -s, -d, -i, -o, -p, -f, ` +
              "-m, -j and -g and the long options of its matches and target",
          );
        }
        this.generic(generic, name, invert);
      } else {
        const resolved = this.resolveLong(name.slice(2));
        if (resolved.kind === "module") {
          this.moduleOption(resolved, name, invert);
        } else if (resolved.option === undefined) {
          throw ruleError(
            "RULE_UNSUPPORTED",
            name,
            `${name} (--${resolved.name}) is an iptables command or flag, not part of a rule`,
          );
        } else {
          this.generic(resolved.option, name, invert);
        }
      }
      invert = false;
    }
    if (invert) throw ruleError("RULE_SYNTAX", "!", '"!" at the end of the rule negates nothing');
    return this.rule;
  }

  /**
   * Reads a word of several short options as getopt does: "-fp tcp" is "-f -p tcp", and the
   * rest of the word after an option that takes a value is that value ("-mtcp" is "-m tcp").
   * Only the first option of the word is negated by a preceding "!".
   */
  private shortOptions(word: string, invert: boolean): void {
    let negate = invert;
    for (let i = 1; i < word.length; i++) {
      const option = `-${word[i]}`;
      const generic = SHORT_GENERIC[option];
      if (generic === undefined) {
        throw ruleError(
          "RULE_UNKNOWN_OPTION",
          option,
          `unknown option ${quoteForMessage(option, 10)} in ${quoteForMessage(word, 40)}; a rule ` +
            "accepts -s, -d, -i, -o, -p, -f, -m, -j and -g and the long options of its matches and target",
        );
      }
      const rest = word.slice(i + 1);
      if (option === "-f") {
        this.attached = undefined;
        this.generic(generic, option, negate);
        negate = false;
        continue;
      }
      if (rest !== "" && !SHORT_ATTACHED_VALUE.has(option)) {
        // iptables 1.8.9 takes the whole word as the value here: "-ptcp" fails as an unknown
        // protocol, and "-ieth0" matches an interface named "-ieth0".
        throw ruleError(
          "RULE_SYNTAX",
          option,
          `${quoteForMessage(word, 40)} is not read as "${option} ${rest}": iptables takes the ` +
            `whole word as the value of ${option}; put a space between an option and its value`,
        );
      }
      this.attached = rest === "" ? undefined : rest;
      this.generic(generic, option, negate);
      return;
    }
  }

  /**
   * Returns the value of the current option: the attached one, else the next token. A bare "!"
   * is a value only for match and target options, which iptables passes it to unchanged; after
   * -s, -d, -i, -o and -p it is the old negation syntax, which iptables rejects.
   */
  private takeValue(spelled: string, generic = true): string {
    if (this.attached !== undefined) {
      const value = this.attached;
      this.attached = undefined;
      return value;
    }
    const quoted = this.quoted?.[this.index] === true;
    this.roles[this.index] = this.role;
    const value = this.tokens[this.index++];
    if (value === undefined) throw ruleError("RULE_SYNTAX", spelled, `${spelled} needs a value`);
    if (value === "!" && !quoted && generic) {
      throw ruleError(
        "RULE_SYNTAX",
        spelled,
        `"${spelled} ! VALUE" is not accepted; write "! ${spelled} VALUE"`,
      );
    }
    return value;
  }

  private generic(option: string, spelled: string, invert: boolean): void {
    const repeatable = option === "match";
    const bit = GENERIC_BITS[option] ?? 0;
    if (!repeatable && (this.seenGeneric & bit) !== 0) {
      throw ruleError(
        "RULE_SYNTAX",
        spelled,
        `${spelled} is given twice; iptables accepts it once per rule`,
      );
    }
    this.seenGeneric |= bit;
    this.role = option;

    switch (option) {
      case "source":
      case "destination": {
        const values = this.takeValue(spelled).split(",");
        if (invert && values.length > 1) {
          throw ruleError(
            "RULE_SYNTAX",
            spelled,
            `"!" cannot negate a list of addresses in ${spelled}`,
          );
        }
        if (option === "source") {
          this.rule.sources = values;
          this.rule.sourceInvert = invert;
        } else {
          this.rule.destinations = values;
          this.rule.destinationInvert = invert;
        }
        break;
      }
      case "in-interface":
      case "out-interface": {
        const name = this.takeValue(spelled);
        validateInterface(spelled, name);
        const forbidden =
          option === "in-interface" ? ["OUTPUT", "POSTROUTING"] : ["INPUT", "PREROUTING"];
        if (forbidden.includes(this.rule.chain)) {
          throw ruleError(
            "RULE_INVALID_VALUE",
            spelled,
            `${spelled} cannot be used in the ${this.rule.chain} chain`,
          );
        }
        const match = { name, invert };
        if (option === "in-interface") this.rule.inInterface = match;
        else this.rule.outInterface = match;
        break;
      }
      case "protocol": {
        const value = this.takeValue(spelled);
        const number = parseProtocol("protocol", value.toLowerCase());
        if (number === 0 && invert) {
          throw ruleError(
            "RULE_INVALID_VALUE",
            spelled,
            `"! ${spelled} ${value}" would never match any packet`,
          );
        }
        this.rule.protocol = { number, invert };
        break;
      }
      case "set-counters": {
        // Initial counters (-c PACKETS BYTES) are not part of the rule: iptables-save prints them
        // only with -c, before "-A".
        if (invert) throw ruleError("RULE_SYNTAX", spelled, `"!" cannot negate ${spelled}`);
        for (const what of ["packets", "bytes"]) {
          const value = this.takeValue(spelled);
          if (!/^\d+$/.test(value)) {
            throw ruleError(
              "RULE_INVALID_VALUE",
              spelled,
              `${spelled} needs two numbers, packets and bytes, not ${quoteForMessage(value, 40)} for ${what}`,
            );
          }
        }
        break;
      }
      case "fragment":
        if (this.env.family === "ipv6") {
          throw ruleError(
            "RULE_INVALID_VALUE",
            spelled,
            "-f is IPv4 only; IPv6 fragments need -m frag, which is not supported",
          );
        }
        this.rule.fragment = { invert };
        break;
      case "match": {
        if (invert) throw ruleError("RULE_SYNTAX", spelled, `"!" cannot negate ${spelled}`);
        const name = this.takeValue(spelled);
        const canonicalName = MATCH_ALIASES[name] ?? name;
        const factory = Object.prototype.hasOwnProperty.call(MATCHES, canonicalName)
          ? MATCHES[canonicalName]
          : undefined;
        if (factory === undefined) {
          throw ruleError(
            "RULE_UNKNOWN_MATCH",
            `-m ${name}`,
            `match ${quoteForMessage(name, 40)} is not supported; supported matches: ${Object.keys(MATCHES).join(", ")}`,
          );
        }
        const instance = factory(this.env);
        this.rule.matches.push(instance);
        this.owners.push(instance);
        break;
      }
      case "jump":
      case "goto": {
        if (invert) throw ruleError("RULE_SYNTAX", spelled, `"!" cannot negate ${spelled}`);
        if (this.rule.target !== undefined) {
          throw ruleError("RULE_SYNTAX", spelled, "a rule takes one -j or -g");
        }
        const name = this.takeValue(spelled);
        this.rule.target = createTarget(name, option === "goto", this.env);
        this.rule.goto = option === "goto";
        this.owners.push(this.rule.target);
        break;
      }
    }
  }

  private moduleOption(
    resolved: Extract<LongOption, { kind: "module" }>,
    spelled: string,
    invert: boolean,
  ): void {
    const { owner, spec } = resolved;
    const option = `--${resolved.name}`;
    if (invert && !spec.invertible) {
      throw ruleError("RULE_SYNTAX", option, `"!" cannot negate ${spelled}`);
    }
    if (spec.args === 0 && this.attached !== undefined) {
      throw ruleError("RULE_SYNTAX", option, `${spelled} takes no value`);
    }
    const args: string[] = [];
    this.role = { owner, option: spec.name };
    for (let i = 0; i < spec.args; i++) args.push(this.takeValue(spelled, false));
    owner.option(spec, args, invert);
  }

  /**
   * Resolves a long option as getopt_long does over iptables' merged option table: the generic
   * options first, then the options of the loaded matches and target, newest first. An exact
   * name wins; otherwise a unique prefix (an abbreviation such as "--dport" for a loaded
   * multiport's "--dports"). When nothing or more than one option fits, iptables loads the
   * protocol's match once and tries again.
   */
  private resolveLong(name: string): LongOption {
    let found = this.lookupLong(name);
    if (found === undefined || found === "ambiguous") {
      if (this.loadProtocolMatch()) found = this.lookupLong(name);
    }
    if (found === "ambiguous") {
      throw ruleError(
        "RULE_UNKNOWN_OPTION",
        `--${name}`,
        `option "--${name}" is an ambiguous abbreviation of several loaded options; write it in full`,
      );
    }
    if (found === undefined) {
      throw ruleError(
        "RULE_UNKNOWN_OPTION",
        `--${name}`,
        `unknown option "--${name}": no match or target loaded before it defines it; ` +
          "load the match first with -m (or -p for tcp, udp and icmp options)",
      );
    }
    return found;
  }

  private lookupLong(name: string): LongOption | "ambiguous" | undefined {
    // An exact name wins, in getopt_long's table order: generic options, then the newest module.
    const generic = GENERIC_BY_NAME.get(name);
    if (generic !== undefined) return generic;
    for (let i = this.owners.length - 1; i >= 0; i--) {
      const spec = this.owners[i].options.get(name);
      if (spec !== undefined) return { kind: "module", owner: this.owners[i], spec, name };
    }

    // Otherwise a unique prefix; aliases of one option (--sport, --source-port) count once.
    let found: LongOption | undefined;
    let foundKey: unknown;
    const consider = (entry: LongOption, key: unknown): boolean => {
      if (!entry.name.startsWith(name)) return true;
      if (found !== undefined && foundKey !== key) return false;
      found = entry;
      foundKey = key;
      return true;
    };
    for (const entry of GENERIC_BY_NAME.values()) {
      // --source and --src are one option to getopt_long (the same value), as are --dst and
      // --destination.
      const key = entry.kind === "generic" && entry.option !== undefined ? entry.option : entry;
      if (!consider(entry, key)) return "ambiguous";
    }
    for (let i = this.owners.length - 1; i >= 0; i--) {
      const owner = this.owners[i];
      for (const [optionName, spec] of owner.options) {
        if (!consider({ kind: "module", owner, spec, name: optionName }, spec)) return "ambiguous";
      }
    }
    return found;
  }

  /**
   * Loads the match of the rule's protocol (tcp, udp, icmp, icmp6), as iptables does for an
   * option it cannot resolve, once per rule. Returns whether a match was loaded.
   */
  private loadProtocolMatch(): boolean {
    const protocol = this.rule.protocol;
    if (protocol === undefined || this.protocolMatchUsed) return false;
    const matchName = PROTOCOL_MATCHES[protocol.number];
    const factory = matchName === undefined ? undefined : MATCHES[matchName];
    if (factory === undefined) return false;
    const instance = factory(this.env);
    this.protocolMatchUsed = true;
    this.rule.matches.push(instance);
    this.owners.push(instance);
    return true;
  }
}

/** Chain names already found valid; a rule set uses few, so the set stays small. */
const VALID_CHAIN_NAMES = new Set<string>();

function validateChainName(name: string | undefined, option: string): asserts name is string {
  if (name !== undefined && VALID_CHAIN_NAMES.has(name)) return;
  if (name === undefined || name === "") {
    throw ruleError("RULE_SYNTAX", option, `${option} needs a chain name`);
  }
  if (
    name.length > CHAIN_NAME_MAX ||
    !/^[\x21-\x7e]+$/.test(name) ||
    /["'\\]/.test(name) ||
    name.startsWith("-") ||
    name === "!"
  ) {
    throw ruleError(
      "RULE_INVALID_VALUE",
      option,
      `chain name ${quoteForMessage(name, 40)} is invalid: use 1 to ${CHAIN_NAME_MAX} printable characters ` +
        'without spaces, quotes or backslashes, not starting with "-"',
    );
  }
  if (VALID_CHAIN_NAMES.size < 10_000) VALID_CHAIN_NAMES.add(name);
}

function validateInterface(option: string, name: string): void {
  if (name === "")
    throw ruleError(
      "RULE_INVALID_VALUE",
      option,
      `${option} needs an interface name, not an empty string`,
    );
  if (name.length > INTERFACE_NAME_MAX || !/^[\x21-\x7e]+$/.test(name) || /["'\\/]/.test(name)) {
    throw ruleError(
      "RULE_INVALID_VALUE",
      option,
      `interface name ${quoteForMessage(name, 40)} is invalid: use 1 to ${INTERFACE_NAME_MAX} printable characters ` +
        'without spaces, quotes, "/" or backslashes ("+" at the end matches a prefix)',
    );
  }
}

const BUILTIN_VERDICTS = ["ACCEPT", "DROP", "RETURN"];

function createTarget(name: string, isGoto: boolean, env: RuleEnv): TargetInstance {
  const builtinVerdicts = BUILTIN_VERDICTS;
  if (isGoto) {
    if (
      builtinVerdicts.includes(name) ||
      name === "REJECT" ||
      name === "LOG" ||
      UNSUPPORTED_TARGETS.has(name)
    ) {
      throw ruleError(
        "RULE_INVALID_VALUE",
        "-g",
        `-g needs a user chain, not ${name}; use -j ${name}`,
      );
    }
    validateChainName(name, "-g");
    return new VerdictTarget(name);
  }
  if (builtinVerdicts.includes(name)) return new VerdictTarget(name);
  if (name === "REJECT") return new RejectTarget(env);
  if (name === "LOG") return new LogTarget();
  if (UNSUPPORTED_TARGETS.has(name)) {
    throw ruleError(
      "RULE_UNKNOWN_TARGET",
      `-j ${name}`,
      `target ${name} is not supported; supported targets: ACCEPT, DROP, RETURN, REJECT, LOG and jumps to user chains`,
    );
  }
  validateChainName(name, "-j");
  if (BUILTIN_CHAINS.has(name)) {
    throw ruleError(
      "RULE_INVALID_VALUE",
      "-j",
      `-j ${name} jumps to a built-in chain, which iptables does not allow`,
    );
  }
  return new VerdictTarget(name);
}

/** Parses one entry of an -s/-d list into a masked network. */
function parseNetwork(option: string, text: string, invert: boolean, env: RuleEnv): NetworkMatch {
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const address = parseAddress(addressText, env.family);
  if (address === undefined) {
    const hostname = /^[A-Za-z][A-Za-z0-9.-]*$/.test(addressText);
    throw ruleError(
      hostname ? "RULE_UNSUPPORTED" : "RULE_INVALID_VALUE",
      option,
      hostname
        ? `${option} ${quoteForMessage(text, 60)} is a host name; write the address, because iptables would resolve ` +
            "the name with DNS on the host when the rule is added"
        : `${option} ${quoteForMessage(text, 60)} is not an ${env.family === "ipv4" ? "IPv4" : "IPv6"} address ` +
            "with an optional /prefix or /mask",
    );
  }
  let mask: Address = prefixMask(addressBits(env.family), env.family);
  if (slash >= 0) mask = parseMask(option.replace(/^-+/, ""), text.slice(slash + 1), env, text);
  return { address: applyMask(address, mask), mask, invert };
}

function formatNetworkOption(flag: string, match: NetworkMatch | undefined): string {
  if (match === undefined || (!match.invert && isZero(match.mask))) return "";
  return `${match.invert ? " !" : ""} ${flag} ${formatNetwork(match.address, match.mask)}`;
}

function formatHeader(header: RuleHeader): string {
  let out =
    formatNetworkOption("-s", header.source) + formatNetworkOption("-d", header.destination);
  if (header.inInterface) {
    out += `${header.inInterface.invert ? " !" : ""} -i ${header.inInterface.name}`;
  }
  if (header.outInterface) {
    out += `${header.outInterface.invert ? " !" : ""} -o ${header.outInterface.name}`;
  }
  if (header.protocol && header.protocol.number !== 0) {
    out += `${header.protocol.invert ? " !" : ""} -p ${formatProtocol(header.protocol.number)}`;
  }
  if (header.fragment) out += `${header.fragment.invert ? " !" : ""} -f`;
  return out;
}

const FAMILY_NUMBERS = new Map(FAMILIES.map((family, index) => [family as string, index]));
const TABLE_NUMBERS = new Map(TABLES.map((table, index) => [table as string, index]));
const BACKEND_NUMBERS = new Map(BACKENDS.map((backend, index) => [backend as string, index]));

/** A rule context with its defaults filled in, and its number for the canonical-form cache. */
interface ResolvedContext extends Required<RuleContext> {
  readonly number: number;
}

/**
 * Fills in the defaults of a rule context and checks each field, because JavaScript callers
 * and decoded inputs can pass any value.
 */
function resolveContext(context: RuleContext | undefined): ResolvedContext {
  const family = context?.family ?? "ipv4";
  const table = context?.table ?? "filter";
  const backend = context?.backend ?? "nft";
  // Callers canonicalise many rules in one context in a row.
  const last = lastResolved;
  if (family === last.family && table === last.table && backend === last.backend) return last;
  const familyNumber = contextFieldNumber("family", family, FAMILY_NUMBERS);
  const tableNumber = contextFieldNumber("table", table, TABLE_NUMBERS);
  const backendNumber = contextFieldNumber("backend", backend, BACKEND_NUMBERS);
  const number = (familyNumber * TABLES.length + tableNumber) * BACKENDS.length + backendNumber;
  lastResolved = RESOLVED_CONTEXTS[number];
  return lastResolved;
}

/** Every resolved context, by its number, so that resolving one allocates nothing. */
const RESOLVED_CONTEXTS: readonly ResolvedContext[] = FAMILIES.flatMap((family) =>
  TABLES.flatMap((table) => BACKENDS.map((backend) => ({ family, table, backend }))),
).map((context, number) => ({ ...context, number }));
let lastResolved = RESOLVED_CONTEXTS[0];

function contextFieldNumber(
  field: string,
  value: unknown,
  numbers: ReadonlyMap<string, number>,
): number {
  const number = typeof value === "string" ? numbers.get(value) : undefined;
  if (number !== undefined) return number;
  const shownValue = typeof value === "string" ? quoteForMessage(value, 40) : String(value);
  throw new IptablesError(
    "RULE_INVALID_VALUE",
    `rule context ${field} ${shownValue} is invalid: use one of ${[...numbers.keys()].join(", ")}`,
    { details: { option: field, value } },
  );
}

type SpecTokens = SplitLine;

function tokenizeSpec(spec: string): SpecTokens {
  try {
    // A quoted "!" is a value, not a negation, so the quoting of each token matters.
    return splitArgsQuoted(spec);
  } catch (error) {
    throw new IptablesError(
      "RULE_SYNTAX",
      `rule ${quoteForMessage(spec, 120)} has a quote that is never closed`,
      {
        cause: error,
        details: { option: "", column: (error as IptablesError).details?.column },
      },
    );
  }
}

/**
 * Returns the line iptables-save (iptables 1.8.9, Debian 12) prints for a rule given as
 * `-A CHAIN ...` in any form the iptables command accepts. A rule whose -s or -d lists several
 * addresses becomes several kernel rules: the result then has one line per rule, joined by "\n",
 * in the order iptables adds them (each source with each destination).
 *
 * Throws an IptablesError with a RULE_* code, naming the option in `details.option`, when the
 * rule uses an unsupported match or target, an unknown option, or a value iptables or the kernel
 * would reject. A context with an unknown family, table or backend raises RULE_INVALID_VALUE
 * with that field in `details.option`.
 */
export function canonicalRule(spec: string, context?: RuleContext): string {
  const resolved = resolveContext(context);
  if (isKnownCanonical(spec, resolved.number)) return spec;
  return canonicalizeAndRemember(spec, resolved);
}

/**
 * Runs the full canonicaliser and remembers a line it returns unchanged. Kept apart from
 * `canonicalRule` because V8 allocates the closure's captured `reader` when the function that
 * declares it starts, which would cost every cached line an allocation.
 */
function canonicalizeAndRemember(spec: string, resolved: ResolvedContext): string {
  const { line, reader } = canonicalize(spec, resolved);
  if (line === spec) {
    rememberCanonical(spec, resolved.number, (index) => slotTest(reader, index));
  }
  return line;
}

/**
 * Tells whether `canonicalRule` would return `spec` from the canonical-form cache, without the
 * full canonicaliser. For tests.
 */
export function isCachedCanonical(spec: string, context?: RuleContext): boolean {
  return isKnownCanonical(spec, resolveContext(context).number);
}

/** `canonicalRule` without the canonical-form cache; tests compare the two. */
export function canonicalRuleUncached(spec: string, context?: RuleContext): string {
  return canonicalize(spec, resolveContext(context)).line;
}

function canonicalize(
  spec: string,
  context: Required<RuleContext>,
): { line: string; reader: RuleReader } {
  const tokens = tokenizeSpec(spec);
  const reader = new RuleReader(tokens, context);
  const rule = reader.read();
  const env = reader.env;

  const headers: RuleHeader[] = [];
  const sourceCount = Math.max(1, rule.sources.length);
  const destinationCount = Math.max(1, rule.destinations.length);
  for (let i = 0; i < sourceCount; i++) {
    const source = rule.sources[i];
    const sourceMatch =
      source === undefined ? undefined : parseNetwork("-s", source, rule.sourceInvert, env);
    for (let j = 0; j < destinationCount; j++) {
      const destination = rule.destinations[j];
      headers.push({
        source: sourceMatch,
        destination:
          destination === undefined
            ? undefined
            : parseNetwork("-d", destination, rule.destinationInvert, env),
        inInterface: rule.inInterface,
        outInterface: rule.outInterface,
        protocol: rule.protocol,
        fragment: rule.fragment,
      });
    }
  }

  checkBackendLimits(rule, headers, env);
  for (const match of rule.matches) match.finish(headers[0]);
  rule.target?.finish(headers[0]);

  let body = "";
  for (const match of rule.matches) {
    const saved = match.save();
    if (saved !== undefined) body += ` -m ${match.name}${saved}`;
  }
  if (rule.target !== undefined) {
    body += ` ${rule.goto ? "-g" : "-j"} ${rule.target.name}${rule.target.save()}`;
  }

  let line = `-A ${rule.chain}${formatHeader(headers[0])}${body}`;
  for (let i = 1; i < headers.length; i++)
    line += `\n-A ${rule.chain}${formatHeader(headers[i])}${body}`;
  return { line, reader };
}

/**
 * Returns the value test of the token at `index` of a rule the canonicaliser printed back
 * unchanged, or undefined when the token must keep its exact text. Each test accepts only
 * values that the option reads and prints back exactly as written without changing anything
 * else in the rule, whatever the other tested tokens hold.
 */
function slotTest(reader: RuleReader, index: number): SavedValueTest | undefined {
  const role = reader.roles[index];
  if (role === undefined) return undefined;
  if (typeof role !== "string") return role.owner.savedValueTest?.(role.option);
  switch (role) {
    case "source":
    case "destination":
      // No match reads the addresses, and a single network with a non-zero mask prints as one
      // "-s"/"-d" option on one line.
      return reader.env.family === "ipv4" ? isSavedIpv4Network : isSavedIpv6Network;
    case "in-interface":
    case "out-interface":
      // Interface names print as given, and only the chain decides where they are allowed.
      return isSavedInterface;
    default:
      return undefined;
  }
}

const DOT = 46;
const SLASH = 47;

/** The number of addresses in an IPv4 network of each prefix length from 0 to 32. */
const IPV4_BLOCK_SIZES = Array.from({ length: 33 }, (_, prefix) => 2 ** (32 - prefix));

/**
 * Tells whether a value is an IPv4 network as iptables-save prints it: dotted decimal without
 * leading zeros, a prefix length from 1 to 32, and no bits set after the prefix. It reads the
 * four octets in one pass without calls, because every cached -s and -d value goes through it.
 */
function isSavedIpv4Network(text: string, start: number, end: number): boolean {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let parts = 0;
  let index = start;
  for (; index < end; index++) {
    const code = text.charCodeAt(index);
    if (code >= 48 && code <= 57) {
      // A leading zero is printed only for the octet 0 itself.
      if (digits === 1 && octet === 0) return false;
      octet = octet * 10 + code - 48;
      if (octet > 255) return false;
      digits++;
    } else if (digits > 0 && code === (parts < 3 ? DOT : SLASH)) {
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      parts++;
      if (parts === 4) break;
    } else {
      return false;
    }
  }
  if (parts !== 4) return false;
  const prefix = savedDecimal(text, index + 1, end, 32);
  return prefix >= 1 && value % IPV4_BLOCK_SIZES[prefix] === 0;
}

/** Tells whether a value is an IPv6 network exactly as iptables-save prints it. */
function isSavedIpv6Network(text: string, start: number, end: number): boolean {
  const slash = text.indexOf("/", start);
  if (slash < 0 || slash >= end) return false;
  const prefix = savedDecimal(text, slash + 1, end, 128);
  const address = parseAddress(text.slice(start, slash), "ipv6");
  if (prefix < 1 || address === undefined) return false;
  const mask = prefixMask(prefix, "ipv6");
  return formatNetwork(applyMask(address, mask), mask) === text.slice(start, end);
}

/** Tells whether `validateInterface` accepts a name, which then prints as written. */
function isSavedInterface(text: string, start: number, end: number): boolean {
  return end - start <= INTERFACE_NAME_MAX && isPlainName(text, start, end);
}

/** Rejects rules that one backend cannot hold or cannot print back as written. */
function checkBackendLimits(rule: ParsedRule, headers: RuleHeader[], env: RuleEnv): void {
  if (env.backend !== "nft") return;
  for (const header of headers) {
    for (const [flag, match] of [
      ["-s", header.source],
      ["-d", header.destination],
    ] as const) {
      if (match !== undefined && match.invert && isZero(match.mask)) {
        throw ruleError(
          "RULE_INVALID_VALUE",
          flag,
          `"! ${flag} ${formatNetwork(match.address, match.mask)}" matches nothing, and nf_tables rejects it`,
        );
      }
    }
  }
  // iptables-nft reads adjacent native port matches back as one match.
  for (let i = 0; i + 1 < rule.matches.length;) {
    const current = rule.matches[i];
    const next = rule.matches[i + 1];
    if (
      current instanceof TcpUdpMatch &&
      current.isNative() &&
      next instanceof TcpUdpMatch &&
      current.absorb(next)
    ) {
      rule.matches.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  const native = rule.matches.filter(
    (match): match is TcpUdpMatch => match instanceof TcpUdpMatch && match.isNative(),
  );
  if (native.length > 1) {
    throw ruleError(
      "RULE_UNSUPPORTED",
      `-m ${native[1].name}`,
      `iptables-nft merges the ${native[1].name} port matches of a rule in ways this library does not ` +
        "model; put all port options in one match",
    );
  }
}

/**
 * Tells whether two rules are the same kernel rule in a family, table and backend: equal texts,
 * or equal canonical lines. Throws like `canonicalRule` when the context is invalid or either
 * rule cannot be canonicalised.
 */
export function sameRule(a: string, b: string, context?: RuleContext): boolean {
  resolveContext(context);
  if (a === b) return true;
  return canonicalRule(a, context) === canonicalRule(b, context);
}
