/**
 * A small deployment engine for tests: it runs a Pulumi program in this process with the SDK's
 * mock monitor replaced by one that plays the engine, and drives the real dynamic provider
 * server over gRPC for every custom resource the program registers.
 *
 * Engine rules it follows (as `pulumi up`, `preview`, `refresh` and `destroy` do):
 * - Check gets olds = the previous inputs and news = the registered inputs; a failure stops the
 *   resource with the provider's reasons.
 * - Secrets are stripped to plain values before every provider call (the dynamic provider
 *   declines secrets in Configure); results are re-marked secret under the same property path as
 *   a secret input, plus the resource's `additionalSecretOutputs`.
 * - Unknown values reach the provider only in preview; preview never calls Create or Update.
 * - Diff and Update get olds = the previous outputs; DIFF_UNKNOWN falls back to comparing inputs.
 * - A replacement creates the new resource first and deletes the old one after the program has
 *   finished, unless the provider or the resource asks for delete-before-replace.
 * - Resources the program no longer registers are deleted after it finishes, newest first.
 * - A failed resource fails the operation. Resources that take its outputs never register, and
 *   the run ends once nothing is in flight. Independent resources still run, as under
 *   `--continue-on-error` (without it the engine starts no new step after a failure).
 * - Destroy deletes newest first and keeps every resource that a resource whose delete failed
 *   (or was skipped) depends on or is a child of.
 * - Refresh calls Read, up to 16 at once; an empty id drops the resource from state, returned
 *   inputs replace the stored inputs. As the engine has done since 2024 (pulumi/pulumi#16146), it calls
 *   Diff with olds = the read state and news = the stored inputs, and reports the resource as
 *   changed only when Diff finds a change, so outputs that move by themselves (counters) are
 *   not drift.
 */
import { fixtureProject, type FixtureProject } from "./fixture";
import {
  ProviderServer,
  type CheckFailure,
  type PropertyMap,
  type ProviderLog,
} from "./provider-server";
import {
  annotateSecrets,
  changedKeys,
  containsUnknown,
  deepEqual,
  encryptSecrets,
  markKeysSecret,
  stripMap,
} from "./wire";

/** A program: gets the installed package and the SDK, registers resources, may return outputs. */
export type Program = (
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  pkg: any,
  pulumi: typeof import("@pulumi/pulumi"),
) => unknown;

/** One resource in the deployment's state, with secrets kept as secret values. */
export interface ResourceState {
  readonly urn: string;
  readonly type: string;
  readonly name: string;
  readonly parent: string;
  readonly custom: boolean;
  readonly id: string;
  readonly inputs: PropertyMap;
  readonly outputs: PropertyMap;
  readonly dependencies: readonly string[];
  readonly additionalSecretOutputs: readonly string[];
}

export type StepOp =
  | "create"
  | "update"
  | "replace"
  | "delete"
  | "same"
  | "refresh-same"
  | "refresh-update"
  | "refresh-delete";

/** What happened (or, in preview, would happen) to one resource. */
export interface Step {
  readonly op: StepOp;
  readonly urn: string;
  readonly name: string;
  readonly type: string;
  /** Inputs before the step (plain values); absent for a create. */
  readonly oldInputs?: PropertyMap;
  /** Inputs after Check (plain values); absent for a delete. */
  readonly newInputs?: PropertyMap;
  /** Top-level properties that differ between old and new (inputs, or outputs on refresh). */
  readonly changedKeys: readonly string[];
  readonly replaces?: readonly string[];
  /** Set for resources of other providers, which the harness records without running. */
  readonly otherProvider?: boolean;
}

export interface CallCounts {
  check: number;
  diff: number;
  create: number;
  read: number;
  update: number;
  delete: number;
}

export interface OperationResult {
  readonly steps: readonly Step[];
  readonly calls: Readonly<CallCounts>;
  /** The stack outputs the program returned (plain values). */
  readonly outputs: PropertyMap;
  /** Lines the provider process printed or logged during the operation. */
  readonly logs: readonly ProviderLog[];
}

