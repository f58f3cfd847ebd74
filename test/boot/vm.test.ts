/**
 * Conntrack sizing and rule persistence on a host with a kernel of its own: a qemu VM (software
 * emulation) booting the boot root with Debian's cloud kernel, where nf_conntrack is a module
 * and max and buckets are writable. RateLimit with conntrack and persist goes on through the
 * engine harness, the VM reboots, and the live values and rules must be back. Boots are slow
 * (15 to 40 s each), so the tests share two boots and batch their checks. They run in order,
 * each from the state the previous one left.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureBootRoot, type BootRoot } from "../../src/lab/nspawn";
import { BootVm } from "../../src/lab/vm";
import { Deployment, type Program } from "../harness";

type Package = typeof import("../../src/index");

const PROJECT = "boot";
const STACK = "vm";
const JOB = "pulumi-iptables-boot-vm-web-persist";
/**
 * Small enough that a few hundred inserted entries pass 80%. The kernel rounds buckets up to a
 * whole page of bucket heads (512 on x86-64), so 512 is the smallest value that reads back as set.
 */
const SIZING = { max: 512, buckets: 512 };
const TIMEOUT_KEY = "net.netfilter.nf_conntrack_tcp_timeout_established";
const CONNTRACK_FILES = [
  "/etc/sysctl.d/90-pulumi-iptables-conntrack.conf",
  "/etc/modules-load.d/pulumi-iptables-conntrack.conf",
  "/etc/modprobe.d/pulumi-iptables-conntrack.conf",
];

let root: BootRoot;
let vm: BootVm;
let deployment: Deployment;
/** The kernel's values before the first up, to compare with what delete restores. */
let original: Record<string, number>;
const timings: Record<string, number> = {};

beforeAll(async () => {
  root = await ensureBootRoot({ log: (line) => console.log(line) });
  vm = new BootVm({ root, name: "boot-vm" });
  const boot = await vm.start();
  timings.firstBootToSshMs = boot.sshMs;
  timings.firstBootedMs = boot.bootedMs;
  await run(["modprobe", "nf_conntrack"]);
  original = await sysctls();
  deployment = await Deployment.start({ project: PROJECT, stack: STACK });
}, 20 * 60_000);

afterAll(async () => {
  console.log(`VM timings (ms): ${JSON.stringify(timings)}`);
  await deployment?.close();
  await vm?.stop();
}, 120_000);

function recipe(conntrack: { max: number; buckets: number }): Program {
  return (pkg: Package) => {
    new pkg.RateLimit("web", {
      connection: {
        host: vm.host,
        port: vm.port,
        privateKey: root.privateKey,
        hostKey: root.hostKey,
      },
      hook: { ports: [22] },
      conntrack: { ...conntrack, settings: { nf_conntrack_tcp_timeout_established: 7200 } },
      persist: true,
    });
  };
}

async function run(argv: string[]): Promise<string> {
  const result = await vm.exec(argv, { timeoutMs: 150_000 });
  expect(result.code, `${argv.join(" ")}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** Reads the conntrack values the tests check, in the guest. */
async function sysctls(): Promise<Record<string, number>> {
  const keys = [
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    TIMEOUT_KEY,
  ];
  const output = await run(["sysctl", "-n", ...keys]);
  const values = output.trim().split("\n").map(Number);
  return Object.fromEntries(keys.map((key, index) => [key, values[index]]));
}

async function managedLines(): Promise<string[]> {
  const output = await run(["iptables-save"]);
  return output.split("\n").filter((line) => line.includes("pulumi-iptables:"));
}

describe("conntrack sizing and persistence in a qemu VM", () => {
  it("sets conntrack live and writes the boot files", async () => {
    const result = await deployment.up(recipe(SIZING));

    expect(result.calls.create).toBeGreaterThan(0);
    expect(await sysctls()).toEqual({
      "net.netfilter.nf_conntrack_max": SIZING.max,
      "net.netfilter.nf_conntrack_buckets": SIZING.buckets,
      [TIMEOUT_KEY]: 7200,
    });
    const conntrack = deployment.resource("web-conntrack").outputs;
    expect(conntrack.liveMax).toBe(SIZING.max);
    expect(conntrack.liveBuckets).toBe(SIZING.buckets);
    expect(conntrack.previous).toEqual(original);
    expect(typeof conntrack.count).toBe("number");
    expect(await run(["cat", ...CONNTRACK_FILES])).toContain("options nf_conntrack hashsize=512");
    expect((await run(["systemctl", "is-enabled", `${JOB}.service`])).trim()).toBe("enabled");
  }, 180_000);

  it("warns on refresh when the table is over 80% full", async () => {
    // 430 entries of 512 in the guest's own table; the addresses exist only in that table.
    const insert =
      "i=0; while [ $i -lt 430 ]; do conntrack -I -p tcp -s 198.19.1.$((i % 200 + 1)) " +
      "-d 198.19.2.1 --sport $((10000 + i)) --dport 80 --state ESTABLISHED -u ASSURED " +
      "--timeout 600 >/dev/null 2>&1 || exit 1; i=$((i + 1)); done";
    await run(["sh", "-c", insert]);

    const refresh = await deployment.refresh();
    await run(["conntrack", "-F"]);

    const warnings = refresh.logs.map((log) => log.text).filter((text) => text.includes("% full"));
    expect(warnings.length).toBeGreaterThan(0);
    const match = /conntrack table is (\d+)% full \((\d+) of 512 entries\)/.exec(warnings[0]);
    expect(match, warnings[0]).not.toBeNull();
    expect(Number(match![1])).toBeGreaterThan(80);
    expect(Number(match![2])).toBeGreaterThanOrEqual(430);
    expect(deployment.resource("web-conntrack").outputs.count).toBeGreaterThanOrEqual(430);
  }, 180_000);

  it("has the values, rules and unit back after a reboot", async () => {
    const rules = await managedLines();
    expect(rules).toHaveLength(4);

    const boot = await vm.reboot();
    timings.rebootToSshMs = boot.sshMs;
    timings.rebootBootedMs = boot.bootedMs;

    expect(await sysctls()).toEqual({
      "net.netfilter.nf_conntrack_max": SIZING.max,
      "net.netfilter.nf_conntrack_buckets": SIZING.buckets,
      [TIMEOUT_KEY]: 7200,
    });
    expect(await managedLines()).toEqual(rules);
    expect((await run(["systemctl", "is-active", `${JOB}.service`])).trim()).toBe("active");
    expect((await run(["systemctl", "--failed", "--no-legend", "--plain"])).trim()).toBe("");
    expect(
      (await run(["lsmod"])).split("\n").some((line) => line.startsWith("nf_conntrack ")),
    ).toBe(true);

    const refresh = await deployment.refresh();
    const up = await deployment.up(recipe(SIZING));
    const drift = refresh.steps.filter(
      (step) =>
        step.op === "refresh-delete" ||
        step.changedKeys.some((key) =>
          ["rule", "placement", "inSync", "max", "buckets"].includes(key),
        ),
    );
    expect(drift.map((step) => step.name)).toEqual([]);
    expect(up.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
  }, 240_000);

  it("restores the previous values and removes the files on destroy", async () => {
    await deployment.destroy();

    expect(await sysctls()).toEqual(original);
    for (const path of [...CONNTRACK_FILES, `/etc/systemd/system/${JOB}.service`]) {
      expect((await vm.exec(["test", "-e", path])).code, path).toBe(1);
    }
    expect(await managedLines()).toEqual([]);
  }, 180_000);
});
