/**
 * Differential tests of canonicalRule against the kernel. Every rule is applied alone with real
 * iptables-nft and iptables-legacy (and their ip6tables twins) in lab hosts and read back with
 * the matching iptables-save. canonicalRule must print exactly those lines, or reject the rule
 * when iptables or the kernel rejects it.
 */
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isIptablesError } from "../../src/errors";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { canonicalRule, sameRule } from "../../src/netfilter/canonical";
import { parseSave, renderSave } from "../../src/netfilter/parse";
import type { Backend, Family, TableName } from "../../src/netfilter/types";
import { applyEach, iptablesBinary, type KernelResult } from "./kernel-harness";
import { ruleSpecArb } from "./rule-arbitraries";
import { readRuleFixtures } from "./rule-fixtures";

const LAB_NAME = "canonical-lab";
/** Rules generated per family and backend. FC_RUNS raises it for a longer search. */
const GENERATED = Number(process.env.FC_RUNS ?? 200);
/** The generator seed; FC_SEED replays a failure. */
const SEED = Number(process.env.FC_SEED ?? 20261204);

let lab: Lab;
const hosts: Partial<Record<Backend, LabHost>> = {};

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
  hosts.nft = lab.hosts[0];
  hosts.legacy = lab.hosts[1];
});

afterAll(async () => {
  await lab?.destroy();
});

function canonicalOrCode(
  spec: string,
  family: Family,
  table: TableName,
  backend: Backend,
): string[] | string {
  try {
    return canonicalRule(spec, { family, table, backend }).split("\n");
  } catch (error) {
    if (isIptablesError(error)) return error.code;
    throw error;
  }
}

/** Describes where canonicalRule and the kernel disagree, or returns undefined. */
function disagreement(kernel: KernelResult, ours: string[] | string): string | undefined {
  if (kernel.accepted) {
    // canonicalRule may reject what it does not model with RULE_UNSUPPORTED, but never guess.
    if (ours === "RULE_UNSUPPORTED") return undefined;
    if (typeof ours === "string")
      return `kernel accepted it as ${JSON.stringify(kernel.lines)}, canonicalRule raised ${ours}`;
    if (JSON.stringify(ours) !== JSON.stringify(kernel.lines)) {
      return `kernel printed ${JSON.stringify(kernel.lines)}, canonicalRule printed ${JSON.stringify(ours)}`;
    }
    return undefined;
  }
  if (typeof ours !== "string")
    return `kernel rejected it (${kernel.error}), canonicalRule printed ${JSON.stringify(ours)}`;
  return undefined;
}

describe("fixture table against the kernel", () => {
  const rows = readRuleFixtures();

  for (const backend of ["nft", "legacy"] as const) {
    it(`still matches ${backend} iptables for every row`, async () => {
      const mismatches: string[] = [];
      const groups = new Map<string, number[]>();
      rows.forEach((row, index) =>
        groups.set(`${row.family} ${row.table}`, [
          ...(groups.get(`${row.family} ${row.table}`) ?? []),
          index,
        ]),
      );
      for (const indexes of groups.values()) {
        const { family, table } = rows[indexes[0]];
        const results = await applyEach(
          lab,
          hosts[backend]!,
          backend,
          family,
          table,
          indexes.map((i) => rows[i].spec),
        );
        results.forEach((result, position) => {
          const row = rows[indexes[position]];
          const recorded = row.outcomes[backend];
          const recordedLines = recorded && "lines" in recorded ? recorded.lines : undefined;
          const kernelLines = result.accepted ? result.lines : undefined;
          if (JSON.stringify(recordedLines) !== JSON.stringify(kernelLines)) {
            mismatches.push(
              `rules.txt line ${row.line}: recorded ${JSON.stringify(recorded)}, kernel ${JSON.stringify(result)}`,
            );
          }
          if (row.stricter !== undefined && (row.stricter.backend ?? backend) === backend) return;
          const problem = disagreement(result, canonicalOrCode(row.spec, family, table, backend));
          if (problem !== undefined)
            mismatches.push(`rules.txt line ${row.line} ${row.spec}: ${problem}`);
        });
      }
      expect(mismatches).toEqual([]);
    });
  }
});

