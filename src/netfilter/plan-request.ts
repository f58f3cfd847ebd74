/**
 * Checking and normalising the planner's input: chain names as iptables accepts them, and
 * desired rules whose line must agree with their chain and marker.
 */
import { IptablesError, quoteForMessage } from "../errors";
import { ruleMarker } from "./managed";
import { compareMarkers, validateMarker } from "./marker";
import { parseSave } from "./parse";
import type { DesiredRule, PlanOptions, TableChange } from "./plan";
import { BUILTIN_CHAINS, TABLES, type SaveRule, type SaveTable, type TableName } from "./types";

/** A desired rule with its line split into arguments. */
export interface ParsedDesired {
  readonly rule: DesiredRule;
  readonly args: readonly string[];
  /** The line after `-A CHAIN`, starting with a space. */
  readonly body: string;
}

export interface PlanRequest {
  readonly table: TableName;
  readonly createChains: readonly string[];
  readonly deleteChains: readonly string[];
  readonly purge: ReadonlySet<string>;
  /** Sorted by marker. */
  readonly upserts: readonly ParsedDesired[];
  readonly upsertById: ReadonlyMap<string, ParsedDesired>;
  readonly deleteIds: ReadonlySet<string>;
  readonly sameRule: (live: SaveRule, desired: DesiredRule) => boolean;
}

/**
 * The maximum chain name length iptables accepts: XT_EXTENSION_MAXNAMELEN (29, in the kernel's
 * linux/netfilter/x_tables.h) less the terminating NUL.
 */
export const MAX_CHAIN_NAME_LENGTH = 28;

/**
 * Target names that `iptables -N` 1.8.9 rejects as chain names ("chain name may not clash with
 * target name"): the four verdicts, "standard" (the
 * extension name of the verdict target, libxt_standard)
 * and the target extensions iptables 1.8.9 ships. The set covers both families, so a name that
 * only ip6tables rejects (such as "DNPT") or only iptables rejects (such as "TTL") is rejected
 * for both, and one chain name works in both families. The planner's lab test checks each name
 * against iptables and ip6tables on both backends.
 */
export const RESERVED_CHAIN_NAMES: ReadonlySet<string> = new Set([
  "ACCEPT", "DROP", "QUEUE", "RETURN", "standard", "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP",
  "CONNMARK", "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "ECN", "HL", "HMARK", "IDLETIMER",
  "LED", "LOG", "MARK", "MASQUERADE", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST",
  "REDIRECT", "REJECT", "SECMARK", "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP",
  "TEE", "TOS", "TPROXY", "TRACE", "TTL", "ULOG",
]); // prettier-ignore

/**
 * Checks a chain name as `iptables -N` does and raises INVALID_INPUT naming `field` when
 * iptables would reject it, or when the name cannot be written unquoted in a restore script.
 */
export function validateChainName(name: unknown, field: string): asserts name is string {
  const fail = (problem: string): never => {
    throw new IptablesError(
      "INVALID_INPUT",
      `${field} ${typeof name === "string" ? quoteForMessage(name) : String(name)} is invalid: ` +
        `${problem}`,
      { details: { field, value: name } },
    );
  };
  if (typeof name !== "string" || name.length === 0) fail("a chain name is a non-empty string");
  const text = name as string;
  if (text.length > MAX_CHAIN_NAME_LENGTH) {
    fail(
      `a chain name has at most ${MAX_CHAIN_NAME_LENGTH} characters, this one has ${text.length}`,
    );
  }
  if (text.startsWith("-") || text.startsWith("!"))
    fail('a chain name must not start with "-" or "!"');
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f"]/.test(text)) {
    fail("a chain name must not contain whitespace, control characters or double quotes");
  }
}

