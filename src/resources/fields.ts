/**
 * zod schemas of the values resource inputs take, with the fix each failure suggests.
 *
 * A schema's error message is only the fix ("use 1 to 15 letters, ..."). `zodFailures` in
 * failures.ts prefixes the field and the value, so every reason reads
 * `<field> <value> is invalid: <fix>`. Schemas also normalise, so that equivalent spellings
 * give identical inputs: protocols in lower case, connection states upper case in kernel order,
 * addresses as `network/prefix`, ports in ascending order.
 *
 * Limits come from iptables 1.8.9 and Linux (sources named at each limit) and were checked
 * against `iptables` on lab hosts of both backends.
 */
import { z } from "zod";
import { MAX_ORDER, MIN_ORDER } from "../netfilter/marker";
import { applyMask, formatNetwork, parseAddress, prefixMask } from "../netfilter/addresses";
import { parseByteRate, parsePacketRate } from "../netfilter/rates";
import { FAMILIES, TABLES, type Family } from "../netfilter/types";
import { UNKNOWN, containsUnknown } from "./unknown";

/** Wraps a schema so that a value that is not known yet (preview) passes unchanged. */
export function orUnknown<T extends z.ZodType>(schema: T): z.ZodType<z.output<T> | typeof UNKNOWN> {
  return z.unknown().transform((value, ctx) => {
    if (containsUnknown(value)) return value as typeof UNKNOWN;
    const result = schema.safeParse(value);
    if (result.success) return result.data as z.output<T>;
    for (const issue of result.error.issues) {
      ctx.addIssue({ code: "custom", message: issue.message, path: issue.path, input: value });
    }
    return z.NEVER;
  }) as unknown as z.ZodType<z.output<T> | typeof UNKNOWN>;
}

export const familySchema = z.enum(FAMILIES, { error: `use "ipv4" or "ipv6"` });

export const tableSchema = z.enum(TABLES, { error: `use one of ${TABLES.join(", ")}` });

export const orderSchema = z
  .number({ error: `use an integer from ${MIN_ORDER} to ${MAX_ORDER}` })
  .int({ error: `use an integer from ${MIN_ORDER} to ${MAX_ORDER}` })
  .min(MIN_ORDER, { error: `use an integer from ${MIN_ORDER} to ${MAX_ORDER}` })
  .max(MAX_ORDER, { error: `use an integer from ${MIN_ORDER} to ${MAX_ORDER}` });

/** Marker ids as marker.ts accepts them. */
export const markerIdSchema = z
  .string({ error: 'use 1 to 200 letters, digits, "_", ".", "/" or "-"' })
  .regex(/^[A-Za-z0-9_./-]{1,200}$/, {
    error: 'use 1 to 200 letters, digits, "_", ".", "/" or "-"',
  });

/**
 * Maximum length of a chain name: XT_EXTENSION_MAXNAMELEN (29) less the terminating NUL.
 * iptables 1.8.9 rejects longer ones with "chain name ... too long (must be under 29 chars)".
 */
export const MAX_CHAIN_NAME_LENGTH = 28;

const CHAIN_FIX =
  `use 1 to ${MAX_CHAIN_NAME_LENGTH} letters, digits or "_", "-", ".", ":", "+", "@", ` +
  `not starting with "-"`;

/**
 * A chain name: built-in or user-defined. iptables also allows other punctuation, but these
 * characters are the ones iptables-save prints without quotes in every position.
 */
export const chainNameSchema = z
  .string({ error: CHAIN_FIX })
  .regex(/^[A-Za-z0-9_.:+@][A-Za-z0-9_.:+@-]*$/, { error: CHAIN_FIX })
  .max(MAX_CHAIN_NAME_LENGTH, {
    error: (issue) =>
      `a chain name has at most ${MAX_CHAIN_NAME_LENGTH} characters, this one has ` +
      `${String((issue.input as string).length)}`,
  });

/** Verdicts and the target extensions of iptables 1.8.9: `iptables -N` rejects them as chain names. */
export const TARGET_NAMES: ReadonlySet<string> = new Set([
  "ACCEPT", "DROP", "QUEUE", "RETURN", "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNMARK",
  "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "ECN", "HL", "HMARK", "IDLETIMER", "LED", "LOG",
  "MARK", "MASQUERADE", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST", "REDIRECT", "REJECT",
  "SECMARK", "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS", "TPROXY",
  "TRACE", "TTL", "ULOG",
]); // prettier-ignore