/** A failed operation, carrying what was done before the failure. */
export class DeploymentError extends Error {
  constructor(
    readonly operation: string,
    readonly errors: readonly Error[],
    readonly result: OperationResult,
  ) {
    super(`${operation} failed:\n${errors.map((e) => `  ${e.message}`).join("\n")}`);
    this.name = "DeploymentError";
  }
}

/** Check returned failures for one resource; the engine stops that resource there. */
export class CheckFailedError extends Error {
  constructor(
    readonly resourceName: string,
    readonly failures: readonly CheckFailure[],
  ) {
    const reasons = failures.map((f) => `${f.property}: ${f.reason}`).join("; ");
    super(`${resourceName}: check failed: ${reasons}`);
    this.name = "CheckFailedError";
  }
}

export interface DeploymentOptions {
  readonly project?: string;
  readonly stack?: string;
  /** Stack configuration, keyed "project:key" as in Pulumi.<stack>.yaml. */
  readonly config?: Record<string, string>;
}

/** One stack: its state, the provider server, and the operations that change them. */
export class Deployment {
  /** Resources in dependency order (a resource after everything it depends on). */
  state: ResourceState[] = [];
  readonly project: string;
  readonly stack: string;

  /** Stack configuration the program reads with `new pulumi.Config()`. */
  config: Record<string, string>;

  private constructor(
    readonly fixture: FixtureProject,
    readonly provider: ProviderServer,
    options: DeploymentOptions,
  ) {
    this.project = options.project ?? "harness";
    this.stack = options.stack ?? "test";
    this.config = { ...options.config };
  }

  /** Builds the fixture project (once per source hash) and starts a provider server in it. */
  static async start(options: DeploymentOptions = {}): Promise<Deployment> {
    const fixture = fixtureProject();
    const provider = await ProviderServer.start(fixture.dir);
    return new Deployment(fixture, provider, options);
  }

  async close(): Promise<void> {
    await this.provider.stop();
  }

  preview(program: Program): Promise<OperationResult> {
    return this.run("preview", program, true);
  }

  up(program: Program): Promise<OperationResult> {
    return this.run("up", program, false);
  }

  /**
   * Reads every custom resource back through the provider, REFRESH_PARALLEL at a time, and
   * updates the state. Steps are recorded in the order the reads finish, and the state keeps its
   * order.
   */
  async refresh(): Promise<OperationResult> {
    const op = new Operation(this.provider);
    const refreshed = await mapWithLimit(this.state, REFRESH_PARALLEL, async (resource) => {
      if (!resource.custom || !isDynamic(resource.type)) return [resource];
      try {
        return await this.refreshOne(op, resource);
      } catch (error) {
        op.errors.push(error as Error);
        return [resource];
      }
    });
    this.state = refreshed.flat();
    return op.finish("refresh", {});
  }

  /**
   * Deletes every resource, newest first. As the engine does, a resource stays when the delete
   * of a resource that depends on it (or of one of its children) failed or was skipped.
   */
  async destroy(): Promise<OperationResult> {
    const op = new Operation(this.provider);
    const keptUrns = new Set<string>();
    for (const resource of [...this.state].reverse()) {
      const neededBy = this.state.find(
        (other) =>
          keptUrns.has(other.urn) &&
          (other.dependencies.includes(resource.urn) || other.parent === resource.urn),
      );
      if (neededBy !== undefined) {
        keptUrns.add(resource.urn);
        continue;
      }
      try {
        if (resource.custom) await this.deleteOne(op, resource);
        this.state = this.state.filter((r) => r.urn !== resource.urn);
      } catch (error) {
        op.errors.push(error as Error);
        keptUrns.add(resource.urn);
      }
    }
    return op.finish("destroy", {});
  }

  /**
   * The state as a backend's checkpoint file stores it: JSON with every secret encrypted.
   * Tests search it for secrets that leaked.
   */
  checkpoint(): string {
    return JSON.stringify({ resources: this.state.map((r) => encryptSecrets(r)) }, null, 2);
  }

  /** Finds a resource by its name (and type, when names repeat across types). */
  resource(name: string, type?: string): ResourceState {
    const found = this.state.filter(
      (r) => r.name === name && (type === undefined || r.type.endsWith(type)),
    );
    if (found.length !== 1) {
      throw new Error(`expected one resource named ${name} in state, found ${found.length}`);
    }
    return found[0];
  }

