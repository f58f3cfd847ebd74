/**
 * Running commands on a host: events around each command, and errors that name the command,
 * the host and the next step.
 */
import type { Client } from "ssh2";
import { IptablesError, tailLines } from "../errors";
import { describeTarget, formatAddress, type ResolvedConnection } from "./connection";
import type { HostEvent } from "./events";
import { ChannelError, execOnClient, type CommandResult, type ExecOptions } from "./exec";
import type { PooledConnection } from "./pool";
import { quoteArgument, renderCommand, scriptArgv, withSudo } from "./shell";

/** The connection, pool, event emitter and redactor that every command of one host handle uses. */
export interface HostContext {
  readonly conn: ResolvedConnection;
  readonly pool: PooledConnection;
  readonly emit: (event: HostEvent) => void;
  readonly redact: (text: string) => string;
  /** Whether the login shell runs POSIX sh scripts; known once the facts are read. */
  readonly loginShell: { posix: boolean };
}

export interface CommandOptions {
  readonly input?: string | Buffer;
  /** @default 60_000 */
  readonly timeoutMs?: number;
  /** Return a non-zero exit status instead of raising COMMAND_FAILED. */
  readonly allowFailure?: boolean;
  /** Run on this client instead of the pooled connection (the fresh confirm connection). */
  readonly client?: Client;
  /** Receives standard output as it arrives. */
  readonly onStdout?: (chunk: Buffer) => void;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

let nextCommandId = 1;

/**
 * Runs argv, prefixed with `sudo -n` when the connection has `sudo` set. Events and errors name
 * the command by `display`, which defaults to the quoted argv.
 */
export async function runCommand(
  ctx: HostContext,
  argv: readonly string[],
  options: CommandOptions & { display?: string } = {},
): Promise<CommandResult> {
  const command = renderCommand(withSudo(argv, ctx.conn.sudo));
  return runCommandLine(ctx, command, options.display ?? command, options);
}

/** Runs a command line, as the login shell reads it, with events and classified errors. */
async function runCommandLine(
  ctx: HostContext,
  command: string,
  display: string,
  options: CommandOptions,
): Promise<CommandResult> {
  const id = nextCommandId++;
  const base = { host: formatAddress(ctx.conn.host, ctx.conn.port), user: ctx.conn.user };
  const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const execOptions: ExecOptions = { input: options.input, timeoutMs, onStdout: options.onStdout };

  ctx.emit({ kind: "command-start", ...base, id, command: display });
  const started = Date.now();
  let result: CommandResult;
  try {
    result =
      options.client === undefined
        ? await ctx.pool.exec(command, execOptions, ctx.emit)
        : await execOnClient(options.client, command, execOptions);
  } catch (error) {
    const failure = channelFailure(ctx, display, timeoutMs, error);
    ctx.emit({
      kind: "command-end",
      ...base,
      id,
      command: display,
      exitCode: null,
      durationMs: Date.now() - started,
      stderrTail: failure.message,
    });
    throw failure;
  }

  const stderrTail = result.stderr.trim() === "" ? undefined : tailLines(result.stderr, 5);
  ctx.emit({
    kind: "command-end",
    ...base,
    id,
    command: display,
    exitCode: result.code,
    durationMs: result.durationMs,
    stderrTail,
  });
  if (result.code !== 0 && !options.allowFailure) throw commandFailed(ctx, display, result);
  return result;
}

/** Runs one of the library's constant sh scripts with positional arguments. */
export function runScript(
  ctx: HostContext,
  name: string,
  script: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  if (ctx.conn.sudo || !ctx.loginShell.posix) {
    return runCommand(ctx, scriptArgv(script, name, args), {
      ...options,
      display: ctx.conn.sudo ? `sudo ${name}` : name,
    });
  }
  // A POSIX login shell runs the script itself: one process fewer than `sh -c`, which counts
  // on a loaded host. The arguments are quoted as for any command line.
  const commandLine = `set -- ${args.map(quoteArgument).join(" ")}\n${script}`;
  return runCommandLine(ctx, commandLine, name, options);
}

/** COMMAND_FAILED for a command that exited non-zero, with a hint for the usual causes. */
export function commandFailed(
  ctx: HostContext,
  display: string,
  result: CommandResult,
): IptablesError {
  const status =
    result.code === null
      ? `was killed by signal ${result.signal ?? "unknown"}`
      : `exited with ${result.code}`;
  const stderr = result.stderr.trim();
  const shown = stderr === "" ? "" : `: ${ctx.redact(tailLines(stderr, 5))}`;
  return new IptablesError(
    "COMMAND_FAILED",
    `command ${JSON.stringify(display)} on ${describeTarget(ctx.conn)} ${status}${shown}${hintFor(ctx.conn, stderr)}`,
    {
      details: {
        host: ctx.conn.host,
        port: ctx.conn.port,
        user: ctx.conn.user,
        command: display,
        exitCode: result.code,
        stderr: ctx.redact(tailLines(stderr, 20)),
      },
    },
  );
}

function hintFor(conn: ResolvedConnection, stderr: string): string {
  if (/sudo: (a password is required|a terminal is required)/.test(stderr)) {
    return `; give ${JSON.stringify(conn.user)} passwordless sudo (NOPASSWD in /etc/sudoers.d)`;
  }
  if (/is not in the sudoers file|not allowed to (execute|run)/.test(stderr)) {
    return `; allow ${JSON.stringify(conn.user)} to run commands as root through sudo`;
  }
  if (/sudo: command not found|sudo: not found/.test(stderr)) {
    return "; install sudo on the host, or connect as root";
  }
  if (
    conn.user !== "root" &&
    !conn.sudo &&
    /Permission denied|Operation not permitted|must be root/i.test(stderr)
  ) {
    return `; connect as root, or set connection.sudo for ${JSON.stringify(conn.user)}`;
  }
  return "";
}

function channelFailure(
  ctx: HostContext,
  display: string,
  timeoutMs: number,
  error: unknown,
): IptablesError {
  if (error instanceof IptablesError) return error;
  const where = describeTarget(ctx.conn);
  const details = {
    host: ctx.conn.host,
    port: ctx.conn.port,
    user: ctx.conn.user,
    command: display,
  };
  if (!(error instanceof ChannelError)) {
    return new IptablesError(
      "SSH_CLOSED",
      `command ${JSON.stringify(display)} on ${where} failed: ${ctx.redact(String((error as Error)?.message ?? error))}`,
      { cause: error, details },
    );
  }
  const failure = error.failure;
  switch (failure.kind) {
    case "timeout":
      return new IptablesError(
        "COMMAND_TIMEOUT",
        `command ${JSON.stringify(display)} on ${where} did not finish within ` +
          `${timeoutMs / 1000} s and was stopped; check the host's load, or raise the timeout`,
        { cause: error, details: { ...details, timeoutMs } },
      );
    case "closed":
      return new IptablesError(
        "SSH_CLOSED",
        `the SSH connection to ${where} closed while ${JSON.stringify(display)} ran, so it may or ` +
          `may not have finished; run the operation again`,
        { cause: error, details },
      );
    case "open-failed":
      return new IptablesError(
        "SSH_CLOSED",
        `${where} refused to open an SSH channel for ${JSON.stringify(display)} ` +
          `(${ctx.redact(failure.reason)}); check sshd's MaxSessions and the host's process limits`,
        { cause: error, details },
      );
  }
}