/**
 * Maximum length of a hashlimit name. Hashlimit revisions 2 and 3 take names of up to 254
 * characters (iptables 1.8.9 on a current kernel accepted them in the lab), but revision 1
 * stores the name in IFNAMSIZ (16) bytes, so 15 characters work on every host of a mixed fleet.
 */
export const MAX_HASHLIMIT_NAME_LENGTH = 15;

const HASHLIMIT_NAME_FIX =
  `use 1 to ${MAX_HASHLIMIT_NAME_LENGTH} letters, digits, "_", "-" or ".", starting with a ` +
  `letter or digit (the name becomes a file under /proc/net, so "/" is not allowed)`;

export const hashlimitNameSchema = z
  .string({ error: HASHLIMIT_NAME_FIX })
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, { error: HASHLIMIT_NAME_FIX })
  .max(MAX_HASHLIMIT_NAME_LENGTH, { error: HASHLIMIT_NAME_FIX });

const RATE_FIX = 'use a count per second, minute, hour or day, such as "50/sec" or "3000/minute"';

/** Schema of a packet rate for `--limit`: "50/sec", "50/s", "3000/minute", "7/hour", "1/day". */
export const packetRateSchema = z.string({ error: RATE_FIX }).superRefine((value, ctx) => {
  try {
    parsePacketRate("rate", value);
  } catch {
    ctx.addIssue({ code: "custom", message: RATE_FIX, input: value });
  }
});

const HASHLIMIT_RATE_FIX =
  'use packets per second, minute, hour or day ("50/sec", "3000/minute"), or bytes per ' +
  'second ("512kb/s", "1mb/s", "100b/s")';

/** A hashlimit rate: a packet rate, or a byte rate such as "512kb/s". */
export const hashlimitRateSchema = z
  .string({ error: HASHLIMIT_RATE_FIX })
  .superRefine((value, ctx) => {
    try {
      if (parseByteRate("rate", value) !== undefined) return;
      parsePacketRate("rate", value);
    } catch {
      ctx.addIssue({ code: "custom", message: HASHLIMIT_RATE_FIX, input: value });
    }
  });

/** `--hashlimit-burst`: 1 to 1000000 (libxt_hashlimit's range for packet rates). */
export const hashlimitBurstSchema = integer(1, 1_000_000);

/** `--limit-burst`: 1 to 10000 (libxt_limit accepts 0, which the kernel treats as 1). */
export const limitBurstSchema = integer(1, 10_000);

export const HASHLIMIT_MODES = ["srcip", "srcport", "dstip", "dstport"] as const;

/** `--hashlimit-mode`: a non-empty set, normalised to the order iptables-save prints. */
export const hashlimitModeSchema = z
  .array(z.enum(HASHLIMIT_MODES, { error: `use ${HASHLIMIT_MODES.join(", ")}` }), {
    error: `use a list of ${HASHLIMIT_MODES.join(", ")}`,
  })
  .min(1, { error: `use at least one of ${HASHLIMIT_MODES.join(", ")}` })
  .transform((modes) => HASHLIMIT_MODES.filter((mode) => modes.includes(mode)));

/** A prefix length for `--hashlimit-srcmask`/`--hashlimit-dstmask`; the family bound is checked later. */
export const maskSchema = integer(0, 128);

/** Sizes and times of the hashlimit table: positive 32-bit integers. */
export const positiveIntegerSchema = integer(1, 0x7fff_ffff);

// eslint-disable-next-line no-control-regex -- the point is to find control characters
const NO_CONTROL_CHARACTERS = /^[^\u0000-\u001f\u007f]*$/;

/** `--log-prefix`: at most 29 characters (the kernel's 30-byte prefix less the NUL). */
export const MAX_LOG_PREFIX_LENGTH = 29;

export const logPrefixSchema = z
  .string({ error: `use 1 to ${MAX_LOG_PREFIX_LENGTH} printable characters` })
  .min(1, { error: `use 1 to ${MAX_LOG_PREFIX_LENGTH} printable characters` })
  .max(MAX_LOG_PREFIX_LENGTH, {
    error: (issue) =>
      `a LOG prefix has at most ${MAX_LOG_PREFIX_LENGTH} characters, this one has ` +
      `${String((issue.input as string).length)}`,
  })
  .regex(NO_CONTROL_CHARACTERS, { error: "remove the control characters" });

const LOG_LEVELS: Readonly<Record<string, number>> = {
  emerg: 0,
  alert: 1,
  crit: 2,
  error: 3,
  err: 3,
  warning: 4,
  warn: 4,
  notice: 5,
  info: 6,
  debug: 7,
};

const LOG_LEVEL_FIX = "use 0 to 7, or emerg, alert, crit, error, warning, notice, info or debug";

