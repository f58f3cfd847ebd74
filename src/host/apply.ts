/**
 * One change to one host table: read, plan, apply as one `iptables-restore --noflush`
 * transaction, read back, with the dead-man switch when the change can lock SSH out.
 *
 * Concurrency. Operations on one table of one host run one at a time in this process (a keyed
 * mutex). Across processes, the apply script runs under `flock` on a file under /run and first
 * checks that the table still has the hash of the snapshot the plan came from
 * (compare-and-swap). When another writer got there first, the script returns the current
 * table instead, and the change is planned again from it. No update is lost, and the lock is
 * never held across a network round trip of this process.
 *
 * Batching. The Pulumi engine calls the provider for many resources of one host at once, so
 * changes to one table queue up while a transaction is in flight. When the table is free again,
 * every change that queued meanwhile (on the same shared host state) is merged into one change.
 * That change is planned once and applied as one transaction with one dead-man switch, and each
 * caller gets the shared result. The merged options are the strictest: rollback "always" when any caller asks
 * for it, "never" only when all do, else "auto", and the longest confirm timeout. A change that
 * finds the table free runs alone at once: nothing waits for more changes to arrive. When the
 * merged change is one the planner refuses, or the host rejects or rolls back the merged
 * transaction, each queued change is applied alone in arrival order, so one bad change fails
 * only its own caller. The batch's events go to the listener of its first caller.
 *
 * Round trips. The last snapshot of each table is kept per host. A change to a table this
 * process has read or written before therefore costs one command, and a first change costs two
 * (read, apply). The dead-man switch adds one new connection and one command on it.
 */
import { randomBytes } from "node:crypto";
import { IptablesError, isIptablesError } from "../errors";
import {
  planTableChange,
  type PlanOptions,
  type TableChange,
  type TablePlan,
} from "../netfilter/plan";
import type { Family, SaveTable, TableName } from "../netfilter/types";
import { type HostContext } from "./commands";
import { describeTarget, formatAddress } from "./connection";
import type { HostFacts, TableBinaries } from "./facts";
import { binariesOf } from "./facts";
import { KeyedMutex } from "./locks";
import { applyRejected } from "./restore-errors";
import { confirmOrRollBack } from "./rollback";
import { needsRollback, type RollbackMode } from "./rollback-scope";
import { sameRuleFor } from "./same-rule";
import { readSnapshot, runApply, type ApplyOutcome, type TableSnapshot } from "./tables";

export interface ApplyOptions {
  /**
   * The policy for the dead-man switch. "auto" arms it when the plan touches a chain reachable
   * from INPUT, OUTPUT, PREROUTING or POSTROUTING of the table, which are the chains an SSH
   * session to the host passes. "always" arms it for every non-empty plan, "never" not at all.
   * @default "auto"
   */
  readonly rollback?: RollbackMode;
  /**
   * Seconds a new SSH connection has to confirm the change before the host restores the
   * previous table by itself. Raise it for hosts that are slow to accept connections.
   * @default 20
   */
  readonly confirmTimeoutSeconds?: number;
}

export interface ApplyResult {
  /** The table the plan was computed from (counters as of that read); undefined when absent. */
  readonly before: SaveTable | undefined;
  /** The table read back after the change; undefined when absent. */
  readonly after: SaveTable | undefined;
  readonly plan: TablePlan;
  /** Whether a transaction was applied. */
  readonly changed: boolean;
}

export const DEFAULT_CONFIRM_TIMEOUT_SECONDS = 20;
/**
 * Compare-and-swap attempts before APPLY_CONFLICT. Each attempt is one round trip, and from the
 * second conflict on a random backoff of up to 2 s lets another process's burst of writes drain,
 * which the next attempt would otherwise lose again and again.
 */
const MAX_APPLY_ATTEMPTS = 30;

/** The per-host state an apply reads and updates. */
export interface TableState {
  /** The last snapshot per `family/table`, reused as the plan's starting point. */
  readonly snapshots: Map<string, TableSnapshot>;
}

const tableMutex = new KeyedMutex();

