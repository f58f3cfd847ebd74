import { describe, expect, it } from "vitest";
import { isIptablesError } from "../../src/errors";
import { canonicalRule, sameRule } from "../../src/netfilter/canonical";
import { BACKENDS } from "../../src/netfilter/types";
import { readRuleFixtures, type RuleRow } from "./rule-fixtures";

const rows = readRuleFixtures();

function canonicalOrError(
  row: RuleRow,
  backend: "nft" | "legacy",
): { lines?: string[]; code?: string; message?: string } {
  try {
    return {
      lines: canonicalRule(row.spec, { family: row.family, table: row.table, backend }).split("\n"),
    };
  } catch (error) {
    if (!isIptablesError(error)) throw error;
    return { code: error.code, message: error.message };
  }
}

describe("canonicalRule against the recorded fixture table", () => {
  it("has rows for both families and both outcomes", () => {
    expect(rows.length).toBeGreaterThan(200);
    expect(rows.some((row) => row.family === "ipv6")).toBe(true);
    expect(rows.some((row) => row.outcomes.nft !== undefined && "error" in row.outcomes.nft)).toBe(
      true,
    );
  });

  for (const row of rows) {
    for (const backend of BACKENDS) {
      it(`${backend} ${row.family} line ${row.line}: ${row.spec.slice(0, 90)}`, () => {
        const outcome = row.outcomes[backend];
        expect(outcome, "row not recorded; run test/fixtures/record-rules.ts").toBeDefined();
        const actual = canonicalOrError(row, backend);
        if (row.stricter !== undefined && (row.stricter.backend ?? backend) === backend) {
          expect(actual.code).toBe(row.stricter.code);
          return;
        }
        if (outcome !== undefined && "lines" in outcome) {
          expect(actual.message).toBeUndefined();
          expect(actual.lines).toEqual(outcome.lines);
        } else {
          expect(actual.lines, `iptables rejected it: ${outcome?.error}`).toBeUndefined();
          expect(actual.code).toMatch(/^RULE_/);
          if (row.code !== undefined) expect(actual.code).toBe(row.code);
        }
      });
    }
  }
});

describe("canonicalRule on its own output", () => {
  for (const row of rows) {
    for (const backend of BACKENDS) {
      const outcome = row.outcomes[backend];
      const stricter = row.stricter !== undefined && (row.stricter.backend ?? backend) === backend;
      if (outcome === undefined || !("lines" in outcome) || stricter) continue;
      it(`is stable for ${backend} line ${row.line}`, () => {
        const context = { family: row.family, table: row.table, backend };
        for (const line of outcome.lines) {
          expect(canonicalRule(line, context)).toBe(line);
          expect(sameRule(line, row.spec.includes(",") ? line : row.spec, context)).toBe(true);
        }
      });
    }
  }
});
