/**
 * Errors of opening an SSH connection, classified by the stage that failed, with a message that
 * names the target and the next step. The cause is kept, but messages are built here from
 * known parts only, so no credential can slip in from a library message.
 */
import { IptablesError, type ErrorCode } from "../errors";
import { describeTarget, type ResolvedConnection } from "./connection";

export type DialStage =
  | "dns"
  | "tcp-connect"
  | "tcp-timeout"
  | "tunnel"
  | "handshake"
  | "handshake-timeout"
  | "host-key"
  | "private-key"
  | "agent"
  | "authentication"
  | "closed";

const CODES: Record<DialStage, ErrorCode> = {
  dns: "SSH_DNS",
  "tcp-connect": "SSH_CONNECT",
  "tcp-timeout": "SSH_TIMEOUT",
  tunnel: "SSH_CONNECT",
  handshake: "SSH_CONNECT",
  "handshake-timeout": "SSH_TIMEOUT",
  "host-key": "SSH_HOST_KEY",
  "private-key": "SSH_AUTH",
  agent: "SSH_AUTH",
  authentication: "SSH_AUTH",
  closed: "SSH_CLOSED",
};

/**
 * Retry policy of a failed dial.
 * - "never": another attempt fails the same way (credentials, host keys, a route that rejects
 *   the address, a name that does not exist).
 * - "briefly": the failure passes within seconds when sshd restarts or the host is rebooting,
 *   and never when sshd is stopped or the host is gone (a refused port, a host that does not
 *   respond on its link). Retried within a short window only.
 * - "up-to-limit": timeouts, resets and temporary DNS failures, retried up to
 *   `dialErrorLimit` attempts.
 */
export type DialRetry = "never" | "briefly" | "up-to-limit";

/**
 * An EHOSTUNREACH that takes at least this long comes from a neighbour lookup (ARP or NDP)
 * that got no reply, which a rebooting host also causes. A quicker one comes from a route.
 * Linux gives up a neighbour lookup after 3 s by default (`mcast_solicit` 3 times
 * `retrans_time_ms` 1000, see ip-sysctl in the kernel documentation).
 */
const NEIGHBOUR_LOOKUP_MIN_MS = 1000;

/** Builds the error of a failed dial: `ssh to TARGET failed during STAGE: WHAT; NEXT`. */
export function dialError(
  conn: ResolvedConnection,
  stage: DialStage,
  what: string,
  next: string,
  options: { cause?: unknown; retry?: DialRetry; details?: Record<string, unknown> } = {},
): IptablesError {
  const message = `ssh to ${describeTarget(conn)} failed during ${stageName(stage)}: ${what}; ${next}`;
  const retry = options.retry ?? "never";
  return new IptablesError(CODES[stage], message, {
    cause: options.cause,
    details: {
      host: conn.host,
      port: conn.port,
      user: conn.user,
      stage,
      retry,
      retryable: retry !== "never",
      ...options.details,
    },
  });
}

/**
 * The reason a dial made no further attempt. "final": another attempt would fail the same way.
 * "limit": `dialErrorLimit` attempts were made. "window": the window for brief retries is over.
 * "deadline": too little time was left before the dial's deadline.
 */
export type DialStop = "final" | "limit" | "window" | "deadline";

/** The attempts of a dial that failed. */
export interface DialSummary {
  readonly attempts: number;
  /** Milliseconds from the start of the first attempt to the end of the last. */
  readonly elapsedMs: number;
  readonly stop: DialStop;
  /** The deadline's task as messages name it, such as "confirming the change". */
  readonly deadlinePurpose?: string;
}

/**
 * Adds to the last attempt's error how many attempts were made, over how long, why the dial
 * stopped and how to fail sooner. A dial that failed at its only attempt keeps the error as it
 * is, unless the deadline left no time for another attempt. Other errors pass unchanged.
 */