/** One table of one host, with what applying a change to it needs. */
interface TableTarget {
  readonly ctx: HostContext;
  readonly state: TableState;
  readonly binaries: TableBinaries;
  readonly sameRule: PlanOptions["sameRule"];
  readonly family: Family;
  readonly table: TableName;
  /** `family/table`, the key of the kept snapshot. */
  readonly key: string;
  readonly where: string;
  /** Whether the restore must declare built-in chains to keep their counters (legacy). */
  readonly keepChainCounters: boolean;
}

/** A caller's change waiting for its table. */
interface QueuedChange {
  readonly target: TableTarget;
  readonly change: TableChange;
  readonly rollback: RollbackMode;
  readonly confirmTimeoutSeconds: number;
  readonly resolve: (result: ApplyResult) => void;
  readonly reject: (error: unknown) => void;
}

/** The changes waiting per mutex key, in arrival order. */
const queues = new Map<string, QueuedChange[]>();

/**
 * Error codes that one change of a merged batch can cause, unlike errors of the host or the
 * connection. On these the batch falls back to one transaction per change.
 * NOTE: after APPLY_ROLLED_BACK each armed change of the batch waits for its own confirm again.
 */
const CHANGE_ERROR_CODES: ReadonlySet<string> = new Set([
  "INVALID_INPUT",
  "PLAN_CONFLICT",
  "APPLY_REJECTED",
  "APPLY_ROLLED_BACK",
]);

/** Applies `change` to one table; see the file comment for the protocol and the batching. */
export async function applyTableChange(
  ctx: HostContext,
  facts: HostFacts,
  state: TableState,
  family: Family,
  table: TableName,
  change: TableChange,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const rollback = options.rollback ?? "auto";
  const confirmTimeoutSeconds = validateConfirmTimeout(options.confirmTimeoutSeconds);
  const where = describeTarget(ctx.conn);
  const target: TableTarget = {
    ctx,
    state,
    binaries: binariesOf(facts, family, where),
    sameRule: sameRuleFor({ family, table, backend: facts.backend }),
    family,
    table,
    key: `${family}/${table}`,
    where,
    keepChainCounters: facts.backend === "legacy",
  };
  const lockKey = `${formatAddress(ctx.conn.host, ctx.conn.port)}/${target.key}`;

  return new Promise<ApplyResult>((resolve, reject) => {
    const queue = queues.get(lockKey) ?? [];
    queue.push({ target, change, rollback, confirmTimeoutSeconds, resolve, reject });
    queues.set(lockKey, queue);
    // Every queued change adds one turn on the mutex; a turn whose change an earlier batch
    // took finds the queue empty and returns at once.
    void tableMutex.run(lockKey, () => applyQueued(lockKey));
  });
}

/** Applies what waits for the table when it is this turn's: one change alone, or a batch. */
async function applyQueued(lockKey: string): Promise<void> {
  const batch = takeBatch(lockKey);
  if (batch.length === 0) return;
  if (batch.length === 1) return applyAlone(batch[0]);

  let result: ApplyResult;
  try {
    result = await applyChange(
      batch[0].target,
      mergeChanges(batch.map((queued) => queued.change)),
      mergeRollback(batch.map((queued) => queued.rollback)),
      Math.max(...batch.map((queued) => queued.confirmTimeoutSeconds)),
    );
  } catch (error) {
    if (isIptablesError(error) && CHANGE_ERROR_CODES.has(error.code)) {
      for (const queued of batch) await applyAlone(queued);
    } else {
      for (const queued of batch) queued.reject(error);
    }
    return;
  }
  for (const queued of batch) queued.resolve(result);
}

/**
 * Removes from the queue the first change and every later one on the same shared host state,
 * because those share the kept snapshot. Changes of another state wait for a later turn.
 */
function takeBatch(lockKey: string): QueuedChange[] {
  const queue = queues.get(lockKey) ?? [];
  if (queue.length === 0) return [];
  const state = queue[0].target.state;
  const batch = queue.filter((queued) => queued.target.state === state);
  const rest = queue.filter((queued) => queued.target.state !== state);
  if (rest.length === 0) queues.delete(lockKey);
  else queues.set(lockKey, rest);
  return batch;
}

