/**
 * Conversion between the inputs of a rule resource and an iptables rule, both ways.
 *
 * `typedRuleSpec` and `rawRuleSpec` write the `-A CHAIN ...` text of a rule from its typed fields or its raw `args`,
 * with the marker comment as the last match, just before `-j`/`-g` (a user comment, if any,
 * sits just before the marker). `readCanonical` reads the options iptables-save printed, which
 * check() turns back into field values, so that inputs written in any equivalent spelling become identical.
 */
import { formatMarker, type Marker } from "../netfilter/marker";
import { joinArgs, splitArgs } from "../netfilter/tokenize";

/** Match fields that `Rule` and `HashlimitRule` share. */
export interface MatchFields {
  readonly protocol?: string;
  readonly source?: string;
  readonly destination?: string;
  readonly inInterface?: string;
  readonly outInterface?: string;
  readonly sourcePorts?: readonly (number | string)[];
  readonly destinationPorts?: readonly (number | string)[];
  readonly ctstate?: readonly string[];
  readonly comment?: string;
}

/** Target fields: where matching packets go, and the options of REJECT and LOG. */
export interface TargetFields {
  readonly jump?: string;
  readonly goto?: string;
  readonly rejectWith?: string;
  readonly logPrefix?: string;
  readonly logLevel?: number;
}

/** The `limit` match of `Rule` (for example to sample a LOG rule). */
export interface LimitFields {
  readonly limit?: string;
  readonly limitBurst?: number;
}

/** The `hashlimit` match of `HashlimitRule`. */
export interface HashlimitFields {
  readonly hashlimitName: string;
  readonly upto?: string;
  readonly above?: string;
  readonly burst?: number;
  readonly mode?: readonly string[];
  readonly srcMask?: number;
  readonly dstMask?: number;
  readonly htableSize?: number;
  readonly htableMax?: number;
  readonly htableExpireMs?: number;
  readonly htableGcIntervalMs?: number;
}

export type TypedRuleFields = MatchFields & TargetFields & LimitFields & Partial<HashlimitFields>;

/** Protocols whose ports the tcp, udp, ... matches and multiport can match. */
export const PORT_PROTOCOLS: readonly string[] = ["tcp", "udp", "udplite", "sctp", "dccp"];

/** Options whose value is free text, so a value such as "-j" is not read as an option. */
const FREE_TEXT_OPTIONS = new Set(["--comment", "--log-prefix", "--nflog-prefix"]);

/** Commands and table selection belong to the resource, never inside `args`. */
const COMMAND_OPTIONS = new Set([
  "-A", "--append", "-I", "--insert", "-D", "--delete", "-R", "--replace", "-N", "--new-chain",
  "-X", "--delete-chain", "-F", "--flush", "-P", "--policy", "-E", "--rename-chain", "-Z",
  "--zero", "-L", "--list", "-S", "--list-rules", "-C", "--check", "-t", "--table",
]); // prettier-ignore

/** Writes the `-A CHAIN ...` spec of a rule given by typed fields. */
export function typedRuleSpec(chain: string, marker: Marker, fields: TypedRuleFields): string {
  const args: string[] = [];
  pushNegatable(args, "-s", fields.source);
  pushNegatable(args, "-d", fields.destination);
  pushNegatable(args, "-i", fields.inInterface);
  pushNegatable(args, "-o", fields.outInterface);
  pushNegatable(args, "-p", fields.protocol);
  args.push(...portArgs(fields));
  if (fields.ctstate !== undefined) {
    args.push("-m", "conntrack", "--ctstate", fields.ctstate.join(","));
  }
  if (fields.limit !== undefined) {
    args.push("-m", "limit", "--limit", fields.limit);
    if (fields.limitBurst !== undefined) args.push("--limit-burst", String(fields.limitBurst));
  }
  if (fields.hashlimitName !== undefined) args.push(...hashlimitArgs(fields as HashlimitFields));
  if (fields.comment !== undefined) args.push("-m", "comment", "--comment", fields.comment);
  args.push("-m", "comment", "--comment", formatMarker(marker));
  args.push(...targetArgs(fields));
  return `-A ${chain} ${joinArgs(args)}`;
}

/**
 * Writes the spec of a rule given as raw `args` (everything after `-A CHAIN`), with the user's
 * comment and the marker inserted before the target. Throws a plain Error naming the problem
 * when `args` contains a command, a table or a marker of its own.
 */
export function rawRuleSpec(chain: string, marker: Marker, raw: string, comment?: string): string {
  const args = splitArgs(raw);
  let targetIndex = args.length;
  for (let index = 0; index < args.length; index++) {
    const arg = args[index];
    if (COMMAND_OPTIONS.has(arg)) {
      throw new Error(`"${arg}" does not belong in args: set chain and table as inputs instead`);
    }
    if (FREE_TEXT_OPTIONS.has(arg)) {
      if (args[index + 1]?.startsWith("pulumi-iptables:")) {
        throw new Error(
          'comments starting with "pulumi-iptables:" are reserved for the rule marker',
        );
      }
      index++;
    } else if (arg === "-j" || arg === "--jump" || arg === "-g" || arg === "--goto") {
      targetIndex = index;
      break;
    }
  }
  const userComment = comment === undefined ? [] : ["-m", "comment", "--comment", comment];
  const withMarker = [
    ...args.slice(0, targetIndex),
    ...userComment,
    "-m",
    "comment",
    "--comment",
    formatMarker(marker),
    ...args.slice(targetIndex),
  ];
  return `-A ${chain} ${joinArgs(withMarker)}`;
}

