/**
 * Shared pieces of the planner tests: tables written as iptables-save prints them, a model of
 * how iptables-restore --noflush applies a script, and fast-check generators of tables with
 * foreign and managed rules and of changes to them.
 */
import fc from "fast-check";
import { expect } from "vitest";
import { formatMarker, parseMarker, compareMarkers, type Marker } from "../../src/netfilter/marker";
import { parseSave } from "../../src/netfilter/parse";
import type { DesiredRule, TableChange } from "../../src/netfilter/plan";
import { BUILTIN_CHAINS, type SaveTable, type TableName } from "../../src/netfilter/types";

/** A chain and its rule lines (`-A CHAIN ...`), in kernel order. */
export interface ChainState {
  readonly name: string;
  readonly rules: readonly string[];
}

/** Writes the line iptables-save prints for a managed rule with `match` before the marker. */
export function managedLine(chain: string, marker: Marker, match: string, target: string): string {
  const matchPart = match === "" ? "" : ` ${match}`;
  return `-A ${chain}${matchPart} -m comment --comment "${formatMarker(marker)}" -j ${target}`;
}

/** Builds a managed rule as the planner takes it. */
export function desiredRule(
  chain: string,
  marker: Marker,
  match: string,
  target: string,
): DesiredRule {
  return { marker, chain, line: managedLine(chain, marker, match, target) };
}

/** Prints a table as `iptables-save -t table` does, built-in chains first. */
export function dumpText(table: TableName, chains: readonly ChainState[]): string {
  const builtins = BUILTIN_CHAINS[table];
  const ordered = [
    ...builtins.map((name) => chains.find((chain) => chain.name === name) ?? { name, rules: [] }),
    ...chains
      .filter((chain) => !builtins.includes(chain.name))
      .sort((a, b) => compareText(a.name, b.name)),
  ];
  const lines = [`*${table}`];
  for (const chain of ordered) {
    lines.push(`:${chain.name} ${builtins.includes(chain.name) ? "ACCEPT" : "-"} [0:0]`);
  }
  for (const chain of ordered) lines.push(...chain.rules);
  lines.push("COMMIT");
  return `${lines.join("\n")}\n`;
}

export function liveTable(table: TableName, chains: readonly ChainState[]): SaveTable {
  return parseSave(dumpText(table, chains)).tables[0];
}

/** Returns the chains of a parsed table, for the simulator. */
export function chainsOf(table: SaveTable): ChainState[] {
  return table.chains.map((chain) => ({
    name: chain.name,
    rules: table.rules.filter((rule) => rule.chain === chain.name).map((rule) => rule.text),
  }));
}

/**
 * Applies a restore script to chains as iptables-restore --noflush does. Throws where
 * iptables-restore would fail: a position out of range, a chain that exists or not, deleting a
 * chain that contains rules or that a rule jumps to, any chain declaration, and a jump loop.
 */
export function applyScript(
  table: TableName,
  chains: readonly ChainState[],
  script: string,
): ChainState[] {
  const state = new Map<string, string[]>();
  for (const name of BUILTIN_CHAINS[table]) state.set(name, []);
  for (const chain of chains) state.set(chain.name, [...chain.rules]);
  if (script === "") return toChains(state);

  const lines = script.split("\n");
  if (lines[0] !== `*${table}` || lines.at(-2) !== "COMMIT" || lines.at(-1) !== "") {
    throw new Error(`script is not one ${table} transaction: ${JSON.stringify(script)}`);
  }
  for (const line of lines.slice(1, -2)) applyLine(table, state, line);
  checkNoLoop(table, state);
  return toChains(state);
}

function applyLine(table: TableName, state: Map<string, string[]>, line: string): void {
  const [command, chain, third] = line.split(" ");
  const rules = state.get(chain);
  const fail = (problem: string): never => {
    throw new Error(`iptables-restore would reject ${JSON.stringify(line)}: ${problem}`);
  };
  if (command === "-N") {
    if (rules !== undefined) fail("chain exists");
    state.set(chain, []);
    return;
  }
  if (rules === undefined) return fail("no such chain");
  const position = Number(third);
  const body = line.slice(`${command} ${chain} ${third}`.length);
  switch (command) {
    case "-A":
      rules.push(line);
      return;
    case "-I":
      if (!(position >= 1 && position <= rules.length + 1)) fail("position out of range");
      rules.splice(position - 1, 0, `-A ${chain}${body}`);
      return;
    case "-R":
      if (!(position >= 1 && position <= rules.length)) fail("position out of range");
      rules[position - 1] = `-A ${chain}${body}`;
      return;
    case "-D":
      if (!(position >= 1 && position <= rules.length) || body !== "")
        fail("position out of range");
      rules.splice(position - 1, 1);
      return;
    case "-F":
      rules.length = 0;
      return;
    case "-X":
      if (rules.length > 0) fail("chain is not empty");
      for (const other of state.values()) {
        if (other.some((rule) => jumpTarget(rule) === chain)) fail("chain is referenced");
      }
      if (BUILTIN_CHAINS[table].includes(chain)) fail("built-in chain");
      state.delete(chain);
      return;
    default:
      fail("unexpected command");
  }
}

