/**
 * This library, driven as `pulumi up` drives it. The program has one `RateLimit` per host, plus
 * 200 `Rule` resources per host in the large variant. The engine harness runs it against the
 * real dynamic provider server, sending Check, Create, Diff and Read over gRPC for every resource
 * whose dependencies are done, with no limit on parallel operations (the CLI's `--parallel`
 * default is unbounded).
 *
 * Each first apply starts a new provider server (a new `pulumi up` starts a new provider
 * process, with no pooled SSH connection) and runs an untimed preview in it. The timed `up`
 * thus starts where a real one is after its preview: the package loaded, nothing applied yet.
 */
import { performance } from "node:perf_hooks";
import type { LabHost } from "../../src/lab";
import { Deployment, stripSecrets, type OperationResult, type Program } from "../../test/harness";
import { changedKeys } from "../../test/harness/wire";
import {
  BURST,
  CHAIN,
  exemptSource,
  expectedLines,
  HASHLIMIT_NAME,
  LOG_PREFIX,
  LOG_RATE,
  RATE,
  type BenchRule,
  type Variant,
} from "./recipe";
import type { ApplyReport, Tool } from "./tool";

const PROJECT = "bench";
const STACK = "compare";

/** Orders RateLimit gives its rules; the exemptions sort before the hashlimit rule (10). */
const ORDERS = { jump: 0, hashlimit: 10, log: 20, reject: 30 } as const;

export interface LibraryTool extends Tool {
  /** The deployment of the last apply, with its state. */
  readonly deployment: Deployment | undefined;
  /** Milliseconds the last provider server took to start (not part of any timing). */
  readonly providerStartMs: number;
}

export function libraryTool(): LibraryTool {
  let deployment: Deployment | undefined;
  let providerStartMs = 0;

  return {
    key: "library",
    name: "this library (RateLimit via the engine harness)",

    get deployment() {
      return deployment;
    },
    get providerStartMs() {
      return providerStartMs;
    },

    expectedLines: (target, host) => expectedLines(target, (rule) => marker(host, rule)),

    async reset(_lab, hosts, target) {
      await deployment?.close();
      const start = performance.now();
      deployment = await Deployment.start({ project: PROJECT, stack: STACK });
      providerStartMs = performance.now() - start;
      await deployment.preview(program(hosts, target));
    },

    async apply(_lab, hosts, target): Promise<ApplyReport> {
      if (deployment === undefined) throw new Error("apply() was called before reset()");
      const result = await deployment.up(program(hosts, target));
      return callReport(result);
    },

    async close() {
      await deployment?.close();
      deployment = undefined;
    },
  };
}

/** Reports an up by the engine's own count of Create, Update and Delete calls. */
function callReport(result: OperationResult): ApplyReport {
  const { create, update, delete: deletes } = result.calls;
  return {
    unchanged: create + update + deletes === 0,
    summary: `create ${create}, update ${update}, delete ${deletes}`,
  };
}

/** Builds the marker comment the library puts on a rule: project/stack/name and order. */
function marker(host: LabHost, rule: BenchRule): string {
  const id = `${PROJECT}/${STACK}/${resourceName(host, rule)}`;
  const order = rule.kind === "exempt" ? exemptOrder(rule.index) : ORDERS[rule.kind];
  return `pulumi-iptables:${id}:${order}`;
}

/** Names of the resources RateLimit creates (`<name>-ipv4-...`) and of the exemption rules. */
function resourceName(host: LabHost, rule: BenchRule): string {
  switch (rule.kind) {
    case "jump":
      return `${host.name}-ipv4-hook`;
    case "hashlimit":
      return `${host.name}-ipv4-accept`;
    case "log":
      return `${host.name}-ipv4-log`;
    case "reject":
      return `${host.name}-ipv4-reject`;
    case "exempt":
      return `${host.name}-exempt-${String(rule.index).padStart(3, "0")}`;
  }
}

/** Exemption 1 gets -200, exemption 200 gets -1: all before the hashlimit rule, in order. */
function exemptOrder(index: number): number {
  return index - 201;
}

function connectionOf(host: LabHost): Record<string, unknown> {
  return {
    host: host.ipv4,
    port: host.port,
    user: host.user,
    privateKey: host.privateKey,
    hostKey: host.hostKey,
  };
}

/** Builds the Pulumi program: one RateLimit per host, and the large variant's exemptions. */
export function program(hosts: readonly LabHost[], target: Variant): Program {
  return (pkg) => {
    for (const host of hosts) {
      const connection = connectionOf(host);
      const rateLimit = new pkg.RateLimit(host.name, {
        connection,
        chain: CHAIN,
        rate: RATE,
        burst: BURST,
        hashlimitName: HASHLIMIT_NAME,
        // The other tools build the classic recipe, whose hashlimit rule accepts.
        withinRate: "ACCEPT",
        log: { rate: LOG_RATE, prefix: LOG_PREFIX },
        reject: "REJECT",
        // Lab hosts run no init system; the other tools install no boot-time restore either.
        persist: false,
      });
      for (const rule of target.rules) {
        if (rule.kind !== "exempt") continue;
        new pkg.Rule(resourceName(host, rule), {
          connection,
          chain: rateLimit.families[0].chain,
          order: exemptOrder(rule.index),
          source: exemptSource(rule.index),
          jump: "RETURN",
        });
      }
    }
  };
}

/** Outputs that change with traffic, not with the rules: a refresh that changes them is no drift. */
const COUNTERS = new Set(["packets", "bytes", "entries"]);

export interface RefreshUpResult {
  readonly ms: number;
  readonly reads: number;
  /** Resources whose read returned no id or other outputs than the state stores, with the keys. */
  readonly drifted: readonly string[];
  readonly report: ApplyReport;
}

/**
 * Times a no-change `pulumi up --refresh` in a new provider server: every resource read back
 * from its host (all reads at once, as the engine runs a refresh), then an up that must change
 * nothing. The state is carried over from `from`; the new deployment is returned for closing.
 */
export async function refreshUp(
  from: Deployment,
  hosts: readonly LabHost[],
  target: Variant,
): Promise<{ result: RefreshUpResult; deployment: Deployment }> {
  const deployment = await Deployment.start({ project: PROJECT, stack: STACK });
  deployment.state = from.state;
  await deployment.preview(program(hosts, target));

  const start = performance.now();
  const custom = deployment.state.filter((resource) => resource.custom);
  const reads = await Promise.all(
    custom.map((resource) =>
      deployment.provider.read(
        resource.id,
        resource.urn,
        stripSecrets(resource.outputs) as Record<string, unknown>,
        stripSecrets(resource.inputs) as Record<string, unknown>,
      ),
    ),
  );
  const up = await deployment.up(program(hosts, target));
  const ms = performance.now() - start;

  const drifted: string[] = [];
  for (const [i, read] of reads.entries()) {
    const old = stripSecrets(custom[i].outputs) as Record<string, unknown>;
    const keys = changedKeys(old, read.properties).filter((key) => !COUNTERS.has(key));
    if (read.id === "") drifted.push(`${custom[i].name} (gone)`);
    else if (keys.length > 0) drifted.push(`${custom[i].name} (${keys.join(", ")})`);
  }
  return {
    result: { ms, reads: reads.length, drifted, report: callReport(up) },
    deployment,
  };
}
