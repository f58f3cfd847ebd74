/** Starting the client fixture in its own Node.js process, as a second `pulumi up` would run. */
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { ClientRequest } from "./fixtures/client";

export interface ClientRun {
  readonly pid: number;
  /** Resolves when the process ends, with its exit status, signal and the JSON lines it printed. */
  readonly done: Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    lines: unknown[];
    stderr: string;
  }>;
}

const ROOT = join(__dirname, "../..");
const CLIENT = join(__dirname, "fixtures/client.ts");

/** Starts the client fixture; the caller must await `done` (or kill `pid`) before the test ends. */
export function startClient(request: ClientRequest): ClientRun {
  // node with tsx's loader, not the tsx wrapper, so that `pid` is the process that holds the SSH
  // connection and killing it kills the client.
  const child = spawn(process.execPath, ["--import", "tsx", CLIENT, JSON.stringify(request)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const done = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    lines: unknown[];
    stderr: string;
  }>((resolve) => {
    child.on("close", (code, signal) => {
      const lines = stdout
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as unknown);
      resolve({ code, signal, lines, stderr });
    });
  });
  if (child.pid === undefined) throw new Error("failed to start the client fixture");
  return { pid: child.pid, done };
}
