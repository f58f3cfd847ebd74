/**
 * Structured events of the host layer, which the resources forward to `pulumi.log`.
 *
 * Events never carry a secret: every text field passes through the connection's redactor
 * before it leaves this layer.
 */

interface EventBase {
  /** `host:port` of the target. */
  readonly host: string;
  readonly user: string;
}

export type HostEvent =
  | (EventBase & {
      readonly kind: "connect";
      /** "pool" for the shared connection, "confirm" for the fresh one that disarms a rollback. */
      readonly purpose: "pool" | "confirm";
      readonly via?: string;
      readonly hostKeyFingerprint: string;
      readonly durationMs: number;
    })
  | (EventBase & {
      readonly kind: "command-start";
      /** Number of the command within this process, pairing start and end. */
      readonly id: number;
      /** The command as sent (quoted argv), or a short name for the library's own scripts. */
      readonly command: string;
    })
  | (EventBase & {
      readonly kind: "command-end";
      readonly id: number;
      readonly command: string;
      /** Exit status, or null when the command died from a signal or the channel closed. */
      readonly exitCode: number | null;
      readonly durationMs: number;
      /** The last lines of standard error, when there were any. */
      readonly stderrTail?: string;
    })
  | (EventBase & {
      readonly kind: "retry";
      /** The retried operation: "dial", or "apply" when a table changed between read and write. */
      readonly operation: "dial" | "apply";
      readonly attempt: number;
      readonly delayMs: number;
      readonly reason: string;
    })
  | (EventBase & {
      readonly kind: "warning";
      readonly message: string;
    });

export type HostEventListener = (event: HostEvent) => void;

let moduleSink: HostEventListener | undefined;

/** Sets (or with undefined, removes) the listener that receives the events of every host. */
export function setHostEventSink(sink: HostEventListener | undefined): void {
  moduleSink = sink;
}

/** Builds the function that delivers an event to `listener` and the module sink. */
export function eventEmitter(
  listener: HostEventListener | undefined,
  redact: (text: string) => string,
): (event: HostEvent) => void {
  return (event) => {
    const clean = redactEvent(event, redact);
    for (const target of [listener, moduleSink]) {
      if (target === undefined) continue;
      try {
        target(clean);
      } catch {
        // A failing listener must not fail the operation it observes.
      }
    }
  };
}

function redactEvent(event: HostEvent, redact: (text: string) => string): HostEvent {
  const copy: Record<string, unknown> = { ...event };
  for (const [key, value] of Object.entries(copy)) {
    if (typeof value === "string") copy[key] = redact(value);
  }
  return copy as unknown as HostEvent;
}

/** Builds a function that replaces each of `secrets` in a text by `***`, longest first. */
export function secretRedactor(secrets: readonly string[]): (text: string) => string {
  const ordered = [...new Set(secrets)]
    .filter((s) => s.length > 0)
    .sort((a, b) => b.length - a.length);
  return (text) => {
    let result = text;
    for (const secret of ordered) result = result.split(secret).join("***");
    return result;
  };
}
