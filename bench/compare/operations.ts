/**
 * The SSH cost of single resource operations of this library: how many commands (each one SSH
 * exec request, so at least one round trip) and new SSH connections one Read, Update, Delete
 * and Create of a rule take.
 *
 * The operations call the rule provider in this process, with the inputs and outputs the engine
 * harness stored for a rule of a deployed RateLimit, and count the host layer's events. The
 * provider code is the same the provider server runs; only the gRPC hop is skipped.
 */
import { performance } from "node:perf_hooks";
import type { LabHost } from "../../src/lab";
import { closeAllHosts, setHostEventSink, type HostEvent } from "../../src/host";
import { providers } from "../../src/resources/providers";
import { stripSecrets, type Deployment } from "../../test/harness";

export interface OperationCost {
  readonly operation: string;
  readonly ms: number;
  readonly commands: number;
  /**
   * New SSH connections with the time each took, by purpose: "pool" (the shared one) or
   * "confirm" (the fresh one that disarms the dead-man switch).
   */
  readonly connections: readonly string[];
  /** The commands as the host layer names them, with the time each took. */
  readonly commandNames: readonly string[];
}

type Props = Record<string, unknown>;

/**
 * Reads, updates (to another log rate), updates back, deletes and re-creates the LOG rule of
 * `host`'s RateLimit, leaving the host as it found it. The first operation opens the pooled
 * connection, as the first operation on a host does in a new provider process.
 */
export async function measureRuleOperations(
  deployment: Deployment,
  host: LabHost,
): Promise<OperationCost[]> {
  const state = deployment.resource(`${host.name}-ipv4-log`);
  const provider = providers.Rule;
  const events: HostEvent[] = [];
  const costs: OperationCost[] = [];

  async function measure<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const from = events.length;
    const start = performance.now();
    const value = await fn();
    const ms = performance.now() - start;
    const seen = events.slice(from);
    costs.push({
      operation,
      ms,
      commands: seen.filter((e) => e.kind === "command-start").length,
      connections: seen.flatMap((e) =>
        e.kind === "connect" ? [`${e.purpose} (${Math.round(e.durationMs)} ms)`] : [],
      ),
      commandNames: seen.flatMap((e) =>
        e.kind === "command-end" ? [`${e.command} (${Math.round(e.durationMs)} ms)`] : [],
      ),
    });
    return value;
  }

  setHostEventSink((event) => events.push(event));
  try {
    const inputs = stripSecrets(state.inputs) as Props;
    const outputs = stripSecrets(state.outputs) as Props;
    await measure("read", () => provider.read(state.id, outputs));

    const faster = await measure("check", () =>
      provider.check(inputs, { ...inputs, limit: "2/sec" }),
    );
    const updated = await measure("update", () =>
      provider.update(state.id, outputs, checked(faster)),
    );
    const original = await provider.check(checked(faster), inputs);
    const restored = await measure("update back", () =>
      provider.update(state.id, updated.outs, checked(original)),
    );
    await measure("delete", () => provider.delete(state.id, restored.outs));
    await measure("create", () => provider.create(checked(original)));
  } finally {
    setHostEventSink(undefined);
    closeAllHosts();
  }
  return costs;
}

function checked(result: { inputs: Props; failures: readonly { reason: string }[] }): Props {
  if (result.failures.length > 0) {
    throw new Error(`check failed: ${result.failures.map((f) => f.reason).join("; ")}`);
  }
  return result.inputs;
}
