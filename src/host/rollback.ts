/**
 * The dead-man switch after an armed apply: prove over a NEW SSH connection (a fresh TCP
 * handshake, which a rule that blocks new connections stops) that the host is still reachable,
 * and disarm the host's rollback. When that fails, the host restores the saved table by itself
 * at the deadline; this side waits for it and reports APPLY_ROLLED_BACK.
 */
import { IptablesError, isIptablesError } from "../errors";
import type { Family, SaveTable, TableName } from "../netfilter/types";
import { runScript, type HostContext } from "./commands";
import { describeTarget } from "./connection";
import { dial } from "./dial";
import type { TableBinaries } from "./facts";
import {
  AWAIT_ROLLBACK_SCRIPT,
  beforeFilePath,
  DISARM_SCRIPT,
  lockFilePath,
  parseFramedOutput,
  RUN_DIRECTORY,
} from "./table-scripts";
import { newNonce, parseTableDump } from "./tables";

export interface ConfirmRequest {
  readonly binaries: TableBinaries;
  readonly family: Family;
  readonly table: TableName;
  readonly token: string;
  /** Epoch milliseconds at which the host's watchdog restores the table, at the earliest. */
  readonly deadline: number;
  readonly confirmTimeoutSeconds: number;
}

/** Result of a confirmation that found the change still in place. */
export interface Confirmed {
  readonly confirmed: true;
}

/**
 * Disarms the rollback over a new connection. Resolves when the change is kept, and raises
 * APPLY_ROLLED_BACK when the host restored the previous table, with the table read back.
 */
export async function confirmOrRollBack(
  ctx: HostContext,
  request: ConfirmRequest,
): Promise<Confirmed> {
  // The dial must end early enough for the disarm command to reach the host before its timer.
  const marginMs = Math.min(2000, Math.max(300, request.confirmTimeoutSeconds * 200));
  let reason: string;
  let cause: unknown;
  try {
    const transport = await dial(ctx.conn, {
      purpose: "confirm",
      deadline: {
        at: request.deadline - marginMs,
        purpose: "confirming the change",
        setting: "connection.confirmTimeoutSeconds",
      },
      emit: ctx.emit,
    });
    try {
      const result = await runScript(
        ctx,
        "disarm rollback",
        DISARM_SCRIPT,
        [RUN_DIRECTORY, request.token],
        {
          client: transport.client,
          timeoutMs: Math.max(2000, request.deadline - Date.now() + 5000),
        },
      );
      const status = result.stdout.trim().split("\n")[0];
      if (status === "confirmed") return { confirmed: true };
      reason =
        status === "rolled-back"
          ? "the new SSH connection came through only after the confirm timeout"
          : "the rollback state on the host was gone before it could be disarmed";
    } finally {
      transport.close();
    }
  } catch (error) {
    cause = error;
    reason = `a new SSH connection failed after the change: ${isIptablesError(error) ? error.message : String(error)}`;
  }
  return awaitRollback(ctx, request, reason, cause);
}

async function awaitRollback(
  ctx: HostContext,
  request: ConfirmRequest,
  reason: string,
  cause: unknown,
): Promise<Confirmed> {
  const where = describeTarget(ctx.conn);
  const what = `the ${request.family} ${request.table} table on ${where}`;
  const nonce = newNonce();
  const waitSeconds = Math.ceil((request.deadline - Date.now()) / 1000) + 30;
  let status: string | undefined;
  let restoreOutput: readonly string[] = [];
  let table: SaveTable | undefined;
  try {
    // Over the pooled connection, which was open before the change. It takes the table lock,
    // which the watchdog holds until it has fired or been disarmed.
    const result = await runScript(
      ctx,
      "await rollback",
      AWAIT_ROLLBACK_SCRIPT,
      [
        request.binaries.save,
        request.binaries.restore,
        request.table,
        lockFilePath(request.family, request.table),
        nonce,
        String(waitSeconds),
        RUN_DIRECTORY,
        request.token,
        beforeFilePath(request.family, request.table),
      ],
      { timeoutMs: (waitSeconds + 30) * 1000 },
    );
    const output = parseFramedOutput(result.stdout, nonce);
    status = output.status[0];
    restoreOutput = output.values.get("restore-output") ?? [];
    table = output.table === undefined ? undefined : parseTableDump(output.table, request.table);
  } catch (error) {
    throw new IptablesError(
      "APPLY_ROLLED_BACK",
      `the change to ${what} was not confirmed (${reason}), so the host restores the previous ` +
        `table by itself within ${request.confirmTimeoutSeconds} s of the change; this process ` +
        `could not verify it because the existing connection failed too ` +
        `(${isIptablesError(error) ? error.message : String(error)})`,
      { cause: cause ?? error, details: { ...details(ctx, request), verified: false } },
    );
  }

  if (status === "not-fired") {
    // The disarm went through although its output was lost, so the change is kept.
    return { confirmed: true };
  }
  const restoreFailed = status === "fired" && !restoreOutput.some((line) => line === "exit 0");
  if (restoreFailed) {
    throw new IptablesError(
      "APPLY_ROLLED_BACK",
      `the change to ${what} was not confirmed (${reason}) and the host's rollback failed: ` +
        `${restoreOutput.join(" | ")}; restore the table by hand`,
      { cause, details: { ...details(ctx, request), verified: true, restoreOutput, after: table } },
    );
  }
  throw new IptablesError(
    "APPLY_ROLLED_BACK",
    `the change to ${what} was rolled back: ${reason}. The host restored the previous table by ` +
      `itself after ${request.confirmTimeoutSeconds} s. The change most likely blocks new SSH ` +
      `connections from this machine; fix the rules, or raise connection.confirmTimeoutSeconds if the host ` +
      `is only slow to accept connections`,
    { cause, details: { ...details(ctx, request), verified: status === "fired", after: table } },
  );
}

function details(ctx: HostContext, request: ConfirmRequest): Record<string, unknown> {
  return {
    host: ctx.conn.host,
    port: ctx.conn.port,
    user: ctx.conn.user,
    family: request.family,
    table: request.table,
    confirmTimeoutSeconds: request.confirmTimeoutSeconds,
  };
}
