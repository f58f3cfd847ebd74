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
  lockFilePath,
  parseFramedOutput,
  READ_SCRIPT,
  RUN_DIRECTORY,
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
  const nonce = newNonce();
  const result = await runScript(ctx, `read ${family} ${table}`, READ_SCRIPT, [
    binaries.save,
    table,
    nonce,
  ]);
  const output = parseFramedOutput(result.stdout, nonce);
  return snapshotFrom(ctx, output.hash, output.table, table);
}

export interface ApplyRequest {
  readonly binaries: TableBinaries;
  readonly family: Family;
  readonly table: TableName;
  /** The hash of the snapshot the script was planned from. */
  readonly expectedHash: string;
  /** The restore script; "" only checks that the table still has `expectedHash`. */
  readonly script: string;
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
  | {
      readonly status: "rejected";
      readonly exitCode: string;
      readonly stderr: string;
      readonly armed: boolean;
    }
  | {
      readonly status: "applied";
      readonly after: TableSnapshot | undefined;
      readonly armed: boolean;
    };

/** Runs the compare-and-swap apply script and reads what it reported. */
export async function runApply(ctx: HostContext, request: ApplyRequest): Promise<ApplyOutcome> {
  const nonce = newNonce();
  const { binaries, family, table } = request;
  const lock = lockFilePath(family, table);
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
      WATCHDOG_SCRIPT,
    ],
    { input: request.script, timeoutMs: request.timeoutMs, allowFailure: true },
  );
  const output = parseFramedOutput(result.stdout, nonce);
  const armed = output.statuses.some((words) => words[0] === "armed");

  if (result.code !== 0) throw applyScriptFailed(ctx, request, lock, result.code, result.stderr);
  switch (output.status[0]) {
    case "conflict":
      return { status: "conflict", current: snapshotFrom(ctx, output.hash, output.table, table) };
    case "unchanged":
      return { status: "unchanged" };
    case "rejected":
      return {
        status: "rejected",
        exitCode: output.status[1] ?? "?",
        stderr: result.stderr,
        armed,
      };
    case "applied":
      return {
        status: "applied",
        after: snapshotFrom(ctx, output.hash, output.table, table),
        armed,
      };
    case "applied-unread":
      return { status: "applied", after: undefined, armed };
    default:
      throw new IptablesError(
        "COMMAND_FAILED",
        `the apply script on ${describeTarget(ctx.conn)} ended without a status: ` +
          `${ctx.redact(tailLines(result.stderr || result.stdout, 5))}`,
        { details: { host: ctx.conn.host, family, table } },
      );
  }
}

/** Parses the dump of one table; undefined when the dump holds no such table. */
export function parseTableDump(dump: string, table: TableName): SaveTable | undefined {
  return parseSave(dump).tables.find((candidate) => candidate.name === table);
}

export function newNonce(): string {
  return `@${randomBytes(12).toString("hex")}@`;
}

function snapshotFrom(
  ctx: HostContext,
  hash: string | undefined,
  dump: string | undefined,
  table: TableName,
): TableSnapshot {
  if (hash === undefined || dump === undefined || !/^[0-9a-f]{64}$/.test(hash)) {
    throw new IptablesError(
      "COMMAND_FAILED",
      `reading the ${table} table on ${describeTarget(ctx.conn)} returned no dump: check that ` +
        `sha256sum, sed and cut are installed there`,
      { details: { host: ctx.conn.host, table } },
    );
  }
  return { table: parseTableDump(dump, table), hash };
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
    case 74:
      return new IptablesError(
        "SSH_CLOSED",
        `the restore input for ${where} arrived incomplete, so nothing was changed; retry`,
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
        `the apply script on ${where} exited with ${code}: ${tail}`,
        { details },
      );
  }
}