export function dialGaveUp(
  conn: ResolvedConnection,
  error: unknown,
  summary: DialSummary,
): unknown {
  if (!(error instanceof IptablesError)) return error;
  if (summary.attempts === 1 && summary.stop !== "deadline") return error;

  const attempts = summary.attempts === 1 ? "1 attempt" : `${summary.attempts} attempts`;
  const gaveUp = `Gave up after ${attempts} over ${formatSeconds(summary.elapsedMs)}`;
  let sentence: string;
  switch (summary.stop) {
    case "limit":
      sentence =
        `${gaveUp}, the limit set by connection.dialErrorLimit (${conn.dialErrorLimit}), each ` +
        `attempt lasting up to connection.perDialTimeout (${formatSeconds(conn.perDialTimeoutMs)}) ` +
        `with backoff between attempts. To fail sooner, lower connection.dialErrorLimit or ` +
        `connection.perDialTimeout`;
      break;
    case "window":
      sentence = `${gaveUp}, because a refused port or a host that does not respond is retried for a few seconds only`;
      break;
    case "deadline":
      sentence =
        `${gaveUp}, because too little time was left before the deadline for ` +
        `${summary.deadlinePurpose ?? "the operation"} to start another attempt`;
      break;
    case "final":
      sentence = `${gaveUp}, because another attempt would fail the same way`;
      break;
  }
  return new IptablesError(error.code, `${error.message}. ${sentence}`, {
    cause: error,
    details: {
      ...error.details,
      attempts: summary.attempts,
      elapsedMs: summary.elapsedMs,
      stop: summary.stop,
    },
  });
}

/** Formats milliseconds as seconds, to 0.1 s from 1 s up and to 1 ms below. */
export function formatSeconds(ms: number): string {
  const digits = ms < 1000 ? 3 : 1;
  return `${Number((ms / 1000).toFixed(digits))} s`;
}

/** Returns how another attempt is made after this error; "never" for errors not of a dial. */
export function dialRetryOf(error: unknown): DialRetry {
  if (!(error instanceof IptablesError)) return "never";
  const retry = error.details.retry;
  return retry === "briefly" || retry === "up-to-limit" ? retry : "never";
}

/**
 * Classifies an error of the TCP connect (a Node.js system error) that arrived `elapsedMs`
 * after the connect started.
 */
export function tcpError(
  conn: ResolvedConnection,
  error: NodeJS.ErrnoException,
  elapsedMs: number,
): IptablesError {
  const code = error.code ?? "";
  const port = conn.port;
  switch (code) {
    case "ENOTFOUND":
    case "EAI_NONAME":
    case "EAI_NODATA":
      return dialError(
        conn,
        "dns",
        `the name ${JSON.stringify(conn.host)} does not resolve (${code})`,
        "check connection.host, or use the host's IP address",
        { cause: error },
      );
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return dialError(
        conn,
        "dns",
        `the name ${JSON.stringify(conn.host)} could not be resolved now (${code})`,
        "check this machine's DNS resolver",
        { cause: error, retry: "up-to-limit" },
      );
    case "ECONNREFUSED":
      return dialError(
        conn,
        "tcp-connect",
        `the connection to port ${port} was refused (ECONNREFUSED)`,
        `check that sshd runs and listens on port ${port}, and that no firewall rejects it`,
        { cause: error, retry: "briefly" },
      );
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ENETDOWN":
    case "EADDRNOTAVAIL":
      return unreachableError(conn, error, code, elapsedMs);
    case "ECONNRESET":
    case "EPIPE":
      return dialError(
        conn,
        "tcp-connect",
        `the connection was reset (${code})`,
        "check sshd's logs on the host (MaxStartups, tcp_wrappers) and any firewall on the way",
        { cause: error, retry: "up-to-limit" },
      );
    default:
      return dialError(
        conn,
        "tcp-connect",
        `the TCP connection failed (${code || error.message})`,
        "check connection.host and connection.port",
        { cause: error, retry: "up-to-limit" },
      );
  }
}

function unreachableError(
  conn: ResolvedConnection,
  error: NodeJS.ErrnoException,
  code: string,
  elapsedMs: number,
): IptablesError {
  if (code === "EHOSTUNREACH" && elapsedMs >= NEIGHBOUR_LOOKUP_MIN_MS) {
    return dialError(
      conn,
      "tcp-connect",
      `no host responded at this address (EHOSTUNREACH after ${(elapsedMs / 1000).toFixed(1)} s)`,
      "check that the host is up and that connection.host is its address",
      { cause: error, retry: "briefly" },
    );
  }
  return dialError(
    conn,
    "tcp-connect",
    `the address is unreachable from this machine (${code})`,
    "check connection.host and the routes of this machine",
    { cause: error },
  );
}

function stageName(stage: DialStage): string {
  switch (stage) {
    case "dns":
      return "name resolution";
    case "tcp-connect":
    case "tcp-timeout":
      return "the TCP connect";
    case "tunnel":
      return "the tunnel through the jump host";
    case "handshake":
    case "handshake-timeout":
      return "the SSH handshake";
    case "host-key":
      return "host key verification";
    case "private-key":
      return "loading the private key";
    case "agent":
      return "authentication through ssh-agent";
    case "authentication":
      return "authentication";
    case "closed":
      return "the SSH handshake";
  }
}
