/**
 * Reading one table and applying one restore transaction to it, each in one round trip.
 */
import { randomBytes } from "node:crypto";
import { IptablesError, tailLines } from "../errors";
import { parseSave } from "../netfilter/parse";
import type { Family, SaveTable, TableName } from "../netfilter/types";
import { runScript, type HostContext } from "./commands";
import { describeTarget } from "./connection";
import type { TableBinaries } from "./facts";
import {
  APPLY_SCRIPT,
  beforeFilePath,
  lockFilePath,
  parseFramedOutput,
  READ_SCRIPT,
  RUN_DIRECTORY,
  tableHash,
  WATCHDOG_SCRIPT,
} from "./table-scripts";

/** A table as read, with the host-computed hash the compare-and-swap checks against. */
export interface TableSnapshot {
  readonly table: SaveTable | undefined;
  readonly hash: string;
}

/** Reads one table with `save -c -t TABLE` in one command. */
export async function readSnapshot(
  ctx: HostContext,
  binaries: TableBinaries,
  family: Family,
  table: TableName,
): Promise<TableSnapshot> {
  const result = await runScript(ctx, `read ${family} ${table}`, READ_SCRIPT, [
    binaries.save,
    table,
  ]);
  return snapshotOf(result.stdout, table);
}

export interface ApplyRequest {
  readonly binaries: TableBinaries;
  readonly family: Family;
  readonly table: TableName;
  /** The hash of the snapshot the script was planned from. */
  readonly expectedHash: string;
  /** The restore script; "" only checks that the table still has `expectedHash`. */
  readonly script: string;
  /**
   * Declares the table's built-in chains, with the policy and counters saved under the lock,
   * after the script's steps. iptables-legacy-restore --noflush zeroes the counters of every
   * built-in chain a script does not declare; nft keeps them.
   */
  readonly keepChainCounters?: boolean;
  /** Seconds until the host restores the table unless disarmed; 0 arms nothing. */
  readonly rollbackSeconds: number;
  /** Names the rollback's state files on the host. */
  readonly token: string;
  /** Seconds to wait for the host-side table lock. */
  readonly lockWaitSeconds: number;
  readonly timeoutMs: number;
}

export type ApplyOutcome =
  | { readonly status: "conflict"; readonly current: TableSnapshot }
  | { readonly status: "unchanged" }
  | { readonly status: "rejected"; readonly exitCode: string; readonly stderr: string }
  | {
      readonly status: "applied";
      readonly after: TableSnapshot | undefined;
      /** Epoch milliseconds when the host reported the rollback armed; undefined when it was not. */
      readonly armedAt: number | undefined;
    };

/** Runs the compare-and-swap apply script and reads what it reported. */
export async function runApply(ctx: HostContext, request: ApplyRequest): Promise<ApplyOutcome> {
  const nonce = newNonce();
  const { binaries, family, table } = request;
  const lock = lockFilePath(family, table);
  let received = "";
  let armedAt: number | undefined;
  const result = await runScript(
    ctx,
    `apply ${family} ${table}`,
    APPLY_SCRIPT,
    [
      binaries.save,
      binaries.restore,
      table,
      lock,
      nonce,
      request.expectedHash,
      String(request.lockWaitSeconds),
      String(request.rollbackSeconds),
      request.token,
      RUN_DIRECTORY,
      beforeFilePath(family, table),
      WATCHDOG_SCRIPT,
      request.script === "" ? "verify" : "apply",
      request.keepChainCounters === true ? "1" : "0",
    ],
    {
      input: request.script,
      timeoutMs: request.timeoutMs,
      allowFailure: true,
      onStdout: (chunk) => {
        // The watchdog's timer started just before this line left the host, so its arrival
        // time, not the time the command was sent, is when the confirm timeout began.
        received += chunk.toString("latin1");
        if (armedAt === undefined && received.includes(`${nonce} status armed\n`))
          armedAt = Date.now();
      },
    },
  );
  const output = parseFramedOutput(result.stdout, nonce);
  const armed = output.statuses.some((words) => words[0] === "armed");
  armedAt ??= Date.now();
  const succeeded = result.code === 0;

  switch (output.status[0]) {
    case "conflict":
      if (!succeeded || output.table === undefined) break;
      return { status: "conflict", current: snapshotOf(output.table, table) };
    case "unchanged":
      return { status: "unchanged" };
    case "rejected":
      return {
        status: "rejected",
        exitCode: output.status[1] ?? "?",
        stderr: result.stderr,
      };
    case "applied":
      // The change is in; a failed read-back only means the caller reads the table again.
      return {
        status: "applied",
        after:
          succeeded && output.table !== undefined ? snapshotOf(output.table, table) : undefined,
        armedAt: armed ? armedAt : undefined,
      };
  }
  throw applyScriptFailed(ctx, request, lock, result.code, result.stderr);
}

/** Parses the dump of one table; undefined when the dump has no such table. */
export function parseTableDump(dump: string, table: TableName): SaveTable | undefined {
  return parseSave(dump).tables.find((candidate) => candidate.name === table);
}

export function newNonce(): string {
  return `@${randomBytes(12).toString("hex")}@`;
}

function snapshotOf(dump: string, table: TableName): TableSnapshot {
  return { table: parseTableDump(dump, table), hash: tableHash(dump) };
}

function applyScriptFailed(
  ctx: HostContext,
  request: ApplyRequest,
  lock: string,
  code: number | null,
  stderr: string,
): IptablesError {
  const where = describeTarget(ctx.conn);
  const details = {
    host: ctx.conn.host,
    family: request.family,
    table: request.table,
    exitCode: code,
  };
  const tail = ctx.redact(tailLines(stderr.trim(), 3));
  switch (code) {
    case 71:
      return new IptablesError(
        "COMMAND_FAILED",
        `cannot open the lock file ${lock} on ${where}${tail ? ` (${tail})` : ""}: connect as root ` +
          `or set connection.sudo`,
        { details },
      );
    case 72:
      return new IptablesError(
        "HOST_LOCK_TIMEOUT",
        `the ${request.family} ${request.table} table on ${where} stayed locked for ` +
          `${request.lockWaitSeconds} s by another pulumi-iptables operation (lock file ${lock}); ` +
          `wait for it to finish and retry`,
        { details },
      );
    case 73:
      return new IptablesError(
        "COMMAND_FAILED",
        `${request.binaries.save} -t ${request.table} failed on ${where}: ${tail}`,
        { details },
      );
    case 75:
      return new IptablesError(
        "COMMAND_FAILED",
        `cannot arm the rollback on ${where}: writing to ${RUN_DIRECTORY} failed${tail ? ` (${tail})` : ""}; ` +
          `nothing was changed`,
        { details },
      );
    default:
      return new IptablesError(
        "COMMAND_FAILED",
        `the apply script on ${where} exited with ${code} without a status: ${tail}`,
        { details },
      );
  }
}