/** `--log-level`, normalised to the number iptables-save prints. */
export const logLevelSchema = z
  .union([z.number(), z.string()], { error: LOG_LEVEL_FIX })
  .transform((value, ctx) => {
    const level =
      typeof value === "number" ? value : (LOG_LEVELS[value.toLowerCase()] ?? Number(value));
    if (!Number.isInteger(level) || level < 0 || level > 7) {
      ctx.addIssue({ code: "custom", message: LOG_LEVEL_FIX, input: value });
      return z.NEVER;
    }
    return level;
  });

/** `--comment`: at most 255 characters (XT_MAX_COMMENT_LEN is 256 with the NUL). */
export const MAX_COMMENT_LENGTH = 255;

export const commentSchema = z
  .string({ error: `use 1 to ${MAX_COMMENT_LENGTH} printable characters` })
  .min(1, { error: `use 1 to ${MAX_COMMENT_LENGTH} printable characters` })
  .max(MAX_COMMENT_LENGTH, {
    error: (issue) =>
      `a comment has at most ${MAX_COMMENT_LENGTH} characters, this one has ` +
      `${String((issue.input as string).length)}`,
  })
  .regex(NO_CONTROL_CHARACTERS, { error: "remove the control characters" })
  .refine((text) => !text.startsWith("pulumi-iptables:"), {
    error: 'comments starting with "pulumi-iptables:" are reserved for the rule marker',
  });

/** Connection states of the conntrack match, in the order iptables-save prints them. */
export const CTSTATES = [
  "INVALID",
  "NEW",
  "RELATED",
  "ESTABLISHED",
  "UNTRACKED",
  "SNAT",
  "DNAT",
] as const;

export const ctstateSchema = z
  .array(z.string(), { error: `use a list of ${CTSTATES.join(", ")}` })
  .min(1, { error: `use at least one of ${CTSTATES.join(", ")}` })
  .transform((states, ctx) => {
    const upper = states.map((state) => state.toUpperCase());
    const bad = upper.find((state) => !(CTSTATES as readonly string[]).includes(state));
    if (bad !== undefined) {
      ctx.addIssue({ code: "custom", message: `use ${CTSTATES.join(", ")}`, input: states });
      return z.NEVER;
    }
    return CTSTATES.filter((state) => upper.includes(state));
  });

const PROTOCOLS = [
  "tcp", "udp", "udplite", "icmp", "icmpv6", "esp", "ah", "sctp", "mh", "gre", "dccp", "all",
]; // prettier-ignore

const PROTOCOL_FIX = `use ${PROTOCOLS.join(", ")} or a number from 0 to 255, optionally after "!"`;

/** `-p`: a protocol name or number, lower case, optionally negated with a leading "!". */
export const protocolSchema = z.string({ error: PROTOCOL_FIX }).transform((value, ctx) => {
  const match = /^(!\s*)?([A-Za-z0-9-]+)$/.exec(value.trim());
  const name = match?.[2].toLowerCase();
  const known =
    name !== undefined &&
    (PROTOCOLS.includes(name) ||
      name === "ipv6-icmp" ||
      (/^\d{1,3}$/.test(name) && Number(name) <= 255));
  if (!known) {
    ctx.addIssue({ code: "custom", message: PROTOCOL_FIX, input: value });
    return z.NEVER;
  }
  const canonical = name === "ipv6-icmp" ? "icmpv6" : name;
  return match?.[1] ? `!${canonical}` : canonical;
});

const PORT_FIX =
  'use port numbers from 0 to 65535 or ranges such as "1024:65535", at most 15 ports';

/** Ports for `--dport`/`--dports`: numbers or "low:high" ranges, in ascending order, at most 15. */
export const portsSchema = z
  .array(z.union([z.number(), z.string()]), { error: PORT_FIX })
  .min(1, { error: PORT_FIX })
  .transform((ports, ctx) => {
    const out: (number | string)[] = [];
    let slots = 0;
    for (const port of ports) {
      const parsed = parsePort(port);
      if (parsed === undefined) {
        ctx.addIssue({ code: "custom", message: PORT_FIX, input: port });
        return z.NEVER;
      }
      slots += typeof parsed === "string" ? 2 : 1;
      if (!out.includes(parsed)) out.push(parsed);
    }
    // The multiport match has room for 15 ports (XT_MULTI_PORTS), and a range takes two.
    if (slots > 15) {
      ctx.addIssue({ code: "custom", message: PORT_FIX, input: ports });
      return z.NEVER;
    }
    return out.sort((a, b) => portStart(a) - portStart(b));
  });