export function normalizeRequest(
  live: SaveTable | undefined,
  change: TableChange,
  options: PlanOptions,
): PlanRequest {
  const table = options.table;
  if (!TABLES.includes(table)) {
    throw invalid("table", table, `use one of ${TABLES.join(", ")}`);
  }
  if (live !== undefined && live.name !== table) {
    throw invalid("live", live.name, `the live table must be the "${table}" table that is planned`);
  }

  const builtins = new Set(BUILTIN_CHAINS[table]);
  const newChains = change.newChains ?? [];
  checkNewChains(live, newChains);
  const createChains = uniqueSorted([...(change.createChains ?? []), ...newChains], "createChains");
  const deleteChains = uniqueSorted(change.deleteChains ?? [], "deleteChains");
  for (const name of uniqueSorted(change.requireChains ?? [], "requireChains")) {
    const present =
      BUILTIN_CHAINS[table].includes(name) ||
      createChains.includes(name) ||
      (live?.chains.some((chain) => chain.name === name) ?? false);
    if (present) continue;
    throw new IptablesError(
      "PLAN_CONFLICT",
      `chain ${quoteForMessage(name)} does not exist in the ${table} table on the host, and the ` +
        "change needs it. Create it first (with a Chain resource, or by starting the tool that " +
        "owns it, such as Docker for DOCKER-USER), or use an existing chain",
      { details: { chain: name, missing: true } },
    );
  }
  const purgeChains = uniqueSorted(change.purgeUnmanaged ?? [], "purgeUnmanaged");
  for (const name of createChains) {
    if (builtins.has(name))
      throw invalid("createChains", name, `it is a built-in chain of the ${table} table`);
    if (RESERVED_CHAIN_NAMES.has(name))
      throw invalid(
        "createChains",
        name,
        "iptables rejects chain names that clash with target names; choose another name",
      );
  }
  for (const name of deleteChains) {
    if (builtins.has(name))
      throw invalid("deleteChains", name, "built-in chains cannot be deleted");
    if (createChains.includes(name))
      throw invalid("deleteChains", name, "the chain is also in createChains");
  }
  for (const name of purgeChains) {
    if (builtins.has(name)) {
      throw invalid(
        "purgeUnmanaged",
        name,
        "foreign rules are purged only from user chains, never from built-in chains",
      );
    }
  }

  const deleteIds = new Set<string>();
  for (const id of change.deleteRules ?? []) {
    validateMarker({ id, order: 0 });
    deleteIds.add(id);
  }

  const upserts = (change.upsertRules ?? []).map((rule) => parseDesired(rule, table));
  const upsertById = new Map<string, ParsedDesired>();
  for (const desired of upserts) {
    const { id } = desired.rule.marker;
    if (upsertById.has(id)) throw invalid("upsertRules", id, "each marker id may appear once");
    if (deleteIds.has(id)) throw invalid("upsertRules", id, "the id is also in deleteRules");
    if (deleteChains.includes(desired.rule.chain)) {
      throw invalid("upsertRules", id, `its chain "${desired.rule.chain}" is in deleteChains`);
    }
    upsertById.set(id, desired);
  }
  upserts.sort((a, b) => compareMarkers(a.rule.marker, b.rule.marker));
  const sameRule = options.sameRule ?? ((liveRule, desired) => liveRule.text === desired.line);
  if (live !== undefined) checkCreatedAreNew(live, upserts, sameRule);

  return {
    table,
    createChains,
    deleteChains,
    purge: new Set(purgeChains),
    upserts,
    upsertById,
    deleteIds,
    sameRule,
  };
}

/**
 * Raises PLAN_CONFLICT when a rule marked `create` finds its marker id on a live rule that is
 * not the same rule: another resource or stack owns that rule.
 */
function checkCreatedAreNew(
  live: SaveTable,
  upserts: readonly ParsedDesired[],
  sameRule: (live: SaveRule, desired: DesiredRule) => boolean,
): void {
  const created = new Map(
    upserts.filter((u) => u.rule.create === true).map((u) => [u.rule.marker.id, u.rule]),
  );
  if (created.size === 0) return;

  for (const rule of live.rules) {
    const id = ruleMarker(rule)?.id;
    const desired = id === undefined ? undefined : created.get(id);
    if (desired === undefined || sameRule(rule, desired)) continue;
    throw new IptablesError(
      "PLAN_CONFLICT",
      `rule ${quoteForMessage(desired.marker.id)}: the ${live.name} table already has a ` +
        `different rule with this marker id (${quoteForMessage(rule.text, 200)}), so another ` +
        "resource or stack owns it; nothing was changed. Give this resource another name or " +
        "markerId, or set adopt: true to take the rule over",
      { details: { markerId: desired.marker.id, live: rule.text } },
    );
  }
}