  private async run(
    kind: "preview" | "up",
    program: Program,
    preview: boolean,
  ): Promise<OperationResult> {
    const op = new Operation(this.provider);
    const previous = new Map(this.state.map((r) => [r.urn, r]));
    const registered: ResourceState[] = [];
    const pendingDeletes: ResourceState[] = [];

    const register = async (registration: Registration): Promise<ResourceState> => {
      const old = previous.get(registration.urn);
      let resource: ResourceState;
      if (!registration.custom) resource = componentState(registration, old);
      else if (!isDynamic(registration.type)) resource = otherProviderState(op, registration, old);
      else resource = await this.step(op, registration, old, preview, pendingDeletes);
      registered.push(resource);
      return resource;
    };
    const outputs = await runProgram(this, program, preview, register, op.errors);

    if (!preview && op.errors.length === 0) {
      const keptUrns = new Set(registered.map((r) => r.urn));
      const orphans = this.state.filter((r) => !keptUrns.has(r.urn)).reverse();
      for (const resource of [...pendingDeletes.reverse(), ...orphans]) {
        try {
          if (resource.custom) await this.deleteOne(op, resource);
        } catch (error) {
          op.errors.push(error as Error);
          registered.push(resource);
        }
      }
      this.state = registered;
    } else if (!preview) {
      // On failure the engine keeps what it did: new and changed resources, and every old one.
      const done = new Map(registered.map((r) => [r.urn, r]));
      const kept = this.state.map((r) => done.get(r.urn) ?? r);
      this.state = [...kept, ...registered.filter((r) => !previous.has(r.urn))];
    } else {
      for (const resource of this.state) {
        if (!registered.some((r) => r.urn === resource.urn)) {
          op.steps.push(deleteStep(resource));
        }
      }
    }
    return op.finish(kind, outputs);
  }

  /** Check, then Create, Diff + Update, or a replacement, for one custom resource. */
  private async step(
    op: Operation,
    registration: Registration,
    old: ResourceState | undefined,
    preview: boolean,
    pendingDeletes: ResourceState[],
  ): Promise<ResourceState> {
    const { urn } = registration;
    op.calls.check++;
    const checked = await this.provider.check(
      urn,
      stripMap(old?.inputs ?? {}),
      stripMap(registration.inputs),
    );
    if (checked.failures.length > 0)
      throw new CheckFailedError(registration.name, checked.failures);
    const inputs = annotateSecrets(checked.inputs, registration.inputs) as PropertyMap;
    const plainInputs = stripMap(inputs);

    if (old === undefined) {
      op.steps.push({
        ...identity(registration),
        op: "create",
        newInputs: plainInputs,
        changedKeys: [],
      });
      if (preview) return { ...stateOf(registration, "", inputs, inputs) };
      return this.createOne(op, registration, inputs);
    }

    op.calls.diff++;
    let diff = await this.provider.diff(
      old.id,
      urn,
      stripMap(old.outputs),
      plainInputs,
      stripMap(old.inputs),
    );
    const keys = changedKeys(stripMap(old.inputs), plainInputs);
    if (diff.changes === "unknown") {
      diff = { ...diff, changes: keys.length > 0 ? "some" : "none" };
    }
    const base = {
      ...identity(registration),
      oldInputs: stripMap(old.inputs),
      newInputs: plainInputs,
      changedKeys: keys,
    };

    if (diff.changes === "none") {
      op.steps.push({ ...base, op: "same" });
      return { ...old, inputs, dependencies: registration.dependencies };
    }
    if (diff.replaces.length > 0) {
      op.steps.push({ ...base, op: "replace", replaces: diff.replaces });
      if (preview) return stateOf(registration, old.id, inputs, inputs);
      if (diff.deleteBeforeReplace || registration.deleteBeforeReplace) {
        await this.deleteOne(op, old);
      } else {
        pendingDeletes.push(old);
      }
      return this.createOne(op, registration, inputs);
    }

    op.steps.push({ ...base, op: "update" });
    if (preview) return { ...old, inputs };
    op.calls.update++;
    const outs = await this.provider.update(
      old.id,
      urn,
      stripMap(old.outputs),
      plainInputs,
      stripMap(old.inputs),
    );
    return stateOf(registration, old.id, inputs, secretOutputs(outs, inputs, registration));
  }

