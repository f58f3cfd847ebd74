/**
 * check() of `Rule` and `HashlimitRule`: validation of every input before any host is
 * contacted, normalisation, and the predicted canonical line put into the inputs as `rule`.
 */
import { z } from "zod";
import { canonicalRule } from "../netfilter/canonical";
import { BUILTIN_CHAINS, type Family, type TableName } from "../netfilter/types";
import { checkConnection } from "./connection";
import {
  addressSchema,
  chainNameSchema,
  commentSchema,
  ctstateSchema,
  familySchema,
  hashlimitBurstSchema,
  hashlimitModeSchema,
  hashlimitNameSchema,
  hashlimitRateSchema,
  interfaceSchema,
  limitBurstSchema,
  logLevelSchema,
  logPrefixSchema,
  markerIdSchema,
  maskSchema,
  orderSchema,
  orUnknown,
  packetRateSchema,
  portsSchema,
  positiveIntegerSchema,
  protocolSchema,
  rejectType,
  tableSchema,
  TARGET_NAMES,
} from "./fields";
import { errorFailure, invalid, zodFailures, type CheckFailure } from "./failures";
import {
  joinRawArgs,
  PORT_PROTOCOLS,
  rawRuleSpec,
  readCanonical,
  typedRuleSpec,
  type TypedRuleFields,
} from "./rule-spec";
import { UNKNOWN, containsUnknown } from "./unknown";

export type RuleKind = "Rule" | "HashlimitRule";

/** Inputs the SDK adds or the provider computes; never validated as user input. */
const MANAGED_KEYS = ["__provider", "rule"];

/** Inputs every rule resource takes besides its rule fields. */
const PLACEMENT_KEYS = [
  "connection",
  "family",
  "table",
  "chain",
  "order",
  "markerId",
  "adopt",
  "chainTable",
  "chainFamily",
  "jumpTable",
  "jumpFamily",
];

/** Inputs that only carry a `Chain` argument's table and family, for the checks here. */
const CHAIN_ARGUMENT_KEYS = ["chainTable", "chainFamily", "jumpTable", "jumpFamily"];

/** Values of inputs left out, filled in before validation. */
const RULE_DEFAULTS: Readonly<Record<string, unknown>> = {
  family: "ipv4",
  table: "filter",
  order: 0,
};
const HASHLIMIT_RULE_DEFAULTS: Readonly<Record<string, unknown>> = {
  ...RULE_DEFAULTS,
  jump: "ACCEPT",
  mode: ["srcip"],
};

export interface RuleCheckResult {
  readonly inputs: Record<string, unknown>;
  readonly failures: CheckFailure[];
}

/** Validates and normalises the inputs of a rule resource and predicts its canonical line. */
export function checkRule(kind: RuleKind, news: Record<string, unknown>): RuleCheckResult {
  const input: Record<string, unknown> = Object.fromEntries(
    Object.entries(news).filter(([key]) => !MANAGED_KEYS.includes(key) && news[key] !== undefined),
  );
  const failures: CheckFailure[] = [];
  if (!containsUnknown(input.connection)) failures.push(...checkConnection(input.connection));

  const defaults = kind === "Rule" ? RULE_DEFAULTS : HASHLIMIT_RULE_DEFAULTS;
  for (const [key, value] of Object.entries(defaults)) input[key] ??= value;

  const head = z
    .object({ family: orUnknown(familySchema), table: orUnknown(tableSchema) })
    .safeParse({ family: input.family, table: input.table });
  if (!head.success)
    return { inputs: news, failures: [...failures, ...zodFailures(head.error, input)] };
  const { family, table } = head.data;

  const parsed = ruleSchema(kind, family).safeParse(input);
  if (!parsed.success)
    return { inputs: news, failures: [...failures, ...zodFailures(parsed.error, input)] };
  const fields = { ...(parsed.data as Record<string, unknown>), family, table };
  failures.push(...crossFieldFailures(kind, fields));
  if (failures.length > 0) return { inputs: news, failures };

  return predictRule(kind, fields, news);
}

