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

/** Builds the error of a failed dial: `ssh to TARGET failed during STAGE: WHAT; NEXT`. */
export function dialError(
  conn: ResolvedConnection,
  stage: DialStage,
  what: string,
  next: string,
  options: { cause?: unknown; retryable?: boolean; details?: Record<string, unknown> } = {},
): IptablesError {
  const message = `ssh to ${describeTarget(conn)} failed during ${stageName(stage)}: ${what}; ${next}`;
  return new IptablesError(CODES[stage], message, {
    cause: options.cause,
    details: {
      host: conn.host,
      port: conn.port,
      user: conn.user,
      stage,
      retryable: options.retryable ?? false,
      ...options.details,
    },
  });
}

/** Tells whether another attempt may succeed where this dial error failed. */
export function isRetryableDialError(error: unknown): boolean {
  return error instanceof IptablesError && error.details.retryable === true;
}

/** Classifies an error of the TCP connect (a Node.js system error). */
export function tcpError(conn: ResolvedConnection, error: NodeJS.ErrnoException): IptablesError {
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
        { cause: error, retryable: true },
      );
    case "ECONNREFUSED":
      return dialError(
        conn,
        "tcp-connect",
        `the connection to port ${port} was refused (ECONNREFUSED)`,
        `check that sshd runs and listens on port ${port}, and that no firewall rejects it`,
        { cause: error, retryable: true },
      );
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
      return dialError(
        conn,
        "tcp-connect",
        `the address is unreachable from this machine (${code})`,
        "check connection.host and the routes of this machine",
        { cause: error, retryable: true },
      );
    case "ECONNRESET":
    case "EPIPE":
      return dialError(
        conn,
        "tcp-connect",
        `the connection was reset (${code})`,
        "check sshd's logs on the host (MaxStartups, tcp_wrappers) and any firewall on the way",
        { cause: error, retryable: true },
      );
    default:
      return dialError(
        conn,
        "tcp-connect",
        `the TCP connection failed (${code || error.message})`,
        "check connection.host and connection.port",
        { cause: error, retryable: true },
      );
  }
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