  private async createOne(
    op: Operation,
    registration: Registration,
    inputs: PropertyMap,
  ): Promise<ResourceState> {
    if (containsUnknown(inputs)) {
      throw new Error(`${registration.name}: inputs still contain unknown values at create`);
    }
    op.calls.create++;
    const created = await this.provider.create(registration.urn, stripMap(inputs));
    return stateOf(
      registration,
      created.id,
      inputs,
      secretOutputs(created.outputs, inputs, registration),
    );
  }

  private async deleteOne(op: Operation, resource: ResourceState): Promise<void> {
    if (!isDynamic(resource.type)) {
      op.steps.push({ ...identity(resource), op: "delete", changedKeys: [], otherProvider: true });
      return;
    }
    op.calls.delete++;
    op.steps.push({
      ...identity(resource),
      op: "delete",
      oldInputs: stripMap(resource.inputs),
      changedKeys: [],
    });
    await this.provider.delete(
      resource.id,
      resource.urn,
      stripMap(resource.outputs),
      stripMap(resource.inputs),
    );
  }

  private async refreshOne(op: Operation, resource: ResourceState): Promise<ResourceState[]> {
    op.calls.read++;
    const read = await this.provider.read(
      resource.id,
      resource.urn,
      stripMap(resource.outputs),
      stripMap(resource.inputs),
    );
    if (read.id === "") {
      op.steps.push({
        ...identity(resource),
        op: "refresh-delete",
        oldInputs: stripMap(resource.inputs),
        changedKeys: [],
      });
      return [];
    }
    const outputs = annotateSecrets(read.properties, resource.outputs) as PropertyMap;
    const inputs =
      read.inputs === undefined
        ? resource.inputs
        : (annotateSecrets(read.inputs, resource.inputs) as PropertyMap);
    op.calls.diff++;
    const diff = await this.provider.diff(
      read.id,
      resource.urn,
      stripMap(outputs),
      stripMap(resource.inputs),
      stripMap(inputs),
    );
    // Drift shows as the inputs that changed, as the engine shows it, or else the outputs.
    const inputKeys = changedKeys(stripMap(resource.inputs), stripMap(inputs)).filter(
      (key) => key in resource.inputs,
    );
    const outputKeys = changedKeys(stripMap(resource.outputs), stripMap(outputs));
    const keys = inputKeys.length > 0 ? inputKeys : outputKeys;
    const drifted = diff.changes === "some" || (diff.changes === "unknown" && keys.length > 0);
    op.steps.push({
      ...identity(resource),
      op: drifted ? "refresh-update" : "refresh-same",
      oldInputs: stripMap(resource.inputs),
      newInputs: stripMap(inputs),
      changedKeys: keys,
    });
    return [{ ...resource, id: read.id, inputs, outputs }];
  }
}

/** One resource registration as the SDK sent it (inputs in wire form). */
interface Registration {
  readonly urn: string;
  readonly type: string;
  readonly name: string;
  readonly parent: string;
  readonly custom: boolean;
  readonly inputs: PropertyMap;
  readonly dependencies: readonly string[];
  readonly additionalSecretOutputs: readonly string[];
  readonly deleteBeforeReplace: boolean;
}

class Operation {
  readonly steps: Step[] = [];
  readonly errors: Error[] = [];
  readonly calls: CallCounts = { check: 0, diff: 0, create: 0, read: 0, update: 0, delete: 0 };
  private readonly logStart: number;

  constructor(private readonly provider: ProviderServer) {
    this.logStart = provider.logs.length;
  }

  finish(kind: string, outputs: PropertyMap): OperationResult {
    const result = {
      steps: this.steps,
      calls: this.calls,
      outputs,
      logs: this.provider.logs.slice(this.logStart),
    };
    if (this.errors.length > 0) throw new DeploymentError(kind, this.errors, result);
    return result;
  }
}

function identity(r: { urn: string; name: string; type: string }): {
  urn: string;
  name: string;
  type: string;
} {
  return { urn: r.urn, name: r.name, type: r.type };
}

