/**
 * The rules file: the managed rules of one address family as an `iptables-restore` input.
 *
 * The file is rendered from the desired rules, never from a dump of the live tables, so it holds
 * only what this library manages: the user chains it owns (created with `-N`), their rules, and
 * its rules in built-in chains. Rules of Docker, fail2ban or an administrator are never captured,
 * so a boot never restores stale copies of them. Rendering the same input twice gives the same
 * bytes: tables, chains and rules are sorted and the file has no timestamp.
 *
 * On empty tables (at boot) the file is a complete restore input. On live tables the restore
 * script makes it idempotent and places the rules as the planner does (see restore-script.ts).
 */
import { IptablesError, quoteForMessage } from "../errors";
import { compareMarkers, formatMarker, parseMarker, type Marker } from "../netfilter/marker";
import { splitArgs } from "../netfilter/tokenize";
import { BUILTIN_CHAINS, TABLES, type Family, type TableName } from "../netfilter/types";

/** One managed rule to persist. The planner's `DesiredRule` has this shape. */
export interface PersistedRule {
  readonly marker: Marker;
  readonly chain: string;
  /** The canonical `-A CHAIN ...` line, with the marker as its last `--comment`. */
  readonly line: string;
}

/** The managed chains and rules of one table. */
export interface PersistedTable {
  readonly table: TableName;
  /** User chains this library owns in the table. The file creates each one, even when empty. */
  readonly ownedChains: readonly string[];
  readonly rules: readonly PersistedRule[];
}

/** A managed rule that the file leaves out, and why. */
export interface SkippedRule {
  readonly table: TableName;
  readonly chain: string;
  readonly markerId: string;
  readonly reason: string;
}

export interface RulesFile {
  /** The file content; a file without tables is only its header. */
  readonly content: string;
  /** Managed rules the file cannot restore at boot; the caller reports them as warnings. */
  readonly skipped: readonly SkippedRule[];
  /** The tables the file contains, in file order. */
  readonly tables: readonly TableName[];
}

/**
 * iptables limits chain names to 28 characters (XT_EXTENSION_MAXNAMELEN less the NUL). The
 * characters are limited further here to what every tool in the boot path reads as one word.
 */
const CHAIN_NAME = /^[A-Za-z0-9_.:+@%=~^-]{1,28}$/;

/**
 * Renders the rules file of one family.
 *
 * Several entries for one table are merged. A rule in a user chain that this library does not
 * own (Docker's DOCKER-USER, say) is left out and listed in `skipped`, because that chain does
 * not exist when the file is applied at boot and the whole table would fail to load.
 *
 * Throws INVALID_INPUT when a chain name is invalid, an owned chain has a built-in name, a line
 * does not start with `-A CHAIN` or does not carry its marker, or two rules of one table share a
 * marker id.
 */
export function renderRulesFile(family: Family, tables: readonly PersistedTable[]): RulesFile {
  const merged = mergeTables(tables);
  const skipped: SkippedRule[] = [];
  const sections: string[] = [];
  const rendered: TableName[] = [];

  for (const table of TABLES) {
    const entry = merged.get(table);
    if (entry === undefined) continue;
    const builtins = BUILTIN_CHAINS[table];
    const owned = [...entry.ownedChains].sort(compareText);
    for (const chain of owned) checkOwnedChain(table, chain, builtins);

    const kept: PersistedRule[] = [];
    const seenIds = new Map<string, string>();
    for (const rule of entry.rules) {
      checkRule(table, rule);
      const earlier = seenIds.get(rule.marker.id);
      if (earlier !== undefined) {
        throw new IptablesError(
          "INVALID_INPUT",
          `two persisted rules of the ${table} table share the marker id ` +
            `${quoteForMessage(rule.marker.id)} (chains ${earlier} and ${rule.chain}): ` +
            `give every managed rule of a table its own id`,
          { details: { field: "rules", table, markerId: rule.marker.id } },
        );
      }
      seenIds.set(rule.marker.id, rule.chain);
      if (builtins.includes(rule.chain) || entry.ownedChains.has(rule.chain)) {
        kept.push(rule);
      } else {
        skipped.push({
          table,
          chain: rule.chain,
          markerId: rule.marker.id,
          reason:
            `chain ${rule.chain} is neither built in nor owned by pulumi-iptables, so it does ` +
            `not exist when the rules are restored at boot`,
        });
      }
    }
    if (owned.length === 0 && kept.length === 0) continue;

    const chainOrder = [...builtins, ...owned];
    kept.sort(
      (a, b) =>
        chainOrder.indexOf(a.chain) - chainOrder.indexOf(b.chain) ||
        compareMarkers(a.marker, b.marker),
    );
    sections.push(
      [
        `*${table}`,
        ...owned.map((chain) => `-N ${chain}`),
        ...kept.map((rule) => rule.line),
        "COMMIT",
      ]
        .map((line) => `${line}\n`)
        .join(""),
    );
    rendered.push(table);
  }

  return { content: header(family) + sections.join(""), skipped, tables: rendered };
}

