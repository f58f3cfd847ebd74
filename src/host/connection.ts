/**
 * How to reach a host: the connection settings, their defaults and their validation.
 *
 * The fields follow `@pulumi/command`'s `remote.ConnectionArgs` (plus `sudo`), as plain values
 * that the resource layer has already resolved.
 */
import { createHash } from "node:crypto";
import { IptablesError, quoteForMessage } from "../errors";

/** The settings of one SSH jump host: a connection without its own proxy or sudo. */
export type ProxyConnection = Omit<HostConnection, "proxy" | "sudo">;

export interface HostConnection {
  /** Address or DNS name of the host. */
  readonly host: string;
  /** @default 22 */
  readonly port?: number;
  /** @default "root" */
  readonly user?: string;
  /** Password for password and keyboard-interactive authentication. */
  readonly password?: string;
  /** Private key in OpenSSH or PEM format. */
  readonly privateKey?: string;
  /** Passphrase of an encrypted `privateKey`. */
  readonly privateKeyPassword?: string;
  /**
   * Path of an ssh-agent socket whose keys are offered.
   * @default $SSH_AUTH_SOCK when neither `privateKey` nor `password` is set
   */
  readonly agentSocketPath?: string;
  /**
   * Attempts to open the connection before giving up, with exponential backoff between them;
   * -1 retries until the operation's deadline. Timeouts, resets and temporary DNS failures are
   * retried up to this limit. A refused port, or a host that does not respond on its link, is
   * retried for about 5 s only, so a restarting sshd is waited for but a stopped one is not.
   * Rejected credentials or host keys and an unreachable route fail at once.
   * @default 10
   */
  readonly dialErrorLimit?: number;
  /**
   * Seconds one attempt may take, from the TCP connect to the end of authentication.
   * @default 15
   */
  readonly perDialTimeout?: number;
  /** A jump host: the connection to `host` is tunnelled through it (`direct-tcpip`). */
  readonly proxy?: ProxyConnection;
  /**
   * The host's public key in authorized_keys format (`ssh-ed25519 AAAA...`). When set, the server
   * must present exactly this key. When left out, the first key seen in this process is trusted
   * and later connections must present the same key.
   */
  readonly hostKey?: string;
  /**
   * Run every command as root through `sudo -n` (the user needs passwordless sudo).
   * @default false
   */
  readonly sudo?: boolean;
}

/** A connection with every default filled in. */
export interface ResolvedConnection {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password?: string;
  readonly privateKey?: string;
  readonly privateKeyPassword?: string;
  readonly agentSocketPath?: string;
  readonly dialErrorLimit: number;
  readonly perDialTimeoutMs: number;
  readonly proxy?: ResolvedConnection;
  readonly hostKey?: string;
  readonly sudo: boolean;
}

const DEFAULT_PORT = 22;
const DEFAULT_USER = "root";
const DEFAULT_DIAL_ERROR_LIMIT = 10;
const DEFAULT_PER_DIAL_TIMEOUT_SECONDS = 15;

