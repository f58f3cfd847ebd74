/**
 * The real `@pulumi/pulumi` dynamic provider server, started the way the Pulumi CLI starts it,
 * and a gRPC client for its ResourceProvider service.
 *
 * The CLI runs the `pulumi-resource-pulumi-nodejs` plugin with the project directory as the
 * working directory and the engine's gRPC address as the only argument. The plugin resolves
 * `@pulumi/pulumi/cmd/dynamic-provider` from that directory, and the server prints its port as
 * the first line of stdout. The server loads each resource's serialised `__provider` with
 * require-from-string, whose module paths start at the working directory, so the provider's
 * `require("pulumi-iptables/...")` finds the package installed in the project. This module also
 * serves a minimal Engine service on loopback, so the argument the server receives is a live
 * engine address as under the CLI, and it records what the provider logs through it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import * as path from "node:path";
import { REPO_ROOT } from "./fixture";

const pulumiRequire = createRequire(
  require.resolve("@pulumi/pulumi/package.json", { paths: [REPO_ROOT] }),
);

/* eslint-disable @typescript-eslint/no-explicit-any -- generated protobuf stubs have no types here */
const grpc: any = pulumiRequire("@grpc/grpc-js");
const structproto: any = pulumiRequire("google-protobuf/google/protobuf/struct_pb");
const emptyproto: any = pulumiRequire("google-protobuf/google/protobuf/empty_pb");
const provproto: any = pulumiRequire("@pulumi/pulumi/proto/provider_pb");
const provrpc: any = pulumiRequire("@pulumi/pulumi/proto/provider_grpc_pb");
const engrpc: any = pulumiRequire("@pulumi/pulumi/proto/engine_grpc_pb");
const engproto: any = pulumiRequire("@pulumi/pulumi/proto/engine_pb");
/* eslint-enable @typescript-eslint/no-explicit-any */

/** A property bag as it travels over gRPC (google.protobuf.Struct as plain JavaScript). */
export type PropertyMap = Record<string, unknown>;

export interface CheckFailure {
  readonly property: string;
  readonly reason: string;
}

export interface CheckResult {
  readonly inputs: PropertyMap;
  readonly failures: readonly CheckFailure[];
}

export type DiffChanges = "none" | "some" | "unknown";

export interface DiffResult {
  readonly changes: DiffChanges;
  readonly replaces: readonly string[];
  readonly deleteBeforeReplace: boolean;
}

export interface ReadResult {
  /** "" when the provider reports the resource gone. */
  readonly id: string;
  readonly properties: PropertyMap;
  /** Present when the provider returned inputs (a changed resource). */
  readonly inputs?: PropertyMap;
}

/** A line the engine received from the provider process. */
export interface ProviderLog {
  readonly source: "stdout" | "stderr" | "engine";
  readonly text: string;
}

/** The running provider server and a client for it. */
export class ProviderServer {
  readonly logs: ProviderLog[] = [];

  private constructor(
    private readonly child: ChildProcess,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    private readonly client: any,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    private readonly engine: any,
  ) {}