/** Builds the zod schema of a rule resource's inputs for one family. */
function ruleSchema(kind: RuleKind, family: Family | typeof UNKNOWN) {
  const address = family === UNKNOWN ? z.string() : addressSchema(family);
  const common = {
    connection: z.unknown(),
    family: z.unknown(),
    table: z.unknown(),
    chain: orUnknown(chainNameSchema),
    order: orUnknown(orderSchema),
    markerId: orUnknown(markerIdSchema),
    adopt: orUnknown(z.boolean({ error: "use true or false" })).optional(),
    chainTable: z.unknown().optional(),
    chainFamily: z.unknown().optional(),
    jumpTable: z.unknown().optional(),
    jumpFamily: z.unknown().optional(),
    protocol: orUnknown(protocolSchema).optional(),
    source: orUnknown(address).optional(),
    destination: orUnknown(address).optional(),
    inInterface: orUnknown(interfaceSchema).optional(),
    outInterface: orUnknown(interfaceSchema).optional(),
    sourcePorts: orUnknown(portsSchema).optional(),
    destinationPorts: orUnknown(portsSchema).optional(),
    ctstate: orUnknown(ctstateSchema).optional(),
    comment: orUnknown(commentSchema).optional(),
    jump: orUnknown(chainNameSchema).optional(),
    goto: orUnknown(chainNameSchema).optional(),
    rejectWith: orUnknown(
      z.string({ error: "use a REJECT type such as icmp-port-unreachable" }),
    ).optional(),
    logPrefix: orUnknown(logPrefixSchema).optional(),
    logLevel: orUnknown(logLevelSchema).optional(),
  };
  if (kind === "Rule") {
    return z
      .object({
        ...common,
        args: orUnknown(
          z.string({
            error: 'use the rule text after "-A CHAIN", such as "-p tcp --dport 22 -j ACCEPT"',
          }),
        ).optional(),
        limit: orUnknown(packetRateSchema).optional(),
        limitBurst: orUnknown(limitBurstSchema).optional(),
      })
      .strict();
  }
  return z
    .object({
      ...common,
      jump: orUnknown(chainNameSchema),
      hashlimitName: orUnknown(hashlimitNameSchema),
      upto: orUnknown(hashlimitRateSchema).optional(),
      above: orUnknown(hashlimitRateSchema).optional(),
      burst: orUnknown(hashlimitBurstSchema).optional(),
      mode: orUnknown(hashlimitModeSchema),
      srcMask: orUnknown(maskSchema).optional(),
      dstMask: orUnknown(maskSchema).optional(),
      htableSize: orUnknown(positiveIntegerSchema).optional(),
      htableMax: orUnknown(positiveIntegerSchema).optional(),
      htableExpireMs: orUnknown(positiveIntegerSchema).optional(),
      htableGcIntervalMs: orUnknown(positiveIntegerSchema).optional(),
    })
    .strict();
}

