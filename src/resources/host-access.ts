/**
 * Access to hosts for the providers: the host layer's pooled handle, with the host key pinned
 * (trust on first use) and the host layer's warnings forwarded to the Pulumi CLI.
 */
import { getHost, type ApplyOptions, type Host } from "../host";
import type { HostEvent } from "../host/events";
import { hostConnection } from "./connection";

/**
 * Opens (or reuses) the connection to the host of a resource. `recordedHostKey` is the key
 * stored in state by an earlier operation; the connection must present it unless the user set
 * `connection.hostKey`.
 */
export function openHost(connection: unknown, recordedHostKey?: unknown): Promise<Host> {
  return getHost(hostConnection(connection, recordedHostKey), { onEvent: forwardEvent });
}

/**
 * Forwards the events an operator should see. The provider process has no engine connection,
 * so `pulumi.log` would fall back to the console anyway: the CLI shows a provider's stdout as
 * diagnostics. Commands and their timings stay out, because every resource would repeat them.
 */
function forwardEvent(event: HostEvent): void {
  if (event.kind === "warning") {
    console.log(`warning: ${event.host}: ${event.message}`);
  } else if (event.kind === "retry") {
    console.log(
      `${event.host}: retrying ${event.operation} (attempt ${event.attempt}) in ` +
        `${event.delayMs} ms: ${event.reason}`,
    );
  }
}

/**
 * Returns the options of a resource's table change: the lock-out rollback where the change can
 * affect new connections, confirmed within the connection's `confirmTimeoutSeconds`.
 */
export function applyOptions(connection: unknown): ApplyOptions {
  const seconds = (connection as { confirmTimeoutSeconds?: unknown } | undefined)
    ?.confirmTimeoutSeconds;
  return typeof seconds === "number"
    ? { rollback: "auto", confirmTimeoutSeconds: seconds }
    : { rollback: "auto" };
}