/** Throws when a built-in chain reaches a loop of jumps, which the kernel rejects at COMMIT. */
function checkNoLoop(table: TableName, state: Map<string, string[]>): void {
  const walk = (chain: string, path: readonly string[]): void => {
    if (path.includes(chain)) {
      throw new Error(`iptables-restore would reject the loop ${[...path, chain].join(" -> ")}`);
    }
    for (const rule of state.get(chain) ?? []) {
      const target = jumpTarget(rule);
      if (target !== undefined && state.has(target)) walk(target, [...path, chain]);
    }
  };
  for (const chain of BUILTIN_CHAINS[table]) walk(chain, []);
}

function toChains(state: Map<string, string[]>): ChainState[] {
  return [...state.entries()].map(([name, rules]) => ({ name, rules }));
}

/** Returns the target of a rule line, read from its first `-j` or `-g`. */
export function jumpTarget(line: string): string | undefined {
  const match = / -[jg] (\S+)(?: .*)?$/.exec(line);
  return match?.[1];
}

/** Returns the marker of a rule line, or undefined for a foreign rule. */
export function lineMarker(line: string): Marker | undefined {
  const match = / --comment "([^"]*)"/.exec(line);
  return match === null ? undefined : parseMarker(match[1]);
}

export function compareText(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

/**
 * Tells whether the managed rule at `index` of `rules` is where the placement rules put it.
 * That is so when the number of other managed rules above it equals the index, among those
 * others, of the first one that sorts after it, or their count when none does.
 */
export function isInOrder(rules: readonly string[], index: number): boolean {
  const marker = lineMarker(rules[index])!;
  const others: { marker: Marker; index: number }[] = [];
  rules.forEach((line, at) => {
    const other = lineMarker(line);
    if (other !== undefined && at !== index) others.push({ marker: other, index: at });
  });
  const firstAfter = others.findIndex((other) => compareMarkers(other.marker, marker) > 0);
  const expected = firstAfter === -1 ? others.length : firstAfter;
  const above = others.filter((other) => other.index < index).length;
  return above === expected;
}

/** Checks the state after the plan against the change, independently of the planner. */
export function checkRequestedState(
  before: readonly ChainState[],
  change: TableChange,
  after: readonly ChainState[],
): void {
  const purged = new Set(change.purgeUnmanaged ?? []);
  const deletedChains = new Set(change.deleteChains ?? []);
  const upserts = new Map((change.upsertRules ?? []).map((rule) => [rule.marker.id, rule]));
  const deletedIds = new Set(change.deleteRules ?? []);
  const afterByName = new Map(after.map((chain) => [chain.name, chain.rules]));

  for (const chain of before) {
    const rules = afterByName.get(chain.name);
    if (deletedChains.has(chain.name)) {
      expect(rules, `chain ${chain.name} is deleted`).toBeUndefined();
      continue;
    }
    expect(rules, `chain ${chain.name} stays`).toBeDefined();
    // Foreign rules keep their relative order, and all of them stay unless the chain is purged.
    const foreignBefore = chain.rules.filter((line) => lineMarker(line) === undefined);
    const foreignAfter = rules!.filter((line) => lineMarker(line) === undefined);
    expect(foreignAfter, `foreign rules of ${chain.name}`).toEqual(
      purged.has(chain.name) ? [] : foreignBefore,
    );
    // Managed rules the change does not name stay as they were.
    const untouched = (line: string): boolean => {
      const marker = lineMarker(line);
      return marker !== undefined && !upserts.has(marker.id) && !deletedIds.has(marker.id);
    };
    expect(rules!.filter(untouched), `unnamed managed rules of ${chain.name}`).toEqual(
      chain.rules.filter(untouched),
    );
  }
  for (const name of change.createChains ?? [])
    expect(afterByName.has(name), `chain ${name} exists`).toBe(true);

  const all = after.flatMap((chain) => chain.rules.map((line, index) => ({ chain, line, index })));
  for (const id of deletedIds)
    expect(
      all.filter((rule) => lineMarker(rule.line)?.id === id),
      `rule ${id}`,
    ).toEqual([]);
  for (const [id, desired] of upserts) {
    const copies = all.filter((rule) => lineMarker(rule.line)?.id === id);
    expect(
      copies.map((copy) => [copy.chain.name, copy.line]),
      `rule ${id}`,
    ).toEqual([[desired.chain, desired.line]]);
    expect(isInOrder(copies[0].chain.rules, copies[0].index), `rule ${id} is in order`).toBe(true);
  }
}

// ---------------------------------------------------------------------------------------------
// Generators

export const USER_CHAINS = ["RATE-LIMIT", "f2b-sshd"] as const;
export const NEW_CHAIN = "PULUMI-NEW";
const IDS = ["ssh", "web", "dns", "rate/ok", "rate/log", "rate/reject"];
const MATCHES = [
  "-p tcp -m tcp --dport 22",
  "-p udp -m udp --dport 53",
  "-s 198.18.7.0/24 -p tcp -m tcp --dport 443",
  "",
];
const TARGETS = ["ACCEPT", "DROP", "RETURN"];

/** A generated rule before it is written as a line. */
type RuleSeed =
  | { kind: "foreign"; target: string }
  | { kind: "managed"; id: string; order: number; match: number; target: string };

const orderArb = fc.integer({ min: -3, max: 3 }).map((n) => n * 10);
const ruleSeedArb = (targets: readonly string[]): fc.Arbitrary<RuleSeed> =>
  fc.oneof(
    fc.record({ kind: fc.constant("foreign" as const), target: fc.constantFrom(...targets) }),
    fc.record({
      kind: fc.constant("managed" as const),
      id: fc.constantFrom(...IDS),
      order: orderArb,
      match: fc.nat({ max: MATCHES.length - 1 }),
      target: fc.constantFrom(...targets),
    }),
  );

/** A generated filter table: INPUT and two user chains with foreign and managed rules. */
export interface TableCase {
  readonly chains: ChainState[];
  readonly change: TableChange;
}

function writeRules(
  chain: string,
  seeds: readonly RuleSeed[],
  counter: { next: number },
): string[] {
  return seeds.map((seed) => {
    if (seed.kind === "managed") {
      return managedLine(
        chain,
        { id: seed.id, order: seed.order },
        MATCHES[seed.match],
        seed.target,
      );
    }
    // Foreign rules differ by source address, so each one can be followed through a plan.
    counter.next++;
    return `-A ${chain} -s 198.19.0.${counter.next}/32 -j ${seed.target}`;
  });
}

const upsertSeedArb = fc.record({
  chain: fc.constantFrom("INPUT", ...USER_CHAINS, NEW_CHAIN),
  order: orderArb,
  match: fc.nat({ max: MATCHES.length - 1 }),
  target: fc.constantFrom(...TARGETS, "RATE-LIMIT"),
});

/**
 * Tables of filter chains with foreign rules, managed rules (duplicated, out of order, stale)
 * and jumps between chains, with a change that upserts, deletes, purges and creates.
 */
export const tableCaseArb: fc.Arbitrary<TableCase> = fc
  .record({
    input: fc.array(ruleSeedArb([...TARGETS, ...USER_CHAINS]), { maxLength: 8 }),
    rateLimit: fc.array(ruleSeedArb([...TARGETS, "f2b-sshd"]), { maxLength: 8 }),
    f2b: fc.array(ruleSeedArb(TARGETS), { maxLength: 5 }),
    upserts: fc.dictionary(fc.constantFrom(...IDS), upsertSeedArb, { maxKeys: IDS.length }),
    deletes: fc.subarray(IDS),
    purgeRateLimit: fc.boolean(),
    purgeF2b: fc.boolean(),
    deleteF2b: fc.boolean(),
    createNew: fc.boolean(),
  })
  .map((seed) => {
    const counter = { next: 0 };
    const chains: ChainState[] = [
      { name: "INPUT", rules: writeRules("INPUT", seed.input, counter) },
      { name: "RATE-LIMIT", rules: writeRules("RATE-LIMIT", seed.rateLimit, counter) },
      { name: "f2b-sshd", rules: writeRules("f2b-sshd", seed.f2b, counter) },
    ];
    const purgeUnmanaged = [
      ...(seed.purgeRateLimit ? ["RATE-LIMIT"] : []),
      ...(seed.purgeF2b ? ["f2b-sshd"] : []),
    ];
    const upsertRules: DesiredRule[] = Object.entries(seed.upserts)
      .filter(([, upsert]) => seed.createNew || upsert.chain !== NEW_CHAIN)
      .filter(([, upsert]) => !seed.deleteF2b || upsert.chain !== "f2b-sshd")
      .map(([id, upsert]) =>
        desiredRule(
          upsert.chain,
          { id, order: upsert.order },
          MATCHES[upsert.match],
          upsert.target,
        ),
      );
    const upserted = new Set(upsertRules.map((rule) => rule.marker.id));
    const change: TableChange = {
      upsertRules,
      deleteRules: seed.deletes.filter((id) => !upserted.has(id)),
      ...(purgeUnmanaged.length > 0 ? { purgeUnmanaged } : {}),
      ...(seed.createNew ? { createChains: [NEW_CHAIN] } : {}),
      ...(seed.deleteF2b ? { deleteChains: ["f2b-sshd"] } : {}),
    };
    return { chains, change };
  });
