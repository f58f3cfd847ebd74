/**
 * Reads and writes test/fixtures/rules.txt, the curated table of tricky rule forms.
 *
 * Each row is a block of lines separated from the next by a blank line:
 *
 *     # Why the row exists (one or more comment lines).
 *     in     ipv4 filter
 *     spec   -A INPUT -p tcp --dport 022
 *     nft    -A INPUT -p tcp -m tcp --dport 18
 *     legacy -A INPUT -p tcp -m tcp --dport 18
 *
 * `nft` and `legacy` hold what that backend's iptables-save printed (one line per kernel rule),
 * or "! " and the error iptables printed when it rejected the rule. The recorder
 * (record-rules.ts) writes those lines from a lab host; everything else is written by hand:
 * `code CODE` pins the error code canonicalRule raises for a rejected rule, and
 * `stricter [BACKEND] CODE` marks a rule iptables accepts but canonicalRule deliberately
 * rejects (on that backend only, when one is named).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ErrorCode } from "../../src/errors";
import type { Backend, Family, TableName } from "../../src/netfilter/types";

export const RULES_FIXTURE = join(__dirname, "..", "fixtures", "rules.txt");

/** What one backend did with a row's rule. */
export type BackendOutcome = { readonly lines: readonly string[] } | { readonly error: string };

export interface RuleRow {
  readonly comments: readonly string[];
  readonly family: Family;
  readonly table: TableName;
  readonly spec: string;
  readonly outcomes: Partial<Record<Backend, BackendOutcome>>;
  readonly code?: ErrorCode;
  readonly stricter?: { readonly code: ErrorCode; readonly backend?: Backend };
  /** 1-based line of the row's `spec` line, for failure messages. */
  readonly line: number;
}

/** Parses the fixture text into rows. Throws on a malformed row, naming its line. */
export function parseRuleFixtures(text: string): RuleRow[] {
  const rows: RuleRow[] = [];
  const lines = text.split("\n");
  let block: Array<[number, string]> = [];
  const finishBlock = (): void => {
    if (block.length > 0) rows.push(parseRow(block));
    block = [];
  };
  lines.forEach((line, index) => {
    if (line.trim() === "") finishBlock();
    else block.push([index + 1, line]);
  });
  finishBlock();
  return rows;
}

function parseRow(block: Array<[number, string]>): RuleRow {
  const comments: string[] = [];
  let family: Family | undefined;
  let table: TableName | undefined;
  let spec: string | undefined;
  let specLine = block[0][0];
  let code: ErrorCode | undefined;
  let stricter: { code: ErrorCode; backend?: Backend } | undefined;
  const outcomes: Partial<Record<Backend, { lines: string[] } | { error: string }>> = {};

  for (const [lineNumber, line] of block) {
    if (line.startsWith("#")) {
      comments.push(line);
      continue;
    }
    const match = /^(\S+)\s+(.*)$/.exec(line);
    if (match === null) throw new Error(`rules.txt line ${lineNumber}: expected "KEY VALUE"`);
    const [, key, value] = match;
    switch (key) {
      case "in": {
        const [familyText, tableText] = value.split(/\s+/);
        family = familyText as Family;
        table = tableText as TableName;
        break;
      }
      case "spec":
        spec = value;
        specLine = lineNumber;
        break;
      case "code":
        code = value as ErrorCode;
        break;
      case "stricter": {
        const [first, second] = value.split(/\s+/);
        stricter =
          second === undefined
            ? { code: first as ErrorCode }
            : { code: second as ErrorCode, backend: first as Backend };
        break;
      }
      case "nft":
      case "legacy": {
        if (value.startsWith("! ")) {
          outcomes[key] = { error: value.slice(2) };
        } else {
          const current = outcomes[key];
          const lines = current !== undefined && "lines" in current ? current.lines : [];
          lines.push(value);
          outcomes[key] = { lines };
        }
        break;
      }
      default:
        throw new Error(`rules.txt line ${lineNumber}: unknown key "${key}"`);
    }
  }
  if (family === undefined || table === undefined || spec === undefined) {
    throw new Error(`rules.txt line ${block[0][0]}: a row needs "in FAMILY TABLE" and "spec"`);
  }
  return { comments, family, table, spec, outcomes, code, stricter, line: specLine };
}

/** Prints rows back in the fixture format. */
export function renderRuleFixtures(rows: readonly RuleRow[]): string {
  const blocks = rows.map((row) => {
    const lines = [...row.comments, `in     ${row.family} ${row.table}`, `spec   ${row.spec}`];
    for (const backend of ["nft", "legacy"] as const) {
      const outcome = row.outcomes[backend];
      if (outcome === undefined) continue;
      const key = backend.padEnd(6);
      if ("error" in outcome) lines.push(`${key} ! ${outcome.error}`);
      else for (const line of outcome.lines) lines.push(`${key} ${line}`);
    }
    if (row.code !== undefined) lines.push(`code   ${row.code}`);
    if (row.stricter !== undefined) {
      const backend = row.stricter.backend === undefined ? "" : `${row.stricter.backend} `;
      lines.push(`stricter ${backend}${row.stricter.code}`);
    }
    return lines.join("\n");
  });
  return `${blocks.join("\n\n")}\n`;
}

export function readRuleFixtures(): RuleRow[] {
  return parseRuleFixtures(readFileSync(RULES_FIXTURE, "utf8"));
}

export function writeRuleFixtures(rows: readonly RuleRow[]): void {
  writeFileSync(RULES_FIXTURE, renderRuleFixtures(rows));
}