/** Raises PLAN_CONFLICT for a new chain that exists already or is named twice. */
function checkNewChains(live: SaveTable | undefined, names: readonly string[]): void {
  for (const [index, name] of names.entries()) {
    validateChainName(name, "newChains");
    const exists = live?.chains.some((chain) => chain.name === name) ?? false;
    if (!exists && names.indexOf(name) === index) continue;
    throw new IptablesError(
      "PLAN_CONFLICT",
      `chain ${quoteForMessage(name)} ${exists ? "already exists" : "is created twice in one change"}` +
        `${live === undefined ? "" : ` in the ${live.name} table`}, so another owner has it`,
      { details: { chain: name, exists } },
    );
  }
}

function uniqueSorted(names: readonly string[], field: string): string[] {
  for (const name of names) validateChainName(name, field);
  return [...new Set(names)].sort(compareText);
}

/** Checks a desired rule and splits its line as iptables-restore would. */
function parseDesired(rule: DesiredRule, table: TableName): ParsedDesired {
  if (
    typeof rule !== "object" ||
    rule === null ||
    typeof rule.marker !== "object" ||
    rule.marker === null
  ) {
    throw invalid("upsertRules", rule, "each rule has a marker, a chain and a line");
  }
  validateMarker(rule.marker);
  const { id } = rule.marker;
  validateChainName(rule.chain, `chain of rule ${quoteForMessage(id)}`);
  const line = rule.line;
  if (typeof line !== "string" || !line.startsWith("-A ")) {
    throw invalid(
      `line of rule ${quoteForMessage(id)}`,
      line,
      'a rule line starts with "-A CHAIN"',
    );
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(line)) {
    throw invalid(
      `line of rule ${quoteForMessage(id)}`,
      line,
      "a rule line is one line without control characters",
    );
  }

  // Parsing the line as a one-rule dump splits it with the same quoting rules as live rules.
  const policy = BUILTIN_CHAINS[table].includes(rule.chain) ? "ACCEPT" : "-";
  let parsed: SaveRule;
  try {
    const dump = parseSave(`*${table}\n:${rule.chain} ${policy} [0:0]\n${line}\nCOMMIT\n`);
    parsed = dump.tables[0].rules[0];
  } catch (error) {
    throw new IptablesError(
      "INVALID_INPUT",
      `line of rule ${quoteForMessage(id)} is invalid: ${quoteForMessage(line)} does not ` +
        `append to chain "${rule.chain}" or is not a rule iptables-save could print ` +
        `(${(error as Error).message})`,
      { cause: error, details: { field: "line", value: line, markerId: id } },
    );
  }

  if (parsed.chain !== rule.chain || !line.startsWith(`-A ${rule.chain} `)) {
    throw invalid(
      `line of rule ${quoteForMessage(id)}`,
      line,
      `the line must start with "-A ${rule.chain} ", the rule's chain, written as iptables-save prints it`,
    );
  }
  const marker = ruleMarker(parsed);
  if (marker === undefined || marker.id !== id || marker.order !== rule.marker.order) {
    throw invalid(
      `line of rule ${quoteForMessage(id)}`,
      line,
      `the line must carry the rule's marker as -m comment --comment ` +
        `"pulumi-iptables:${id}:${rule.marker.order}"`,
    );
  }
  return { rule, args: parsed.args, body: line.slice(`-A ${rule.chain}`.length) };
}

function invalid(field: string, value: unknown, problem: string): IptablesError {
  const shown = typeof value === "string" ? quoteForMessage(value) : String(value);
  return new IptablesError("INVALID_INPUT", `${field} ${shown} is invalid: ${problem}`, {
    details: { field, value },
  });
}

function compareText(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}