function header(family: Family): string {
  const name = family === "ipv4" ? "IPv4" : "IPv6";
  return (
    `# ${name} rules managed by pulumi-iptables, rendered from the desired rules.\n` +
    `# restore.sh in this folder applies it at boot; the next pulumi up overwrites it.\n`
  );
}

interface MergedTable {
  readonly ownedChains: Set<string>;
  readonly rules: PersistedRule[];
}

function mergeTables(tables: readonly PersistedTable[]): Map<TableName, MergedTable> {
  const merged = new Map<TableName, MergedTable>();
  for (const entry of tables) {
    if (!TABLES.includes(entry.table)) {
      throw new IptablesError(
        "INVALID_INPUT",
        `table ${quoteForMessage(entry.table)} is invalid: use one of ${TABLES.join(", ")}`,
        { details: { field: "table", value: entry.table } },
      );
    }
    let target = merged.get(entry.table);
    if (target === undefined) {
      target = { ownedChains: new Set(), rules: [] };
      merged.set(entry.table, target);
    }
    for (const chain of entry.ownedChains) target.ownedChains.add(chain);
    target.rules.push(...entry.rules);
  }
  return merged;
}

function checkOwnedChain(table: TableName, chain: string, builtins: readonly string[]): void {
  checkChainName(table, chain);
  if (builtins.includes(chain)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `owned chain ${chain} of the ${table} table is a built-in chain: list only user chains ` +
        `that pulumi-iptables creates`,
      { details: { field: "ownedChains", table, value: chain } },
    );
  }
}

function checkChainName(table: TableName, chain: string): void {
  if (!CHAIN_NAME.test(chain) || chain.startsWith("-") || chain.startsWith("!")) {
    throw new IptablesError(
      "INVALID_INPUT",
      `chain name ${quoteForMessage(chain)} of the ${table} table is invalid: use 1 to 28 ` +
        `letters, digits and punctuation without spaces or quotes, not starting with "-" or "!"`,
      { details: { field: "chain", table, value: chain } },
    );
  }
}

function checkRule(table: TableName, rule: PersistedRule): void {
  checkChainName(table, rule.chain);
  const invalid = (problem: string): IptablesError =>
    new IptablesError(
      "INVALID_INPUT",
      `persisted rule ${quoteForMessage(rule.marker.id)} of the ${table} table is invalid: ` +
        `${problem}; line ${quoteForMessage(rule.line)}`,
      { details: { field: "rules", table, markerId: rule.marker.id } },
    );

  if (/[\r\n]/.test(rule.line)) throw invalid("the line contains a line break");
  if (!rule.line.startsWith(`-A ${rule.chain} `)) {
    throw invalid(`the line does not start with "-A ${rule.chain} "`);
  }
  const marker = lastMarker(splitArgs(rule.line));
  if (marker === undefined || compareMarkers(marker, rule.marker) !== 0) {
    throw invalid(`the line does not carry the marker comment "${formatMarker(rule.marker)}"`);
  }
}

/** Finds the last `--comment` value that parses as a marker: the library writes its marker last. */
function lastMarker(args: readonly string[]): Marker | undefined {
  for (let index = args.length - 2; index >= 0; index--) {
    if (args[index] !== "--comment") continue;
    const marker = parseMarker(args[index + 1]);
    if (marker !== undefined) return marker;
  }
  return undefined;
}

/** Orders by UTF-16 code units, so the file does not depend on the machine's locale. */
function compareText(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}