function parsePort(port: number | string): number | string | undefined {
  if (typeof port === "number")
    return Number.isInteger(port) && port >= 0 && port <= 65535 ? port : undefined;
  const range = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(port.trim());
  if (range === null) return undefined;
  const low = Number(range[1]);
  const high = range[2] === undefined ? low : Number(range[2]);
  if (low > 65535 || high > 65535 || low > high) return undefined;
  return low === high ? low : `${low}:${high}`;
}

function portStart(port: number | string): number {
  return typeof port === "number" ? port : Number(port.split(":")[0]);
}

const INTERFACE_FIX =
  'use an interface name of 1 to 15 characters, optionally ending in "+" (a prefix match) and ' +
  'optionally after "!"';

/** `-i`/`-o`: an interface name (at most IFNAMSIZ - 1 = 15 characters) or prefix with "+". */
export const interfaceSchema = z
  .string({ error: INTERFACE_FIX })
  .regex(/^(!\s*)?[A-Za-z0-9_.:@-]{1,15}\+?$/, { error: INTERFACE_FIX })
  .transform((value) => value.replace(/^!\s*/, "!"));

/**
 * Builds the schema of an address or network for `-s`/`-d` in the given family, optionally
 * negated with a leading "!". It normalises the value as iptables-save prints it: the network
 * address and the prefix length.
 */
export function addressSchema(family: Family): z.ZodType<string> {
  const bits = family === "ipv4" ? 32 : 128;
  const fix =
    family === "ipv4"
      ? 'use an IPv4 address or network such as "192.0.2.9" or "198.51.100.0/24"'
      : 'use an IPv6 address or network such as "2001:db8::1" or "2001:db8::/32"';
  return z.string({ error: fix }).transform((value, ctx) => {
    const match = /^(!\s*)?([^/\s]+)(?:\/(\d{1,3}))?$/.exec(value.trim());
    const address = match === null ? undefined : parseAddress(match[2], family);
    const length = match?.[3] === undefined ? bits : Number(match[3]);
    if (match === null || address === undefined || length > bits) {
      ctx.addIssue({ code: "custom", message: fix, input: value });
      return z.NEVER;
    }
    const mask = prefixMask(length, family);
    const network = formatNetwork(applyMask(address, mask), mask);
    return match[1] ? `!${network}` : network;
  });
}

/** REJECT types per family (`--reject-with`), as libipt_REJECT and libip6t_REJECT name them. */
export const REJECT_TYPES: Readonly<Record<Family, readonly string[]>> = {
  ipv4: [
    "icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable",
    "icmp-proto-unreachable", "icmp-net-prohibited", "icmp-host-prohibited",
    "icmp-admin-prohibited", "tcp-reset",
  ],
  ipv6: [
    "icmp6-no-route", "icmp6-adm-prohibited", "icmp6-addr-unreachable", "icmp6-port-unreachable",
    "icmp6-policy-fail", "icmp6-reject-route", "tcp-reset",
  ],
}; // prettier-ignore

/** The short aliases iptables also accepts, mapped to the names iptables-save prints. */
const REJECT_ALIASES: Readonly<Record<Family, Readonly<Record<string, string>>>> = {
  ipv4: {
    "net-unreach": "icmp-net-unreachable",
    "host-unreach": "icmp-host-unreachable",
    "port-unreach": "icmp-port-unreachable",
    "proto-unreach": "icmp-proto-unreachable",
    "net-prohib": "icmp-net-prohibited",
    "host-prohib": "icmp-host-prohibited",
    "admin-prohib": "icmp-admin-prohibited",
    "tcp-rst": "tcp-reset",
  },
  ipv6: {
    "no-route": "icmp6-no-route",
    "adm-prohibited": "icmp6-adm-prohibited",
    "addr-unreach": "icmp6-addr-unreachable",
    "port-unreach": "icmp6-port-unreachable",
    "policy-fail": "icmp6-policy-fail",
    "reject-route": "icmp6-reject-route",
    "tcp-rst": "tcp-reset",
  },
};

/** Normalises a REJECT type for the family, or returns undefined when the family has no such type. */
export function rejectType(value: string, family: Family): string | undefined {
  const lower = value.toLowerCase();
  if (REJECT_TYPES[family].includes(lower)) return lower;
  return REJECT_ALIASES[family][lower];
}

function integer(min: number, max: number): z.ZodNumber {
  const fix = `use an integer from ${min} to ${max}`;
  return z
    .number({ error: fix })
    .int({ error: fix })
    .min(min, { error: fix })
    .max(max, { error: fix });
}