  /** Starts the server in `projectDir` and configures it as the engine does. */
  static async start(projectDir: string): Promise<ProviderServer> {
    const logs: ProviderLog[] = [];
    const { server: engine, address } = await startEngine(logs);
    const plugin = path.join(
      path.dirname(pulumiRequire.resolve("@pulumi/pulumi/package.json")),
      "pulumi-resource-pulumi-nodejs",
    );
    const env = { ...process.env };
    // A loader from the test runner must not leak into the provider process.
    delete env.NODE_OPTIONS;
    const child = spawn("sh", [plugin, address], {
      cwd: projectDir,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const port = await readPort(child, logs);
    const client = new provrpc.ResourceProviderClient(
      `127.0.0.1:${port}`,
      grpc.credentials.createInsecure(),
    );
    const server = new ProviderServer(child, client, engine);
    server.logs.push(...logs);
    logs.length = 0;
    child.stdout?.on("data", (chunk: Buffer) => server.record("stdout", chunk));
    child.stderr?.on("data", (chunk: Buffer) => server.record("stderr", chunk));
    engine.logSink = (text: string) => server.logs.push({ source: "engine", text });

    await server.configure();
    return server;
  }

  /** Stops the server process group and the engine service. */
  async stop(): Promise<void> {
    this.client.close();
    if (this.child.exitCode === null && this.child.pid !== undefined) {
      // The plugin script runs node as its child; the group contains exactly the two of them.
      try {
        process.kill(-this.child.pid, "SIGTERM");
      } catch {
        // Already gone.
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5_000);
        this.child.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await new Promise<void>((resolve) => this.engine.tryShutdown(() => resolve()));
  }

  async check(urn: string, olds: PropertyMap, news: PropertyMap): Promise<CheckResult> {
    const request = new provproto.CheckRequest();
    request.setUrn(urn);
    request.setOlds(toStruct(olds));
    request.setNews(toStruct(news));
    const response = await this.call("check", request);
    return {
      inputs: response.getInputs()?.toJavaScript() ?? {},
      failures: response
        .getFailuresList()
        .map((f: { getProperty(): string; getReason(): string }) => ({
          property: f.getProperty(),
          reason: f.getReason(),
        })),
    };
  }

  async diff(
    id: string,
    urn: string,
    olds: PropertyMap,
    news: PropertyMap,
    oldInputs: PropertyMap,
  ): Promise<DiffResult> {
    const request = new provproto.DiffRequest();
    request.setId(id);
    request.setUrn(urn);
    request.setOlds(toStruct(olds));
    request.setNews(toStruct(news));
    request.setOldInputs(toStruct(oldInputs));
    const response = await this.call("diff", request);
    const kinds = provproto.DiffResponse.DiffChanges;
    let changes: DiffChanges = "unknown";
    if (response.getChanges() === kinds.DIFF_SOME) changes = "some";
    if (response.getChanges() === kinds.DIFF_NONE) changes = "none";
    return {
      changes,
      replaces: response.getReplacesList(),
      deleteBeforeReplace: response.getDeletebeforereplace(),
    };
  }

  async create(
    urn: string,
    properties: PropertyMap,
  ): Promise<{ id: string; outputs: PropertyMap }> {
    const request = new provproto.CreateRequest();
    request.setUrn(urn);
    request.setProperties(toStruct(properties));
    const response = await this.call("create", request);
    return { id: response.getId(), outputs: response.getProperties()?.toJavaScript() ?? {} };
  }

  async read(
    id: string,
    urn: string,
    properties: PropertyMap,
    inputs: PropertyMap,
  ): Promise<ReadResult> {
    const request = new provproto.ReadRequest();
    request.setId(id);
    request.setUrn(urn);
    request.setProperties(toStruct(properties));
    request.setInputs(toStruct(inputs));
    const response = await this.call("read", request);
    const returnedInputs = response.getInputs()?.toJavaScript();
    return {
      id: response.getId(),
      properties: response.getProperties()?.toJavaScript() ?? {},
      ...(returnedInputs === undefined ? {} : { inputs: returnedInputs }),
    };
  }

  async update(
    id: string,
    urn: string,
    olds: PropertyMap,
    news: PropertyMap,
    oldInputs: PropertyMap,
  ): Promise<PropertyMap> {
    const request = new provproto.UpdateRequest();
    request.setId(id);
    request.setUrn(urn);
    request.setOlds(toStruct(olds));
    request.setNews(toStruct(news));
    request.setOldInputs(toStruct(oldInputs));
    const response = await this.call("update", request);
    return response.getProperties()?.toJavaScript() ?? {};
  }

  async delete(
    id: string,
    urn: string,
    properties: PropertyMap,
    oldInputs: PropertyMap,
  ): Promise<void> {
    const request = new provproto.DeleteRequest();
    request.setId(id);
    request.setUrn(urn);
    request.setProperties(toStruct(properties));
    request.setOldInputs(toStruct(oldInputs));
    await this.call("delete", request);
  }

  /** Sends Configure as the engine does before the first resource call. */
  private async configure(): Promise<void> {
    const request = new provproto.ConfigureRequest();
    request.setArgs(toStruct({}));
    request.setAcceptsecrets(true);
    request.setAcceptresources(true);
    const response = await this.call("configure", request);
    // The dynamic provider declines secrets, so the engine strips them from every request.
    if (response.getAcceptsecrets() !== false) {
      throw new Error("the dynamic provider server unexpectedly accepts secrets");
    }
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private call(method: string, request: unknown): Promise<any> {
    const urn = (request as { getUrn?: () => string }).getUrn?.();
    return new Promise((resolve, reject) => {
      this.client[method](request, (error: Error | null, response: unknown) => {
        if (error) reject(new ProviderCallError(method, error, urn));
        else resolve(response);
      });
    });
  }

  private record(source: "stdout" | "stderr", chunk: Buffer): void {
    for (const line of chunk.toString().split("\n")) {
      if (line.trim() !== "") this.logs.push({ source, text: line });
    }
  }
}

/**
 * A gRPC error from the provider. The message names the resource, as the CLI does, and then
 * gives the provider's message: `NAME: create failed: MESSAGE`.
 */
export class ProviderCallError extends Error {
  constructor(
    readonly method: string,
    readonly grpcError: Error,
    readonly urn?: string,
  ) {
    const details = (grpcError as { details?: string }).details ?? grpcError.message;
    const name = urn?.split("::").pop();
    super(`${name === undefined ? "" : `${name}: `}${method} failed: ${details}`, {
      cause: grpcError,
    });
    this.name = "ProviderCallError";
  }
}

function toStruct(value: PropertyMap): unknown {
  return structproto.Struct.fromJavaScript(value);
}

/** Waits for the port the server prints as its first line. */
function readPort(child: ChildProcess, logs: ProviderLog[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let buffered = "";
    let stderr = "";
    const timer = setTimeout(
      () => fail(new Error("the dynamic provider server printed no port within 30 s")),
      30_000,
    );
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString();
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      const first = buffered.slice(0, newline).trim();
      const rest = buffered.slice(newline + 1);
      if (rest.trim() !== "") logs.push({ source: "stdout", text: rest.trim() });
      cleanup();
      const port = Number(first);
      if (Number.isInteger(port) && port > 0) resolve(port);
      else reject(new Error(`the dynamic provider server printed ${JSON.stringify(first)}`));
    };
    const onStderr = (chunk: Buffer): void => {
      stderr += chunk.toString();
    };
    const onExit = (code: number | null): void =>
      fail(new Error(`the dynamic provider server exited with ${code}: ${stderr}`));
    const fail = (error: Error): void => {
      cleanup();
      reject(error);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onStderr);
      child.off("exit", onExit);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onStderr);
    child.on("exit", onExit);
  });
}

/** Serves the Engine service on loopback; Log calls go to `logSink`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function startEngine(early: ProviderLog[]): Promise<{ server: any; address: string }> {
  const server = new grpc.Server();
  const sink = (text: string): void =>
    (server.logSink ?? ((t: string) => early.push({ source: "engine", text: t })))(text);
  server.addService(engrpc.EngineService, {
    log: (call: { request: { getMessage(): string } }, callback: (e: null, r: unknown) => void) => {
      sink(call.request.getMessage());
      callback(null, new emptyproto.Empty());
    },
    getRootResource: (_call: unknown, callback: (e: unknown, r: unknown) => void) =>
      callback({ code: grpc.status.UNIMPLEMENTED, details: "no root resource" }, null),
    setRootResource: (_call: unknown, callback: (e: unknown, r: unknown) => void) =>
      callback({ code: grpc.status.UNIMPLEMENTED, details: "no root resource" }, null),
    startDebugging: (_call: unknown, callback: (e: unknown, r: unknown) => void) =>
      callback({ code: grpc.status.UNIMPLEMENTED, details: "no debugging" }, null),
    requirePulumiVersion: (_call: unknown, callback: (e: null, r: unknown) => void) =>
      callback(null, new engproto.RequirePulumiVersionResponse()),
  });
  const port: number = await new Promise((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (error: Error | null, p: number) => (error ? reject(error) : resolve(p)),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}
