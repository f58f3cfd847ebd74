/**
 * ConntrackSysctl and PersistenceUnit on lab hosts, through the engine harness. A lab host is a
 * network namespace without an init system, as a container on a real fleet is: conntrack sizing
 * is read-only there and there is nothing to install a boot job into, so these tests cover the
 * errors that report it, and the per-namespace settings that do work there. Sizing and boot jobs
 * on hosts that really boot are covered in test/boot.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { CheckFailedError, Deployment, DeploymentError, type Program } from "../harness";

type Package = typeof import("../../src/index");

const TIMEOUT = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
const SYSCTL_FILE = "/etc/sysctl.d/90-pulumi-iptables-conntrack.conf";
const MODULES_FILE = "/etc/modules-load.d/pulumi-iptables-conntrack.conf";

let lab: Lab;
let host: LabHost;
let deployment: Deployment;
let originalTimeout: number;

beforeAll(async () => {
  lab = await createLab({ name: "res-conntrack", hosts: 1 });
  host = lab.hosts[0];
  originalTimeout = Number((await read(TIMEOUT)).trim());
  deployment = await Deployment.start({ project: "conntrack", stack: "lab" });
}, 180_000);

afterAll(async () => {
  await deployment?.close();
  await lab?.destroy();
});

function connection() {
  return { host: host.ipv4, privateKey: host.privateKey, hostKey: host.hostKey };
}

async function read(path: string): Promise<string> {
  const result = await lab.exec(host, ["cat", path]);
  expect(result.code, result.stderr).toBe(0);
  return result.stdout;
}

async function exists(path: string): Promise<boolean> {
  return (await lab.exec(host, ["test", "-e", path])).code === 0;
}

async function failureOf(program: Program): Promise<DeploymentError> {
  const error = await deployment.up(program).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DeploymentError);
  return error as DeploymentError;
}

// Operations take seconds; on a loaded machine some take over a minute.
describe("ConntrackSysctl in a network namespace", { timeout: 180_000 }, () => {
  it("fails on sizing and changes nothing", async () => {
    const error = await failureOf((pkg: Package) => {
      new pkg.ConntrackSysctl("sizing", { connection: connection(), max: 262144, buckets: 65536 });
    });

    const message = error.errors.map((e) => e.message).join("\n");
    expect(message).toContain("read-only outside the initial network namespace");
    expect(message).toContain("Set max and buckets on the machine that runs it");
    expect(await exists(SYSCTL_FILE)).toBe(false);
    expect(deployment.state.filter((resource) => resource.custom)).toEqual([]);
  });

  it("sets a per-namespace key live and at boot", async () => {
    await deployment.up((pkg: Package) => {
      new pkg.ConntrackSysctl("timeouts", {
        connection: connection(),
        settings: { nf_conntrack_tcp_timeout_established: 7777 },
      });
    });

    expect(Number((await read(TIMEOUT)).trim())).toBe(7777);
    expect(await read(SYSCTL_FILE)).toContain(
      "net.netfilter.nf_conntrack_tcp_timeout_established = 7777\n",
    );
    expect((await read(MODULES_FILE)).split("\n")).toContain("nf_conntrack");
    const outputs = deployment.resource("timeouts").outputs;
    expect(outputs.previous).toEqual({
      "net.netfilter.nf_conntrack_tcp_timeout_established": originalTimeout,
    });
    expect(outputs.liveSettings).toEqual({
      "net.netfilter.nf_conntrack_tcp_timeout_established": 7777,
    });
    expect(typeof outputs.count).toBe("number");
    expect(typeof outputs.liveMax).toBe("number");
  });

  it("reports a value changed out of band and repairs it", async () => {
    const written = await lab.exec(host, ["sh", "-c", `echo 1234 > ${TIMEOUT}`]);
    expect(written.code, written.stderr).toBe(0);

    const refresh = await deployment.refresh();
    const step = refresh.steps.find((candidate) => candidate.name === "timeouts");
    expect(step?.op).toBe("refresh-update");
    expect(step?.changedKeys).toEqual(["settings"]);
    expect(deployment.resource("timeouts").outputs.inSync).toBe(false);
    // The live value becomes the input, so a preview shows the change back to 7777.
    expect(deployment.resource("timeouts").inputs.settings).toEqual({
      "net.netfilter.nf_conntrack_tcp_timeout_established": 1234,
    });

    const up = await deployment.up((pkg: Package) => {
      new pkg.ConntrackSysctl("timeouts", {
        connection: connection(),
        settings: { nf_conntrack_tcp_timeout_established: 7777 },
      });
    });
    expect(up.calls.update).toBe(1);
    expect(Number((await read(TIMEOUT)).trim())).toBe(7777);
  });

  it("restores the previous value and removes its files on delete", async () => {
    await deployment.destroy();

    expect(Number((await read(TIMEOUT)).trim())).toBe(originalTimeout);
    expect(await exists(SYSCTL_FILE)).toBe(false);
    expect(await exists(MODULES_FILE)).toBe(false);
  });

  it("rejects nonsense in check without contacting the host", async () => {
    const error = await failureOf((pkg: Package) => {
      new pkg.ConntrackSysctl("zero", { connection: connection(), max: 0 });
      new pkg.ConntrackSysctl("negative", { connection: connection(), buckets: -5 });
      new pkg.ConntrackSysctl("absurd", { connection: connection(), max: 2 ** 40 });
      new pkg.ConntrackSysctl("reserved", {
        connection: connection(),
        settings: { nf_conntrack_max: 1000 },
      });
      new pkg.ConntrackSysctl("foreign", {
        connection: connection(),
        settings: { "net.ipv4.ip_forward": 1 },
      });
      new pkg.ConntrackSysctl("empty", { connection: connection() });
    });

    const failed = error.errors.filter((e): e is CheckFailedError => e instanceof CheckFailedError);
    const byName = Object.fromEntries(failed.map((e) => [e.resourceName, e.failures]));
    expect(Object.keys(byName).sort()).toEqual([
      "absurd",
      "empty",
      "foreign",
      "negative",
      "reserved",
      "zero",
    ]);
    expect(byName.zero[0].reason).toContain("use an integer from 256 to 268435456");
    expect(byName.negative[0].property).toBe("buckets");
    expect(byName.reserved[0].reason).toContain("set it with max");
    expect(byName.foreign[0].reason).toContain("use a net.netfilter.nf_conntrack_* key");
    expect(byName.empty[0].reason).toContain("give max, buckets or settings");
    expect(error.result.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
  });
});

describe("PersistenceUnit on a host without an init system", { timeout: 180_000 }, () => {
  it("fails and writes no file", async () => {
    const error = await failureOf((pkg: Package) => {
      new pkg.RateLimit("web", { connection: connection(), persist: true });
    });

    const message = error.errors.map((e) => e.message).join("\n");
    expect(message).toContain("runs neither systemd nor upstart");
    expect(message).toContain("set persist: false");
    expect(await exists("/etc/pulumi-iptables")).toBe(false);
    await deployment.destroy();
  });
});
