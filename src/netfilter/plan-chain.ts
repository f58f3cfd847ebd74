/**
 * Planning one chain: which live rules are deleted, replaced in place or left alone, and which
 * desired rules are inserted, with the rank that places each managed rule.
 */
import { ruleMarker } from "./managed";
import { compareMarkers, type Marker } from "./marker";
import type { ParsedDesired, PlanRequest } from "./plan-request";
import { BUILTIN_CHAINS, type SaveRule, type SaveTable, type TableName } from "./types";

export interface LiveEntry {
  readonly rule: SaveRule;
  readonly marker: Marker | undefined;
}

export interface Snapshot {
  /**
   * Chains in the order of their header lines, then chains that only appear in rules; for an
   * absent table, its built-in chains.
   */
  readonly chainOrder: readonly string[];
  /** The rules of each present chain, in kernel order. */
  readonly rules: ReadonlyMap<string, readonly LiveEntry[]>;
  /** Marker ids of every managed rule in the table. */
  readonly markerIds: ReadonlySet<string>;
}

export function indexSnapshot(live: SaveTable | undefined, table: TableName): Snapshot {
  const rules = new Map<string, LiveEntry[]>();
  const chainOrder: string[] = [];
  const addChain = (name: string): LiveEntry[] => {
    let list = rules.get(name);
    if (list === undefined) {
      list = [];
      rules.set(name, list);
      chainOrder.push(name);
    }
    return list;
  };
  for (const chain of live?.chains ?? []) addChain(chain.name);
  // An absent table gets its built-in chains as soon as iptables-restore names it.
  if (live === undefined) for (const name of BUILTIN_CHAINS[table]) addChain(name);
  const markerIds = new Set<string>();
  for (const rule of live?.rules ?? []) {
    const marker = ruleMarker(rule);
    if (marker !== undefined) markerIds.add(marker.id);
    addChain(rule.chain).push({ rule, marker });
  }
  return { chainOrder, rules, markerIds };
}

export interface Deletion {
  readonly reason: string;
  readonly markerId?: string;
}

export interface Insertion {
  readonly desired: ParsedDesired;
  /** Index of the rule in the chain's target order of managed rules. */
  readonly rank: number;
  readonly reason: string;
}

export interface ChainPlan {
  readonly chain: string;
  readonly live: readonly LiveEntry[];
  /** Live index to deletion. */
  readonly deletes: ReadonlyMap<number, Deletion>;
  /** Live index to the desired rule that replaces it in place. */
  readonly replaces: ReadonlyMap<number, ParsedDesired>;
  /** Live index to rank, for every managed live rule that stays. */
  readonly ranks: ReadonlyMap<number, number>;
  /** Sorted by rank. */
  readonly inserts: readonly Insertion[];
}

/** A managed rule in the chain's target order: a live rule left alone, or an upserted one. */
type Slot =
  | { readonly kind: "fixed"; readonly liveIndex: number }
  | { readonly kind: "upsert"; readonly desired: ParsedDesired };

export function planChain(chain: string, request: PlanRequest, snapshot: Snapshot): ChainPlan {
  const live = snapshot.rules.get(chain) ?? [];
  const deletes = new Map<number, Deletion>();

  // Sort the live rules into: deleted now, fixed (left alone), and candidates (live copies of
  // the rules upserted into this chain).
  const fixed: number[] = [];
  const candidates: number[] = [];
  live.forEach((entry, index) => {
    const marker = entry.marker;
    if (marker === undefined) {
      if (request.purge.has(chain)) {
        deletes.set(index, { reason: "delete foreign rule from a purged chain" });
      }
      return;
    }
    if (request.deleteIds.has(marker.id)) {
      deletes.set(index, { reason: "delete rule", markerId: marker.id });
      return;
    }
    const desired = request.upsertById.get(marker.id);
    if (desired === undefined) {
      fixed.push(index);
    } else if (desired.rule.chain !== chain) {
      deletes.set(index, {
        reason: `delete rule moved to chain ${desired.rule.chain}`,
        markerId: marker.id,
      });
    } else {
      candidates.push(index);
    }
  });

  // The target order of managed rules: fixed rules keep their order, and each upserted rule,
  // in marker order, goes just before the first rule that sorts after it, else at the end.
  const order: Slot[] = fixed.map((liveIndex) => ({ kind: "fixed", liveIndex }));
  for (const desired of request.upserts) {
    if (desired.rule.chain !== chain) continue;
    const marker = desired.rule.marker;
    const after = order.findIndex((slot) => compareMarkers(slotMarker(slot, live), marker) > 0);
    order.splice(after === -1 ? order.length : after, 0, { kind: "upsert", desired });
  }
  const rankOfFixed = new Map<number, number>();
  const rankOfId = new Map<string, number>();
  order.forEach((slot, rank) => {
    if (slot.kind === "fixed") rankOfFixed.set(slot.liveIndex, rank);
    else rankOfId.set(slot.desired.rule.marker.id, rank);
  });

  // The live copies of upserted rules, each with its rank and whether it equals its rule.
  const copies: Copy[] = candidates.map((index) => {
    const desired = request.upsertById.get(live[index].marker!.id)!;
    const rank = rankOfId.get(desired.rule.marker.id)!;
    return { index, desired, rank, equal: request.sameRule(live[index].rule, desired.rule) };
  });
  const kept = chooseKeptCopies(fixed, rankOfFixed, copies, order.length);

  const replaces = new Map<number, ParsedDesired>();
  const ranks = new Map<number, number>(rankOfFixed);
  const keptIds = new Set<string>();
  for (const copy of copies) {
    if (!kept.has(copy.index)) continue;
    keptIds.add(copy.desired.rule.marker.id);
    ranks.set(copy.index, copy.rank);
    if (!copy.equal) replaces.set(copy.index, copy.desired);
  }
  for (const copy of copies) {
    const id = copy.desired.rule.marker.id;
    if (!kept.has(copy.index)) {
      const duplicate = keptIds.has(id);
      deletes.set(copy.index, {
        reason: duplicate
          ? "delete duplicate of a managed rule"
          : "delete managed rule that is out of order",
        markerId: id,
      });
    }
  }

  const inserts: Insertion[] = [];
  order.forEach((slot, rank) => {
    if (slot.kind !== "upsert" || keptIds.has(slot.desired.rule.marker.id)) return;
    const reason = snapshot.markerIds.has(slot.desired.rule.marker.id)
      ? "insert managed rule at its place"
      : "insert new rule";
    inserts.push({ desired: slot.desired, rank, reason });
  });

  return { chain, live, deletes, replaces, ranks, inserts };
}

