/**
 * The `connection` input of every resource, typed from `@pulumi/command`'s own
 * `remote.ConnectionArgs`, so users can pass the object they already give `remote.Command`.
 */
import type * as pulumi from "@pulumi/pulumi";
import type { types } from "@pulumi/command";
import { hasErrorCode } from "../errors";
import { resolveConnection, type HostConnection } from "../host/connection";

/**
 * SSH settings of one host: `@pulumi/command`'s `remote.ConnectionArgs` (`host`, `port` 22,
 * `user` "root", `password`, `privateKey`, `privateKeyPassword`, `agentSocketPath`,
 * `dialErrorLimit` 10, `perDialTimeout` 15 seconds, `proxy`, `hostKey`), plus `sudo`.
 *
 * Without `hostKey`, the key the host presents on the first operation is stored in state
 * (output `hostKey`) and every later operation requires the same key.
 *
 * Dials that time out are retried up to `dialErrorLimit` times. Errors that will not pass soon
 * fail at once (no route, rejected credentials or host key), and a refused connection is
 * retried for about 5 s only, long enough for an sshd that is restarting.
 */
export type ConnectionArgs = types.input.remote.ConnectionArgs & {
  /**
   * Runs every command as root through `sudo -n`, for a `user` other than root with
   * passwordless sudo.
   * @default false
   */
  readonly sudo?: pulumi.Input<boolean>;
  /**
   * Seconds a change that can affect new connections (anything reachable from INPUT) stays
   * armed: unless a new SSH connection confirms it within this time, the host restores the
   * previous rules by itself. Raise it for hosts that are slow to accept a connection.
   * @default 20
   */
  readonly confirmTimeoutSeconds?: pulumi.Input<number>;
};

/** Connection fields the provider accepts, in the order messages list them. */
const FIELDS = [
  "host",
  "port",
  "user",
  "password",
  "privateKey",
  "privateKeyPassword",
  "agentSocketPath",
  "dialErrorLimit",
  "perDialTimeout",
  "proxy",
  "hostKey",
  "sudo",
  "confirmTimeoutSeconds",
] as const;

/** A connection problem found by check(): the property path and the reason. */
export interface ConnectionProblem {
  readonly property: string;
  readonly reason: string;
}

/**
 * Validates a connection as it reaches the provider (plain values), without contacting the
 * host. Returns the problems; an empty list means the connection can be used.
 */
export function checkConnection(value: unknown, property = "connection"): ConnectionProblem[] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return [{ property, reason: `${property} is missing: set at least { host, privateKey }` }];
  }
  const unknownKeys = Object.keys(value).filter(
    (key) => !(FIELDS as readonly string[]).includes(key),
  );
  if (unknownKeys.length > 0) {
    const key = unknownKeys[0];
    return [
      {
        property: `${property}.${key}`,
        reason: `${property}.${key} is not a connection setting: use ${FIELDS.join(", ")}`,
      },
    ];
  }
  const empty = Object.entries(value).find(([, field]) => field === null);
  if (empty !== undefined) {
    const field = `${property}.${empty[0]}`;
    return [{ property: field, reason: `${field} is null: give a value or leave the field out` }];
  }
  const sudo = (value as { sudo?: unknown }).sudo;
  if (sudo !== undefined && typeof sudo !== "boolean") {
    return [{ property: `${property}.sudo`, reason: `${property}.sudo must be true or false` }];
  }
  const confirm = (value as { confirmTimeoutSeconds?: unknown }).confirmTimeoutSeconds;
  if (
    confirm !== undefined &&
    (typeof confirm !== "number" || !Number.isInteger(confirm) || confirm < 1 || confirm > 3600)
  ) {
    return [
      {
        property: `${property}.confirmTimeoutSeconds`,
        reason:
          `${property}.confirmTimeoutSeconds ${JSON.stringify(confirm)} is invalid: ` +
          "use whole seconds from 1 to 3600",
      },
    ];
  }
  try {
    resolveConnection(value as HostConnection, property);
    return [];
  } catch (error) {
    if (!hasErrorCode(error, "INVALID_INPUT")) throw error;
    const field = typeof error.details.field === "string" ? error.details.field : property;
    return [{ property: field, reason: error.message }];
  }
}

/**
 * Turns the plain `connection` input into the host layer's connection, pinning `hostKey`:
 * the key the user set, else the key recorded in state at the first operation, if any.
 */
export function hostConnection(value: unknown, recordedHostKey?: unknown): HostConnection {
  const connection = value as HostConnection;
  if (connection.hostKey !== undefined && connection.hostKey !== "") return connection;
  if (typeof recordedHostKey === "string" && recordedHostKey !== "") {
    return { ...connection, hostKey: recordedHostKey };
  }
  return connection;
}

/** Returns `host:port` of a connection; a change of either replaces the resource. */
export function connectionAddress(value: unknown): string {
  const connection = (value ?? {}) as { host?: unknown; port?: unknown };
  return `${String(connection.host)}:${String(connection.port ?? 22)}`;
}
