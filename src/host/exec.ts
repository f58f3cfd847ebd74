/**
 * One remote command on one SSH `exec` channel: standard input, output, exit status and a
 * timeout.
 */
import type { Client, ClientChannel } from "ssh2";

/** The exit status and output of a finished command. */
export interface CommandResult {
  /** Exit status; null when the command died from a signal. */
  readonly code: number | null;
  /** The signal that ended the command, such as "KILL", when the server reported one. */
  readonly signal?: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** The ways a channel can end without an exit status. */
export type ChannelFailure =
  | { readonly kind: "open-failed"; readonly reason: string; readonly cause: Error }
  | { readonly kind: "timeout"; readonly partial: CommandResult }
  | { readonly kind: "closed"; readonly partial: CommandResult };

export class ChannelError extends Error {
  constructor(readonly failure: ChannelFailure) {
    super(failure.kind);
  }
}

export interface ExecOptions {
  /** Bytes for standard input; standard input is closed after them (or at once without). */
  readonly input?: string | Buffer;
  readonly timeoutMs: number;
  /** Receives standard output as it arrives, before the command ends. */
  readonly onStdout?: (chunk: Buffer) => void;
}

/** Runs `command` on a new channel of `client`, rejecting with a ChannelError on failure. */
export function execOnClient(
  client: Client,
  command: string,
  options: ExecOptions,
): Promise<CommandResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let code: number | null = null;
    let signal: string | undefined;
    let exited = false;
    let settled = false;
    let channel: ClientChannel | undefined;

    const result = (): CommandResult => ({
      code,
      signal,
      stdout: Buffer.concat(stdout).toString("utf8"),
      stderr: Buffer.concat(stderr).toString("utf8"),
      durationMs: Date.now() - started,
    });
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      if (channel !== undefined) {
        // OpenSSH honours the signal request since 7.9; closing the channel is the fallback.
        try {
          channel.signal("KILL");
        } catch {
          // The channel may already be closing.
        }
        channel.close();
      }
      reject(new ChannelError({ kind: "timeout", partial: result() }));
    }, options.timeoutMs);

    try {
      client.exec(command, (error, stream) => {
        if (error) {
          clearTimeout(timer);
          if (settled) return;
          settled = true;
          reject(new ChannelError({ kind: "open-failed", reason: error.message, cause: error }));
          return;
        }
        channel = stream;
        stream.on("data", (chunk: Buffer) => {
          stdout.push(chunk);
          options.onStdout?.(chunk);
        });
        stream.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
        stream.on("exit", (exitCode: number | null, exitSignal?: string) => {
          exited = true;
          code = typeof exitCode === "number" ? exitCode : null;
          if (typeof exitSignal === "string") signal = exitSignal;
        });
        stream.on("error", () => {
          // Errors surface as a close without an exit status.
        });
        stream.on("close", () => {
          clearTimeout(timer);
          if (settled) return;
          settled = true;
          if (!exited) {
            reject(new ChannelError({ kind: "closed", partial: result() }));
            return;
          }
          resolve(result());
        });
        if (options.input === undefined) stream.end();
        else stream.end(options.input);
      });
    } catch (error) {
      // ssh2 throws synchronously when the connection is already gone.
      clearTimeout(timer);
      settled = true;
      reject(
        new ChannelError({
          kind: "open-failed",
          reason: (error as Error).message,
          cause: error as Error,
        }),
      );
    }
  });
}