/** The options of a canonical line, read with free-text values skipped, and "!" kept. */
export interface CanonicalOptions {
  /** The value after each option (the last one wins); "" for options without a value. */
  readonly values: ReadonlyMap<string, string>;
  /** Options preceded by "!". */
  readonly negated: ReadonlySet<string>;
  /** The tokens after `-A CHAIN` without the marker's `-m comment --comment <marker>`. */
  readonly argsWithoutMarker: readonly string[];
}

/** Options that take no value in the lines iptables-save prints. */
const FLAG_OPTIONS = new Set([
  "--syn",
  "--log-tcp-sequence",
  "--log-tcp-options",
  "--log-ip-options",
  "--log-uid",
  "--log-macdecode",
  "--rttl",
  "--set",
  "--update",
  "--rcheck",
  "--remove",
]);

/** Reads the options of a canonical `-A CHAIN ...` line. */
export function readCanonical(line: string, marker: Marker): CanonicalOptions {
  const tokens = splitArgs(line).slice(2);
  const markerText = formatMarker(marker);
  const rest: string[] = [];
  for (let index = 0; index < tokens.length; index++) {
    const isMarker =
      tokens[index] === "-m" &&
      tokens[index + 1] === "comment" &&
      tokens[index + 2] === "--comment" &&
      tokens[index + 3] === markerText;
    if (isMarker) {
      index += 3;
      continue;
    }
    rest.push(tokens[index]);
  }

  const values = new Map<string, string>();
  const negated = new Set<string>();
  for (let index = 0; index < rest.length; index++) {
    const token = rest[index];
    if (token === "!" || !token.startsWith("-")) continue;
    if (rest[index - 1] === "!") negated.add(token);
    if (FLAG_OPTIONS.has(token) || index + 1 >= rest.length) {
      values.set(token, "");
      continue;
    }
    const next = rest[index + 1];
    if (next.startsWith("-") && !FREE_TEXT_OPTIONS.has(token) && !/^-\d/.test(next)) {
      values.set(token, "");
      continue;
    }
    values.set(token, next);
    index++;
  }
  return { values, negated, argsWithoutMarker: rest };
}

/**
 * Rejoins canonical args as the normalised `args` input: quoted as iptables-save prints them,
 * without the user's `comment`, which has an input of its own.
 */
export function joinRawArgs(args: readonly string[], comment?: string): string {
  const tokens = [...args];
  if (comment !== undefined) {
    for (let index = tokens.length - 4; index >= 0; index--) {
      const isComment =
        tokens[index] === "-m" &&
        tokens[index + 1] === "comment" &&
        tokens[index + 2] === "--comment" &&
        tokens[index + 3] === comment;
      if (isComment) {
        tokens.splice(index, 4);
        break;
      }
    }
  }
  return joinArgs(tokens);
}

function pushNegatable(args: string[], option: string, value: string | undefined): void {
  if (value === undefined) return;
  if (value.startsWith("!")) args.push("!", option, value.slice(1));
  else args.push(option, value);
}

function portArgs(fields: TypedRuleFields): string[] {
  const { sourcePorts, destinationPorts } = fields;
  if (sourcePorts === undefined && destinationPorts === undefined) return [];
  const protocol = fields.protocol ?? "";
  const multi = (sourcePorts?.length ?? 0) > 1 || (destinationPorts?.length ?? 0) > 1;
  const args: string[] = multi ? ["-m", "multiport"] : ["-m", protocol];
  if (sourcePorts !== undefined) {
    args.push(multi ? "--sports" : "--sport", sourcePorts.map(String).join(","));
  }
  if (destinationPorts !== undefined) {
    args.push(multi ? "--dports" : "--dport", destinationPorts.map(String).join(","));
  }
  return args;
}

function hashlimitArgs(fields: HashlimitFields): string[] {
  const args = ["-m", "hashlimit"];
  if (fields.upto !== undefined) args.push("--hashlimit-upto", fields.upto);
  if (fields.above !== undefined) args.push("--hashlimit-above", fields.above);
  if (fields.burst !== undefined) args.push("--hashlimit-burst", String(fields.burst));
  if (fields.mode !== undefined) args.push("--hashlimit-mode", fields.mode.join(","));
  args.push("--hashlimit-name", fields.hashlimitName);
  if (fields.srcMask !== undefined) args.push("--hashlimit-srcmask", String(fields.srcMask));
  if (fields.dstMask !== undefined) args.push("--hashlimit-dstmask", String(fields.dstMask));
  if (fields.htableSize !== undefined)
    args.push("--hashlimit-htable-size", String(fields.htableSize));
  if (fields.htableMax !== undefined) args.push("--hashlimit-htable-max", String(fields.htableMax));
  if (fields.htableExpireMs !== undefined) {
    args.push("--hashlimit-htable-expire", String(fields.htableExpireMs));
  }
  if (fields.htableGcIntervalMs !== undefined) {
    args.push("--hashlimit-htable-gcinterval", String(fields.htableGcIntervalMs));
  }
  return args;
}

function targetArgs(fields: TargetFields): string[] {
  if (fields.goto !== undefined) return ["-g", fields.goto];
  if (fields.jump === undefined) return [];
  const args = ["-j", fields.jump];
  if (fields.rejectWith !== undefined) args.push("--reject-with", fields.rejectWith);
  if (fields.logPrefix !== undefined) args.push("--log-prefix", fields.logPrefix);
  if (fields.logLevel !== undefined) args.push("--log-level", String(fields.logLevel));
  return args;
}