/** Checks that need several fields: one failure per invalid field. */
function crossFieldFailures(kind: RuleKind, fields: Record<string, unknown>): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const known = (key: string): boolean =>
    fields[key] !== undefined && !containsUnknown(fields[key]);
  const family = fields.family as Family | typeof UNKNOWN;
  const table = fields.table as TableName | typeof UNKNOWN;
  const jump = fields.jump as string | undefined;
  const protocol = typeof fields.protocol === "string" ? fields.protocol : undefined;

  if (kind === "Rule" && fields.args !== undefined) {
    const typed = Object.keys(fields).filter(
      (key) =>
        !PLACEMENT_KEYS.includes(key) &&
        key !== "args" &&
        key !== "comment" &&
        fields[key] !== undefined,
    );
    if (typed.length > 0) {
      failures.push(
        invalid(
          typed[0],
          fields[typed[0]],
          "give the rule either as args or as typed fields, not both",
        ),
      );
    }
  }
  if (
    kind === "Rule" &&
    fields.args === undefined &&
    fields.jump === undefined &&
    fields.goto === undefined
  ) {
    failures.push(
      invalid(
        "jump",
        undefined,
        'set jump (such as "ACCEPT", "DROP" or a chain name), goto, or args',
      ),
    );
  }
  if (known("jump") && known("goto")) {
    failures.push(invalid("goto", fields.goto, "set either jump or goto, not both"));
  }

  if (family !== UNKNOWN && protocol !== undefined && !containsUnknown(protocol)) {
    const bare = protocol.replace(/^!/, "");
    if (family === "ipv4" && bare === "icmpv6")
      failures.push(invalid("protocol", protocol, 'use "icmp" for ipv4'));
    if (family === "ipv6" && bare === "icmp")
      failures.push(invalid("protocol", protocol, 'use "icmpv6" for ipv6'));
  }
  for (const key of ["sourcePorts", "destinationPorts"]) {
    if (fields[key] === undefined || containsUnknown(fields.protocol)) continue;
    if (protocol === undefined || !PORT_PROTOCOLS.includes(protocol)) {
      failures.push(
        invalid(
          key,
          fields[key],
          `ports need protocol ${PORT_PROTOCOLS.join(", ")} (set protocol)`,
        ),
      );
    }
  }

  for (const key of ["srcMask", "dstMask"]) {
    if (!known(key) || family === UNKNOWN) continue;
    const max = family === "ipv4" ? 32 : 128;
    if ((fields[key] as number) > max) {
      failures.push(
        invalid(key, fields[key], `use a prefix length from 0 to ${max} for ${family}`),
      );
    }
  }
  if (
    known("htableSize") &&
    known("htableMax") &&
    (fields.htableMax as number) < (fields.htableSize as number)
  ) {
    // xt_hashlimit raises such a max to the size without a word (htable_create).
    failures.push(
      invalid(
        "htableMax",
        fields.htableMax,
        `use at least htableSize (${fields.htableSize}), or lower htableSize`,
      ),
    );
  }
  if (kind === "HashlimitRule" && !containsUnknown(fields.upto) && !containsUnknown(fields.above)) {
    if ((fields.upto === undefined) === (fields.above === undefined)) {
      failures.push(
        invalid("upto", fields.upto, 'set exactly one of upto and above, such as upto: "50/sec"'),
      );
    }
  }
  if (kind === "Rule" && fields.limitBurst !== undefined && fields.limit === undefined) {
    failures.push(
      invalid("limitBurst", fields.limitBurst, 'set limit too, such as limit: "1/sec"'),
    );
  }

  if (known("jump") && table !== UNKNOWN && BUILTIN_CHAINS[table].includes(jump!)) {
    failures.push(
      invalid(
        "jump",
        jump,
        "a rule cannot jump to a built-in chain: jump to a user chain or a target",
      ),
    );
  }
  if (known("goto") && TARGET_NAMES.has(fields.goto as string)) {
    failures.push(invalid("goto", fields.goto, "goto takes a user chain; use jump for targets"));
  }
  failures.push(...jumpTableFailures(fields));

  if (known("rejectWith") && family !== UNKNOWN && !containsUnknown(jump)) {
    const type = rejectType(fields.rejectWith as string, family);
    if (jump !== "REJECT") {
      failures.push(invalid("rejectWith", fields.rejectWith, 'rejectWith needs jump: "REJECT"'));
    } else if (type === undefined) {
      const types =
        family === "ipv4"
          ? "icmp-port-unreachable, icmp-host-prohibited, tcp-reset, ..."
          : "icmp6-port-unreachable, icmp6-adm-prohibited, tcp-reset, ...";
      failures.push(
        invalid("rejectWith", fields.rejectWith, `use a REJECT type of ${family}: ${types}`),
      );
    } else if (type === "tcp-reset" && protocol !== "tcp" && !containsUnknown(fields.protocol)) {
      failures.push(invalid("rejectWith", fields.rejectWith, 'tcp-reset needs protocol: "tcp"'));
    } else {
      fields.rejectWith = type;
    }
  }
  for (const key of ["logPrefix", "logLevel"]) {
    if (fields[key] !== undefined && !containsUnknown(jump) && jump !== "LOG") {
      failures.push(invalid(key, fields[key], `${key} needs jump: "LOG"`));
    }
  }
  return failures;
}

/**
 * Checks that a rule lives in, and jumps to, chains of its own table and family only. `Chain`
 * arguments bring their table and family along, so a mismatch fails here, before any host.
 */
function jumpTableFailures(fields: Record<string, unknown>): CheckFailure[] {
  const jumpProperty = fields.jump !== undefined ? "jump" : "goto";
  return [
    ...chainMismatch(
      "chain",
      fields.chain,
      fields.chainTable,
      fields.chainFamily,
      fields,
      "live in",
    ),
    ...chainMismatch(
      jumpProperty,
      fields[jumpProperty],
      fields.jumpTable,
      fields.jumpFamily,
      fields,
      "jump to",
    ),
  ];
}

function chainMismatch(
  property: string,
  chain: unknown,
  chainTable: unknown,
  chainFamily: unknown,
  fields: Record<string, unknown>,
  verb: string,
): CheckFailure[] {
  if (containsUnknown([chain, chainTable, chainFamily, fields.table, fields.family])) return [];
  if (chainTable !== undefined && chainTable !== fields.table) {
    const fix =
      `chain ${String(chain)} is in table ${String(chainTable)} but this rule is in table ` +
      `${String(fields.table)}: a rule can only ${verb} a chain of its own table`;
    return [invalid(property, chain, fix)];
  }
  if (chainFamily !== undefined && chainFamily !== fields.family) {
    const fix =
      `chain ${String(chain)} is an ${String(chainFamily)} chain but this rule is ` +
      `${String(fields.family)}: a rule can only ${verb} a chain of its own family`;
    return [invalid(property, chain, fix)];
  }
  return [];
}

