/**
 * Local command execution for the lab, with the guard that keeps netfilter writes out of the
 * root network namespace.
 */
import { spawn } from "node:child_process";
import { basename } from "node:path";
import { IptablesError, quoteForMessage, tailLines } from "../errors";

export interface LocalResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface LocalOptions {
  /** Text written to the command's standard input. */
  readonly input?: string;
  /** Kill the command after this many milliseconds. @default 30000 */
  readonly timeoutMs?: number;
  /** Return a non-zero exit instead of raising LAB_SETUP. @default false */
  readonly allowFailure?: boolean;
}

/** Programs that change netfilter or kernel state when run in a network namespace. */
const NETFILTER_PROGRAMS = /^(ip6?tables(-nft|-legacy)?(-restore)?|nft|sysctl|ebtables|arptables)$/;

/** Every command the lab ran in this process, for tests that audit where commands ran. */
export const labCommandLog: string[][] = [];

/**
 * Tells whether `argv` runs inside a namespace other than the root network namespace: through
 * `ip netns exec NAME` or `nsenter ... --net...`.
 */
function runsInLabNamespace(argv: readonly string[]): boolean {
  if (argv[0] === "ip" && argv[1] === "netns" && argv[2] === "exec") return true;
  if (argv[0] === "nsenter") return argv.some((arg) => arg === "--net" || arg.startsWith("--net="));
  return false;
}

/**
 * Raises LAB_UNSAFE when `argv` would run a netfilter or sysctl program in the root network
 * namespace. The lab never needs to: every such command targets a lab host.
 */
export function assertNotRootNetfilter(argv: readonly string[]): void {
  if (runsInLabNamespace(argv)) return;
  const programs = argv.map((arg) => basename(arg));
  if (programs.some((program) => NETFILTER_PROGRAMS.test(program))) {
    throw new IptablesError(
      "LAB_UNSAFE",
      `refusing to run ${quoteForMessage(argv.join(" "))} in the root network namespace: ` +
        `netfilter and sysctl commands must run inside a lab host (nsenter --net or ip netns exec)`,
      { details: { argv: [...argv] } },
    );
  }
}

/** Runs `argv` on this machine (no shell) and returns its output. */
export async function runLocal(
  argv: readonly string[],
  options: LocalOptions = {},
): Promise<LocalResult> {
  assertNotRootNetfilter(argv);
  labCommandLog.push([...argv]);
  const timeoutMs = options.timeoutMs ?? 30_000;

  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);

    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.stdin.on("error", () => undefined);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(
        new IptablesError(
          "LAB_SETUP",
          `failed to start ${quoteForMessage(argv[0])}: ${error.message}`,
          {
            cause: error,
          },
        ),
      );
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = {
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        code: code ?? (signal ? 128 : 1),
      };
      if (timedOut) {
        reject(
          new IptablesError(
            "LAB_SETUP",
            `${quoteForMessage(argv.join(" "))} timed out after ${timeoutMs} ms`,
          ),
        );
      } else if (result.code !== 0 && !options.allowFailure) {
        reject(
          new IptablesError(
            "LAB_SETUP",
            `${quoteForMessage(argv.join(" "))} failed with exit code ${result.code}: ` +
              tailLines(result.stderr || result.stdout),
            { details: { argv: [...argv], code: result.code } },
          ),
        );
      } else {
        resolve(result);
      }
    });

    child.stdin.end(options.input ?? "");
  });
}