async function applyAlone(queued: QueuedChange): Promise<void> {
  try {
    queued.resolve(
      await applyChange(
        queued.target,
        queued.change,
        queued.rollback,
        queued.confirmTimeoutSeconds,
      ),
    );
  } catch (error) {
    queued.reject(error);
  }
}

/** Concatenates the changes of a batch; chain names (but new ones) and deleted ids appear once. */
function mergeChanges(changes: readonly TableChange[]): TableChange {
  const names = (pick: (change: TableChange) => readonly string[] | undefined): string[] => [
    ...new Set(changes.flatMap((change) => pick(change) ?? [])),
  ];
  return {
    createChains: names((change) => change.createChains),
    // Not deduplicated: two callers creating one new chain is a conflict the planner reports.
    newChains: changes.flatMap((change) => change.newChains ?? []),
    deleteChains: names((change) => change.deleteChains),
    requireChains: names((change) => change.requireChains),
    upsertRules: changes.flatMap((change) => change.upsertRules ?? []),
    deleteRules: names((change) => change.deleteRules),
    purgeUnmanaged: names((change) => change.purgeUnmanaged),
  };
}

/** Returns the strictest of the callers' modes: "always" wins, "never" needs every caller. */
function mergeRollback(modes: readonly RollbackMode[]): RollbackMode {
  if (modes.includes("always")) return "always";
  return modes.every((mode) => mode === "never") ? "never" : "auto";
}

/** Plans and applies one change, planning again on compare-and-swap conflicts. */
async function applyChange(
  target: TableTarget,
  change: TableChange,
  rollback: RollbackMode,
  confirmTimeoutSeconds: number,
): Promise<ApplyResult> {
  const { ctx, state, binaries, sameRule, family, table, key, where } = target;
  const keptSnapshot = state.snapshots.get(key);
  let fresh = keptSnapshot === undefined;
  let snapshot: TableSnapshot = keptSnapshot ?? (await readSnapshot(ctx, binaries, family, table));

  for (let attempt = 1; attempt <= MAX_APPLY_ATTEMPTS; attempt++) {
    let plan: TablePlan;
    try {
      plan = planTableChange(snapshot.table, change, { table, sameRule });
    } catch (error) {
      // A kept snapshot may be stale; only a fresh one can prove the change impossible.
      if (fresh || !isIptablesError(error) || error.code !== "PLAN_CONFLICT") throw error;
      snapshot = await readSnapshot(ctx, binaries, family, table);
      fresh = true;
      continue;
    }
    checkScript(plan, where);
    if (plan.script === "" && fresh) {
      state.snapshots.set(key, snapshot);
      return { before: snapshot.table, after: snapshot.table, plan, changed: false };
    }

    const armed = needsRollback(rollback, snapshot.table, plan);
    const token = randomBytes(9).toString("hex");
    const outcome: ApplyOutcome = await runApply(ctx, {
      binaries,
      family,
      table,
      expectedHash: snapshot.hash,
      script: plan.script,
      keepChainCounters: target.keepChainCounters,
      rollbackSeconds: armed ? confirmTimeoutSeconds : 0,
      token,
      lockWaitSeconds: confirmTimeoutSeconds * 2 + 60,
      timeoutMs: (confirmTimeoutSeconds * 2 + 120) * 1000,
    }).catch((error: unknown) => {
      state.snapshots.delete(key);
      throw armed ? withRollbackNote(error, confirmTimeoutSeconds) : error;
    });

    switch (outcome.status) {
      case "conflict": {
        const delayMs =
          attempt < 2 ? 0 : Math.round(Math.random() * Math.min(2000, 50 * 2 ** attempt));
        ctx.emit({
          kind: "retry",
          host: formatAddress(ctx.conn.host, ctx.conn.port),
          user: ctx.conn.user,
          operation: "apply",
          attempt,
          delayMs,
          reason: `the ${family} ${table} table changed since it was read; planning again`,
        });
        if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
        snapshot = outcome.current;
        fresh = true;
        continue;
      }
      case "unchanged":
        state.snapshots.set(key, snapshot);
        return { before: snapshot.table, after: snapshot.table, plan, changed: false };
      case "rejected":
        throw applyRejected(where, family, plan, outcome.exitCode, outcome.stderr);
      case "applied":
        state.snapshots.delete(key);
        if (outcome.armedAt !== undefined) {
          await confirmOrRollBack(ctx, {
            binaries,
            family,
            table,
            token,
            deadline: outcome.armedAt + confirmTimeoutSeconds * 1000,
            confirmTimeoutSeconds,
          });
        }
        return finish(ctx, state, binaries, family, table, key, snapshot, outcome.after, plan);
    }
  }
  throw new IptablesError(
    "APPLY_CONFLICT",
    `the ${family} ${table} table on ${where} changed between read and write ` +
      `${MAX_APPLY_ATTEMPTS} times in a row: another process keeps changing it; retry later`,
    { details: { host: ctx.conn.host, family, table, attempts: MAX_APPLY_ATTEMPTS } },
  );
}