/** Fills in defaults and validates every field, raising INVALID_INPUT naming the field. */
export function resolveConnection(conn: HostConnection, field = "connection"): ResolvedConnection {
  const host = requireText(conn.host, `${field}.host`);
  const user = conn.user === undefined ? DEFAULT_USER : requireText(conn.user, `${field}.user`);
  const port = conn.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(`${field}.port`, port, "use an integer from 1 to 65535");
  }

  const dialErrorLimit = conn.dialErrorLimit ?? DEFAULT_DIAL_ERROR_LIMIT;
  if (!Number.isInteger(dialErrorLimit) || dialErrorLimit < -1 || dialErrorLimit === 0) {
    throw invalid(`${field}.dialErrorLimit`, dialErrorLimit, "use a positive integer, or -1");
  }
  const perDialTimeout = conn.perDialTimeout ?? DEFAULT_PER_DIAL_TIMEOUT_SECONDS;
  if (typeof perDialTimeout !== "number" || !(perDialTimeout > 0) || perDialTimeout > 3600) {
    throw invalid(`${field}.perDialTimeout`, perDialTimeout, "use seconds above 0, at most 3600");
  }

  // Like @pulumi/command, fall back to the agent of the environment, but only when no other
  // credential is given, so an unrelated agent is never offered beside an explicit key.
  const agentSocketPath =
    conn.agentSocketPath ??
    (conn.password === undefined && conn.privateKey === undefined
      ? process.env.SSH_AUTH_SOCK || undefined
      : undefined);
  if (conn.password === undefined && conn.privateKey === undefined && !agentSocketPath) {
    throw new IptablesError(
      "INVALID_INPUT",
      `${field} for ${host} has no credentials: set privateKey, password or agentSocketPath`,
      { details: { field } },
    );
  }
  if (conn.proxy !== undefined && "proxy" in conn.proxy && conn.proxy.proxy !== undefined) {
    throw invalid(`${field}.proxy.proxy`, "(a proxy)", "chain at most one jump host");
  }

  return {
    host,
    port,
    user,
    password: conn.password,
    privateKey: conn.privateKey,
    privateKeyPassword: conn.privateKeyPassword,
    agentSocketPath,
    dialErrorLimit,
    perDialTimeoutMs: Math.round(perDialTimeout * 1000),
    proxy: conn.proxy === undefined ? undefined : resolveConnection(conn.proxy, `${field}.proxy`),
    hostKey: conn.hostKey,
    sudo: (conn as HostConnection).sudo ?? false,
  };
}

/** Describes the target as messages name it: `198.18.0.2:22 as "root"`, plus the jump host if any. */
export function describeTarget(conn: ResolvedConnection): string {
  const target = `${formatAddress(conn.host, conn.port)} as ${JSON.stringify(conn.user)}`;
  if (conn.proxy === undefined) return target;
  return `${target} via jump host ${formatAddress(conn.proxy.host, conn.proxy.port)}`;
}

/** `host:port`, with brackets around an IPv6 address. */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Builds the key of the pooled SSH connection: one per host, port, user, jump host, pinned host
 * key and set of credentials. The credentials enter only as a digest. A handle with other
 * credentials or another pin never shares a connection it could not have opened itself.
 */
export function connectionPoolKey(conn: ResolvedConnection): string {
  const digest = createHash("sha256")
    .update(
      JSON.stringify([
        conn.password ?? null,
        conn.privateKey ?? null,
        conn.privateKeyPassword ?? null,
        conn.agentSocketPath ?? null,
        conn.hostKey?.trim().split(/\s+/).slice(0, 2).join(" ") ?? null,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
  const via = conn.proxy === undefined ? "" : ` via ${connectionPoolKey(conn.proxy)}`;
  return `${conn.user}@${formatAddress(conn.host, conn.port)}#${digest}${via}`;
}

/** Lists the secret values of a connection and its jump host, for redaction. */
export function connectionSecrets(conn: ResolvedConnection): string[] {
  const secrets = [conn.password, conn.privateKeyPassword, conn.privateKey].filter(
    (value): value is string => value !== undefined && value.length > 0,
  );
  if (conn.privateKey !== undefined) {
    // A message could quote one line of a key, so each long line is redacted on its own too.
    for (const line of conn.privateKey.split(/\r?\n/)) {
      if (line.trim().length >= 16) secrets.push(line.trim());
    }
  }
  return conn.proxy === undefined ? secrets : [...secrets, ...connectionSecrets(conn.proxy)];
}

function requireText(value: unknown, field: string): string {
  // eslint-disable-next-line no-control-regex
  if (typeof value !== "string" || value.length === 0 || /[\s\u0000-\u001f]/.test(value)) {
    throw invalid(field, value, "use a non-empty value without spaces or control characters");
  }
  return value;
}

function invalid(field: string, value: unknown, fix: string): IptablesError {
  const shown = typeof value === "string" ? quoteForMessage(value) : String(value);
  return new IptablesError("INVALID_INPUT", `${field} ${shown} is invalid: ${fix}`, {
    details: { field, value: typeof value === "string" ? value : String(value) },
  });
}