function slotMarker(slot: Slot, live: readonly LiveEntry[]): Marker {
  return slot.kind === "fixed" ? live[slot.liveIndex].marker! : slot.desired.rule.marker;
}

/** A live copy of an upserted rule. */
interface Copy {
  /** Index in the chain's live rules. */
  readonly index: number;
  readonly desired: ParsedDesired;
  /** Rank of its rule in the target order. */
  readonly rank: number;
  /** Whether the live rule already equals the desired rule. */
  readonly equal: boolean;
}

/**
 * Chooses which live managed rules stay where they are: every fixed rule, and the copies of
 * upserted rules that save the most steps while the kept rules stay in target order.
 *
 * This is a heaviest increasing subsequence over ranks. A fixed rule outweighs all copies
 * together. A copy equal to its desired rule weighs 2, because it saves an insert and a
 * replacement, and another copy weighs 1, because it saves an insert. Copies of one id share a
 * rank, so at most one of them stays. Of copies that save as many steps, the one nearer the top
 * stays.
 */
function chooseKeptCopies(
  fixed: readonly number[],
  rankOfFixed: ReadonlyMap<number, number>,
  copies: readonly Copy[],
  rankCount: number,
): Set<number> {
  const fixedWeight = 2 * copies.length + 1;
  const managed = [
    ...fixed.map((index) => ({ index, rank: rankOfFixed.get(index)!, weight: fixedWeight })),
    ...copies.map((copy) => ({ index: copy.index, rank: copy.rank, weight: copy.equal ? 2 : 1 })),
  ].sort((a, b) => a.index - b.index);
  const tree = new PrefixMaxTree(rankCount);
  const previous = new Map<number, number | undefined>();

  for (const { index, rank, weight } of managed) {
    const best = tree.query(rank);
    previous.set(index, best.at);
    tree.update(rank, best.total + weight, index);
  }

  const kept = new Set<number>();
  let at = tree.query(rankCount).at;
  while (at !== undefined) {
    kept.add(at);
    at = previous.get(at);
  }
  return kept;
}

/**
 * A Fenwick tree over ranks that returns the heaviest subsequence ending below a rank. An
 * update keeps the earlier entry on equal totals.
 */
class PrefixMaxTree {
  private readonly totals: number[];
  private readonly ends: (number | undefined)[];

  constructor(private readonly size: number) {
    this.totals = new Array<number>(size + 1).fill(0);
    this.ends = new Array<number | undefined>(size + 1).fill(undefined);
  }

  /** Returns the heaviest total over ranks 0 .. rank-1, and the live index it ends at. */
  query(rank: number): { total: number; at: number | undefined } {
    let total = 0;
    let at: number | undefined;
    for (let i = rank; i > 0; i -= i & -i) {
      if (this.totals[i] > total) {
        total = this.totals[i];
        at = this.ends[i];
      }
    }
    return { total, at };
  }

  update(rank: number, total: number, at: number): void {
    for (let i = rank + 1; i <= this.size; i += i & -i) {
      if (total > this.totals[i]) {
        this.totals[i] = total;
        this.ends[i] = at;
      }
    }
  }
}