/** Reads one table and keeps the snapshot for the next change. */
export async function readTableSnapshot(
  ctx: HostContext,
  facts: HostFacts,
  state: TableState,
  family: Family,
  table: TableName,
): Promise<TableSnapshot> {
  const binaries = binariesOf(facts, family, describeTarget(ctx.conn));
  const snapshot = await readSnapshot(ctx, binaries, family, table);
  state.snapshots.set(`${family}/${table}`, snapshot);
  return snapshot;
}

async function finish(
  ctx: HostContext,
  state: TableState,
  binaries: TableBinaries,
  family: Family,
  table: TableName,
  key: string,
  before: TableSnapshot,
  after: TableSnapshot | undefined,
  plan: TablePlan,
): Promise<ApplyResult> {
  const readBack = after ?? (await readSnapshot(ctx, binaries, family, table));
  state.snapshots.set(key, readBack);
  return { before: before.table, after: readBack.table, plan, changed: true };
}

/**
 * Adds to an error of an armed apply whose outcome is unknown (the connection broke) what the
 * host does next by itself.
 */
function withRollbackNote(error: unknown, confirmTimeoutSeconds: number): unknown {
  if (
    !isIptablesError(error) ||
    (error.code !== "SSH_CLOSED" && error.code !== "COMMAND_TIMEOUT")
  ) {
    return error;
  }
  return new IptablesError(
    error.code,
    `${error.message}. If the change was applied, nothing confirmed it, so the host restores the ` +
      `previous table by itself ${confirmTimeoutSeconds} s after it was applied`,
    { cause: error, details: error.details },
  );
}

function validateConfirmTimeout(value: number | undefined): number {
  const seconds = value ?? DEFAULT_CONFIRM_TIMEOUT_SECONDS;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 3600) {
    throw new IptablesError(
      "INVALID_INPUT",
      `confirmTimeoutSeconds ${String(value)} is invalid: use whole seconds from 1 to 3600`,
      { details: { field: "confirmTimeoutSeconds", value } },
    );
  }
  return seconds;
}

/**
 * Checks that the script has exactly one line per step, so that no step text (a comment or a
 * LOG prefix with a newline) can add a line of its own to the transaction.
 */
function checkScript(plan: TablePlan, where: string): void {
  if (plan.script === "") return;
  const expected = `*${plan.table}\n${plan.steps.map((step) => step.line).join("\n")}\nCOMMIT\n`;
  const broken = plan.steps.find((step) => /[\r\n]/.test(step.line) || step.line.includes("\0"));
  if (broken !== undefined || plan.script !== expected) {
    throw new IptablesError(
      "INVALID_INPUT",
      `the restore script for ${where} has a line break or NUL inside a rule` +
        `${broken?.markerId === undefined ? "" : ` (rule ${broken.markerId})`}: remove line breaks ` +
        `from comments and LOG prefixes`,
      { details: { markerId: broken?.markerId, chain: broken?.chain } },
    );
  }
}
