/**
 * The harness with hosts that cannot be reached. A RateLimit whose host does not exist fails
 * the up within seconds instead of hanging. A destroy whose host is gone, or whose sshd was
 * stopped, ends with one error within seconds and keeps what the failed delete needs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../../src/lab";
import { Deployment, DeploymentError, type Program, type ResourceState } from "./index";
import { isSecret, makeSecret } from "./wire";

type Package = typeof import("../../src/index");

/** In the lab range but in no lab's slot, so only the lab's guard `unreachable` route applies. */
const REMOVED_HOST = "198.19.254.9";

let lab: Lab;
let deployment: Deployment;

beforeAll(async () => {
  lab = await createLab({
    name: "harness-failures",
    hosts: [{ backend: "nft" }, { backend: "nft" }],
  });
  deployment = await Deployment.start({ project: "failures", stack: "test" });
});

afterAll(async () => {
  await deployment?.close();
  await lab?.destroy();
});

function rateLimitProgram(host: string, privateKey: string): Program {
  return (pkg: Package) => {
    new pkg.RateLimit("limit", {
      connection: { host, privateKey },
      persist: false,
    });
  };
}

/** Runs `operation`, expecting a DeploymentError; returns it with the time taken. */
async function failure(
  operation: Promise<unknown>,
): Promise<{ error: DeploymentError; elapsedMs: number }> {
  const started = Date.now();
  const error = await operation.catch((e: unknown) => e);
  const elapsedMs = Date.now() - started;
  expect(error).toBeInstanceOf(DeploymentError);
  return { error: error as DeploymentError, elapsedMs };
}

describe("up against a missing host", () => {
  it("fails a RateLimit on the guard route at once", async () => {
    const [host] = lab.hosts;
    const { error, elapsedMs } = await failure(
      deployment.up(rateLimitProgram(REMOVED_HOST, host.privateKey)),
    );

    expect(error.message).toContain(`ssh to ${REMOVED_HOST}:22 as "root" failed`);
    expect(error.message).toContain("unreachable from this machine (EHOSTUNREACH)");
    expect(error.result.calls.create).toBe(1);
    expect(elapsedMs).toBeLessThan(5_000);
    expect(deployment.state.filter((r) => r.custom)).toEqual([]);
  });

  it("fails a RateLimit where no host responds on the bridge", async () => {
    const [host] = lab.hosts;
    const address = `${host.ipv4.split(".").slice(0, 3).join(".")}.253`;
    const { error, elapsedMs } = await failure(
      deployment.up(rateLimitProgram(address, host.privateKey)),
    );

    expect(error.message).toContain(`ssh to ${address}:22 as "root" failed`);
    expect(error.message).toContain("no host responded at this address");
    expect(elapsedMs).toBeLessThan(12_000);
  });
});

describe("destroy against hosts that went away", () => {
  it("ends at once when the host was removed", async () => {
    const [host] = lab.hosts;
    deployment.state = [];
    await deployment.up(rateLimitProgram(host.ipv4, host.privateKey));
    const before = deployment.state.map((r) => r.name);
    // The state now names an address the lab's guard route rejects, as after the host is gone.
    deployment.state = deployment.state.map((r) => withHost(r, REMOVED_HOST));

    const { error, elapsedMs } = await failure(deployment.destroy());

    expect(error.errors.length).toBe(1);
    expect(error.message).toContain(`ssh to ${REMOVED_HOST}:22 as "root" failed`);
    expect(error.message).toContain("(EHOSTUNREACH)");
    expect(deployment.state.map((r) => r.name)).toEqual(before);
    expect(elapsedMs).toBeLessThan(2_000);
  });

  it("keeps what the failed delete needs when sshd was stopped", async () => {
    const host = lab.hosts[1];
    deployment.state = [];
    await deployment.up(rateLimitProgram(host.ipv4, host.privateKey));
    const before = deployment.state.map((r) => r.name);
    process.kill(host.sshdPid, "SIGTERM");

    const { error, elapsedMs } = await failure(deployment.destroy());

    // The hook rule goes first and fails; the rules and the chain it needs are not deleted.
    expect(error.errors.length).toBe(1);
    expect(error.message).toContain("limit-ipv4-hook");
    expect(error.message).toContain("(ECONNREFUSED)");
    expect(error.result.calls.delete).toBe(1);
    expect(deployment.state.map((r) => r.name)).toEqual(before);
    expect(elapsedMs).toBeLessThan(8_000);
  });
});

/** Returns `resource` with its connection's host replaced, keeping the connection secret. */
function withHost(resource: ResourceState, host: string): ResourceState {
  const replace = (value: unknown): unknown => {
    if (!isSecret(value)) return value;
    return makeSecret({ ...(value.value as Record<string, unknown>), host });
  };
  if (resource.inputs.connection === undefined) return resource;
  return {
    ...resource,
    inputs: { ...resource.inputs, connection: replace(resource.inputs.connection) },
    outputs: { ...resource.outputs, connection: replace(resource.outputs.connection) },
  };
}