function stateOf(
  registration: Registration,
  id: string,
  inputs: PropertyMap,
  outputs: PropertyMap,
): ResourceState {
  return {
    urn: registration.urn,
    type: registration.type,
    name: registration.name,
    parent: registration.parent,
    custom: registration.custom,
    id,
    inputs,
    outputs,
    dependencies: registration.dependencies,
    additionalSecretOutputs: registration.additionalSecretOutputs,
  };
}

/**
 * Maximum number of Read calls refresh runs at once. The CLI's `--parallel` is unbounded by
 * default, but the bound keeps a large test stack from sending every Read at the same moment.
 */
const REFRESH_PARALLEL = 16;

/** Maps `items` through `fn` with at most `limit` calls running, keeping the input order. */
async function mapWithLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function isDynamic(type: string): boolean {
  return type.startsWith("pulumi-nodejs:dynamic");
}

/**
 * Records a resource of another provider (such as `@pulumi/command`) without running it: the
 * harness starts only the dynamic provider, so such a resource counts as done with its inputs
 * as outputs, and its steps carry `otherProvider`.
 */
function otherProviderState(
  op: Operation,
  registration: Registration,
  old: ResourceState | undefined,
): ResourceState {
  const keys =
    old === undefined ? [] : changedKeys(stripMap(old.inputs), stripMap(registration.inputs));
  let kind: StepOp = "same";
  if (old === undefined) kind = "create";
  else if (keys.length > 0) kind = "update";
  op.steps.push({ ...identity(registration), op: kind, changedKeys: keys, otherProvider: true });
  return stateOf(
    registration,
    old?.id ?? `${registration.name}-id`,
    registration.inputs,
    registration.inputs,
  );
}

function componentState(registration: Registration, old: ResourceState | undefined): ResourceState {
  return stateOf(registration, "", registration.inputs, old?.outputs ?? {});
}

function deleteStep(resource: ResourceState): Step {
  return {
    ...identity(resource),
    op: "delete",
    oldInputs: stripMap(resource.inputs),
    changedKeys: [],
  };
}

/** Applies the engine's secret rules to a provider's outputs. */
function secretOutputs(
  outputs: PropertyMap,
  inputs: PropertyMap,
  registration: Registration,
): PropertyMap {
  const annotated = annotateSecrets(outputs, inputs) as PropertyMap;
  return markKeysSecret(annotated, registration.additionalSecretOutputs);
}

/**
 * Runs the program under a monitor whose registerResource hands each registration to
 * `register` and responds with the resulting outputs, so the program sees what the engine
 * would return to it.
 */
async function runProgram(
  deployment: Deployment,
  program: Program,
  preview: boolean,
  register: (registration: Registration) => Promise<ResourceState>,
  errors: Error[],
): Promise<PropertyMap> {
  const load = deployment.fixture.require;
  const pulumi = load("@pulumi/pulumi") as typeof import("@pulumi/pulumi");
  const settings = load("@pulumi/pulumi/runtime/settings");
  const state = load("@pulumi/pulumi/runtime/state");
  const { MockMonitor } = load("@pulumi/pulumi/runtime/mocks") as { MockMonitor: MockMonitorClass };
  const structproto = load("google-protobuf/google/protobuf/struct_pb");
  const resproto = load("@pulumi/pulumi/proto/resource_pb");
  const pkg = loadPackage(load);

  const noMocks = {
    newResource: () => {
      throw new Error("the harness monitor registers resources itself");
    },
    call: (args: { token: string }) => {
      throw new Error(`the harness has no function ${args.token}`);
    },
  };

  const activity: RegistrationActivity = { inFlight: 0, changes: 0 };

  class EngineMonitor extends MockMonitor {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    registerResource(req: any, callback: (error: Error | null, response?: unknown) => void): void {
      const urn: string = this.newUrn(req.getParent(), req.getType(), req.getName());
      const registration: Registration = {
        urn,
        type: req.getType(),
        name: req.getName(),
        parent: req.getParent(),
        custom: req.getCustom(),
        inputs: req.getObject()?.toJavaScript() ?? {},
        dependencies: req.getDependenciesList(),
        additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
        deleteBeforeReplace: req.getDeletebeforereplace(),
      };
      activity.inFlight++;
      activity.changes++;
      register(registration)
        .then(
          (resource) => {
            this.resources.set(urn, { urn, id: resource.id || null, state: resource.outputs });
            const response = new resproto.RegisterResourceResponse();
            response.setUrn(urn);
            response.setId(resource.id);
            response.setObject(structproto.Struct.fromJavaScript(resource.outputs));
            callback(null, response);
          },
          (error: Error) => {
            errors.push(error);
            callback(error);
          },
        )
        .finally(() => {
          activity.inFlight--;
          activity.changes++;
        });
    }
  }

  settings.setMockOptions(
    new EngineMonitor(noMocks),
    deployment.project,
    deployment.stack,
    preview,
  );
  const store = state.getStore();
  store.supportsSecrets = true;
  store.supportsResourceReferences = true;
  store.supportsOutputValues = false;
  store.supportsDeletedWith = true;
  store.supportsAliasSpecs = true;
  pulumi.runtime.setAllConfig(deployment.config, []);

  const record = (error: unknown): void => {
    const message = error instanceof Error ? error.message : String(error);
    if (!errors.some((e) => message.includes(e.message))) errors.push(error as Error);
  };
  return withRejectionsCaptured(record, async () => {
    let outputs: PropertyMap = {};
    try {
      const returned = await pulumi.runtime.runInPulumiStack(async () => program(pkg, pulumi));
      outputs = stripMap((returned ?? {}) as PropertyMap);
    } catch (error) {
      record(error);
    }
    await untilDoneOrStalled(settings.waitForRPCs(), activity, errors);
    return outputs;
  });
}

