/** Starting the client fixture in its own Node.js process, as a second `pulumi up` would run. */
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { ClientRequest } from "./fixtures/client";

export interface ClientOutcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The JSON lines the client printed. */
  readonly lines: unknown[];
  readonly stderr: string;
}

export interface ClientRun {
  readonly pid: number;
  /** Resolves with the first printed JSON line that matches, or rejects when the process ends. */
  waitForLine(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Resolves when the process ends. */
  readonly done: Promise<ClientOutcome>;
}

const ROOT = join(__dirname, "../..");
const CLIENT = join(__dirname, "fixtures/client.ts");

/** Starts the client fixture; the caller must await `done` (or kill `pid`) before the test ends. */
export function startClient(request: ClientRequest): ClientRun {
  // node with tsx's loader, not the tsx wrapper, so that `pid` is the process with the SSH
  // connection and killing it kills the client.
  const child = spawn(process.execPath, ["--import", "tsx", CLIENT, JSON.stringify(request)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (child.pid === undefined) throw new Error("failed to start the client fixture");

  const lines: Record<string, unknown>[] = [];
  const waiters: {
    match: (line: Record<string, unknown>) => boolean;
    resolve: (line: Record<string, unknown>) => void;
  }[] = [];
  let pending = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    pending += chunk.toString("utf8");
    let newline: number;
    while ((newline = pending.indexOf("\n")) !== -1) {
      const text = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (!text.startsWith("{")) continue;
      const line = JSON.parse(text) as Record<string, unknown>;
      lines.push(line);
      for (const waiter of [...waiters]) {
        if (!waiter.match(line)) continue;
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const done = new Promise<ClientOutcome>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, lines, stderr }));
  });

  return {
    pid: child.pid,
    done,
    waitForLine(match) {
      const seen = lines.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        void done.then((outcome) =>
          reject(
            new Error(
              `client ended (${outcome.code ?? outcome.signal}) before the line: ${outcome.stderr}`,
            ),
          ),
        );
      });
    },
  };
}