/** Options of the canonical line that normalise typed fields, and how to read their values. */
const CANONICAL_FIELDS: ReadonlyArray<readonly [string, string, "text" | "number" | "list"]> = [
  ["upto", "--hashlimit-upto", "text"],
  ["above", "--hashlimit-above", "text"],
  ["burst", "--hashlimit-burst", "number"],
  ["mode", "--hashlimit-mode", "list"],
  ["srcMask", "--hashlimit-srcmask", "number"],
  ["dstMask", "--hashlimit-dstmask", "number"],
  ["htableSize", "--hashlimit-htable-size", "number"],
  ["htableMax", "--hashlimit-htable-max", "number"],
  ["htableExpireMs", "--hashlimit-htable-expire", "number"],
  ["htableGcIntervalMs", "--hashlimit-htable-gcinterval", "number"],
  ["limit", "--limit", "text"],
  ["limitBurst", "--limit-burst", "number"],
  ["rejectWith", "--reject-with", "text"],
  ["logLevel", "--log-level", "number"],
];

/** Field of each rule option, for the failures that canonicalRule raises. */
const OPTION_FIELDS: Readonly<Record<string, string>> = Object.fromEntries([
  ...CANONICAL_FIELDS.map(([field, option]) => [option, field]),
  ["--hashlimit-name", "hashlimitName"],
  ["--log-prefix", "logPrefix"],
  ["--comment", "comment"],
  ["--ctstate", "ctstate"],
  ["-p", "protocol"],
  ["-s", "source"],
  ["-d", "destination"],
  ["--dport", "destinationPorts"],
  ["--dports", "destinationPorts"],
  ["--sport", "sourcePorts"],
  ["--sports", "sourcePorts"],
]);

/**
 * Writes the rule's spec, canonicalises it as iptables-save would print it, and returns the
 * normalised inputs with `rule`. With a value still unknown (preview), `rule` is unknown too.
 */
function predictRule(
  kind: RuleKind,
  fields: Record<string, unknown>,
  news: Record<string, unknown>,
): RuleCheckResult {
  const normalised: Record<string, unknown> = { ...fields, connection: news.connection };
  for (const key of Object.keys(normalised))
    if (normalised[key] === undefined) delete normalised[key];

  const ruleKeys = Object.keys(normalised).filter(
    (key) => key !== "connection" && !CHAIN_ARGUMENT_KEYS.includes(key),
  );
  if (ruleKeys.some((key) => containsUnknown(normalised[key]))) {
    return { inputs: { ...normalised, rule: UNKNOWN }, failures: [] };
  }

  const marker = { id: fields.markerId as string, order: fields.order as number };
  const chain = fields.chain as string;
  let spec: string;
  try {
    spec =
      kind === "Rule" && fields.args !== undefined
        ? rawRuleSpec(chain, marker, fields.args as string, fields.comment as string | undefined)
        : typedRuleSpec(chain, marker, fields as TypedRuleFields);
  } catch (error) {
    return {
      inputs: news,
      failures: [errorFailure(error, fields.args !== undefined ? "args" : "rule")],
    };
  }

  let rule: string;
  try {
    rule = canonicalRule(spec, {
      family: fields.family as Family,
      table: fields.table as TableName,
      backend: "nft",
    });
  } catch (error) {
    return { inputs: news, failures: [errorFailure(error, failedField(error, fields))] };
  }

  const canonical = readCanonical(rule, marker);
  if (kind === "Rule" && fields.args !== undefined) {
    normalised.args = joinRawArgs(
      canonical.argsWithoutMarker,
      fields.comment as string | undefined,
    );
  } else {
    for (const [field, option, type] of CANONICAL_FIELDS) {
      if (!(field in normalised) && !canonical.values.has(option)) continue;
      const value = canonical.values.get(option);
      if (value === undefined) delete normalised[field];
      else if (type === "number") normalised[field] = Number(value);
      else if (type === "list") normalised[field] = value.split(",");
      else normalised[field] = value;
    }
  }
  return { inputs: { ...normalised, rule }, failures: [] };
}

function failedField(error: unknown, fields: Record<string, unknown>): string {
  if (fields.args !== undefined) return "args";
  const details = (error as { details?: Record<string, unknown> }).details;
  const option = typeof details?.option === "string" ? details.option : undefined;
  return (option !== undefined && OPTION_FIELDS[option]) || "rule";
}