/** Registrations the monitor has received and not yet responded to, and a count of changes to it. */
interface RegistrationActivity {
  inFlight: number;
  changes: number;
}

/** Milliseconds without any registration starting or ending after which a failed run is over. */
const STALL_MS = 200;

/**
 * Waits for the SDK's outstanding RPCs, or, once a registration has failed, until no
 * registration is in flight and none started or ended for STALL_MS.
 *
 * A failed registration rejects the resource's outputs. A resource that takes one of them as an
 * input then fails while it is prepared, before it reaches the monitor, and the SDK never
 * settles that resource's own outputs or its RPC. Everything that depends on it (a component's
 * registerOutputs, `waitForRPCs`) waits forever. Under the CLI the language host's process
 * exits when its event loop is empty, and the engine finishes the update with the error. The
 * harness runs in the test process, whose event loop never empties, so it stops at the stall.
 */
async function untilDoneOrStalled(
  rpcsDone: Promise<void>,
  activity: RegistrationActivity,
  errors: readonly Error[],
): Promise<void> {
  let finished = false;
  const stalled = async (): Promise<void> => {
    let seen = -1;
    while (!finished) {
      await new Promise((resolve) => setTimeout(resolve, STALL_MS));
      const quiet = activity.inFlight === 0 && activity.changes === seen;
      if (errors.length > 0 && quiet) return;
      seen = activity.changes;
    }
  };
  try {
    await Promise.race([rpcsDone, stalled()]);
  } finally {
    finished = true;
  }
}

/**
 * Runs `fn` with unhandled rejections routed to `record`. A failed registration rejects output
 * promises of the resource that no program awaits. The language host reports them as the
 * program's errors, and so does the harness, so the test runner does not fail the file.
 */
async function withRejectionsCaptured<T>(
  record: (error: unknown) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const saved = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  process.on("unhandledRejection", record);
  try {
    return await fn();
  } finally {
    // Rejections are reported after the microtask queue drains; let that happen first.
    await new Promise((resolve) => setTimeout(resolve, 20));
    process.off("unhandledRejection", record);
    for (const listener of saved) process.on("unhandledRejection", listener);
  }
}

/** Type of the parts of the SDK's MockMonitor (runtime/mocks.js) the harness builds on. */
type MockMonitorClass = new (mocks: unknown) => {
  newUrn(parent: string, type: string, name: string): string;
  resources: Map<string, unknown>;
};

/** Loads the installed package; undefined while the package has no root module yet. */
function loadPackage(load: NodeJS.Require): unknown {
  try {
    return load("pulumi-iptables");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") return undefined;
    throw error;
  }
}

export { deepEqual };