describe("generated rules against the kernel", () => {
  for (const family of ["ipv4", "ipv6"] as const) {
    for (const backend of ["nft", "legacy"] as const) {
      it(`agree with ${iptablesBinary(backend, family)}`, { timeout: 900_000 }, async () => {
        let counter = 0;
        const uniq = (): string => `gen${(counter++).toString(36)}`;
        const specs = fc.sample(ruleSpecArb(family, uniq), {
          numRuns: GENERATED,
          seed: SEED + (family === "ipv6" ? 1 : 0),
        });
        const results = await applyEach(lab, hosts[backend]!, backend, family, "filter", specs);

        const mismatches: string[] = [];
        let accepted = 0;
        let unsupported = 0;
        results.forEach((result, index) => {
          if (result.accepted) accepted++;
          const spec = specs[index];
          const ours = canonicalOrCode(spec, family, "filter", backend);
          if (result.accepted && ours === "RULE_UNSUPPORTED") unsupported++;
          const problem = disagreement(result, ours);
          if (problem !== undefined) mismatches.push(`${spec}\n    ${problem}`);
          if (result.accepted && typeof ours !== "string") {
            for (const line of result.lines) {
              if (
                !sameRule(
                  line,
                  line === result.lines[0] && result.lines.length === 1 ? spec : line,
                  { family, backend },
                )
              ) {
                mismatches.push(`${spec}\n    sameRule does not hold for ${line}`);
              }
            }
          }
        });
        // The generator is useless if the kernel rejects most of what it makes.
        expect(accepted).toBeGreaterThan(GENERATED / 3);
        expect(unsupported).toBeLessThan(accepted / 20);
        if (process.env.MISMATCH_LOG)
          appendFileSync(
            process.env.MISMATCH_LOG,
            mismatches.map((m) => `${backend} ${family} ${m}\n`).join(""),
          );
        expect(mismatches).toEqual([]);
      });
    }
  }
});

/** Flushes every table and removes its user chains, so a rule set can be built from scratch. */
async function resetTables(host: LabHost, binary: string): Promise<void> {
  for (const table of ["filter", "nat", "mangle", "raw", "security"]) {
    await lab.exec(host, [binary, "-t", table, "-F"]);
    await lab.exec(host, [binary, "-t", table, "-X"]);
  }
  await lab.exec(host, [binary, "-P", "FORWARD", "ACCEPT"]);
}

describe("live dumps", () => {
  const rulesets = join(__dirname, "..", "fixtures", "rulesets.sh");

  for (const family of ["ipv4", "ipv6"] as const) {
    for (const backend of ["nft", "legacy"] as const) {
      it(`round-trip ${iptablesBinary(backend, family)}-save with Docker, kube-proxy and fail2ban chains`, async () => {
        const host = hosts[backend]!;
        const binary = iptablesBinary(backend, family);
        await resetTables(host, binary);
        const built = await lab.exec(host, ["env", `IPT=${binary}`, "bash", rulesets]);
        expect(built.code, built.stderr).toBe(0);
        try {
          for (const args of [[], ["-c"]]) {
            const saved = await lab.exec(host, [`${binary}-save`, ...args]);
            expect(saved.code).toBe(0);
            const dump = parseSave(saved.stdout);
            expect(renderSave(dump)).toBe(saved.stdout);
            expect(dump.tables.map((table) => table.name).sort()).toEqual([
              "filter",
              "mangle",
              "nat",
              "raw",
              "security",
            ]);

            // Every line that uses only supported matches and targets canonicalises to itself.
            let checked = 0;
            for (const table of dump.tables) {
              for (const rule of table.rules) {
                let canonical: string;
                try {
                  canonical = canonicalRule(rule.text, {
                    family,
                    table: table.name as TableName,
                    backend,
                  });
                } catch (error) {
                  if (isIptablesError(error) && /RULE_UNKNOWN_(TARGET|MATCH)/.test(error.code))
                    continue;
                  throw error;
                }
                expect(canonical).toBe(rule.text);
                checked++;
              }
            }
            expect(checked).toBeGreaterThan(30);
          }
        } finally {
          await resetTables(host, binary);
        }
      });
    }
  }
});
