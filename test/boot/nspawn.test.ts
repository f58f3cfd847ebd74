/**
 * Boot persistence on a host that really boots: a systemd-nspawn container (systemd as PID 1,
 * sshd inside, its own network namespace on a lab bridge) gets RateLimit with persist through
 * the engine harness, then reboots. Every boot starts with empty tables, so the rules seen after
 * a reboot can only come from the boot job. The tests run in order, each from the state the
 * previous one left.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../../src/lab";
import { BootContainer, ensureBootRoot, type BootRoot } from "../../src/lab/nspawn";
import { Deployment, type Program } from "../harness";

type Package = typeof import("../../src/index");

const PROJECT = "boot";
const STACK = "nspawn";
const JOB = "pulumi-iptables-boot-nspawn-web-persist";

let root: BootRoot;
let lab: Lab;
let container: BootContainer;
let deployment: Deployment;
const timings: Record<string, number> = {};

beforeAll(async () => {
  const started = Date.now();
  root = await ensureBootRoot({ log: (line) => console.log(line) });
  timings.rootMs = Date.now() - started;
  lab = await createLab({ name: "boot-nspawn", hosts: 1 });
  container = new BootContainer({ root, lab });
  timings.firstBootToSshMs = (await container.start()).sshMs;
  deployment = await Deployment.start({ project: PROJECT, stack: STACK });
}, 20 * 60_000);

afterAll(async () => {
  console.log(`boot timings (ms): ${JSON.stringify(timings)}`);
  await deployment?.close();
  await container?.stop();
  await lab?.destroy();
}, 120_000);

function recipe(rate = "50/sec"): Program {
  return (pkg: Package) => {
    new pkg.RateLimit("web", {
      connection: { host: container.ipv4, privateKey: root.privateKey, hostKey: root.hostKey },
      family: "both",
      rate,
      hook: { ports: [22, 443] },
      persist: true,
    });
  };
}

async function run(argv: string[]): Promise<string> {
  const result = await container.exec(argv);
  expect(result.code, `${argv.join(" ")}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** Reads the managed lines of both families, in kernel order. */
async function managedLines(): Promise<string[]> {
  const lines: string[] = [];
  for (const save of ["iptables-save", "ip6tables-save"]) {
    lines.push(
      ...(await run([save])).split("\n").filter((line) => line.includes("pulumi-iptables:")),
    );
  }
  return lines;
}

/** Both families' tables without comments and counters. */
async function tables(): Promise<string> {
  const v4 = await run(["iptables-save"]);
  const v6 = await run(["ip6tables-save"]);
  return `${v4}${v6}`.replace(/^#.*\n/gm, "");
}

async function reboot(label: string): Promise<void> {
  const timing = await container.reboot();
  timings[`${label}ToSshMs`] = timing.sshMs;
  timings[`${label}BootedMs`] = timing.bootedMs;
}

// Operations take seconds; on a loaded machine some take over a minute.
describe("boot persistence in a systemd-nspawn container", { timeout: 180_000 }, () => {
  it("boots to SSH within seconds", () => {
    expect(timings.firstBootToSshMs).toBeLessThan(15_000);
  });

  it("installs an enabled unit that passes systemd-analyze verify", async () => {
    const result = await deployment.up(recipe());

    expect(result.calls.create).toBeGreaterThan(0);
    expect(deployment.resource("web-persist").outputs.resolvedInit).toBe("systemd");
    expect((await run(["systemctl", "is-enabled", `${JOB}.service`])).trim()).toBe("enabled");
    const verify = await container.exec([
      "systemd-analyze",
      "verify",
      `/etc/systemd/system/${JOB}.service`,
    ]);
    expect(verify.stdout + verify.stderr).toBe("");
    const unit = await run(["cat", `/etc/systemd/system/${JOB}.service`]);
    expect(unit).toContain(
      "/usr/sbin/iptables-nft-save /usr/sbin/iptables-nft-restore --noflush --wait\n",
    );
    expect(unit).toContain(
      "/usr/sbin/ip6tables-nft-save /usr/sbin/ip6tables-nft-restore --noflush --wait\n",
    );
    expect(await run(["cat", `/etc/pulumi-iptables/boot-nspawn-web-persist/rules.v4`])).toContain(
      "--hashlimit-upto 50/sec",
    );
  });

  it("restores the same managed lines after a reboot", async () => {
    const before = await managedLines();
    expect(before).toHaveLength(8);

    await reboot("reboot1");

    expect(await managedLines()).toEqual(before);
    expect((await run(["systemctl", "is-active", `${JOB}.service`])).trim()).toBe("active");
    expect((await run(["systemctl", "--failed", "--no-legend", "--plain"])).trim()).toBe("");
  });

  it("changes nothing on a restart of the unit", async () => {
    const before = await tables();
    await run(["systemctl", "restart", `${JOB}.service`]);
    expect(await tables()).toBe(before);
    expect((await run(["systemctl", "is-active", `${JOB}.service`])).trim()).toBe("active");
  });

  it("finds nothing to change after the reboot", async () => {
    const refresh = await deployment.refresh();
    const up = await deployment.up(recipe());

    // Outputs such as counters may change; a rule gone, moved or edited, or a unit out of sync
    // would show in these keys.
    const drift = refresh.steps.filter(
      (step) =>
        step.op === "refresh-delete" ||
        step.changedKeys.some((key) =>
          ["rule", "placement", "inSync", "chain", "order"].includes(key),
        ),
    );
    expect(drift.map((step) => step.name)).toEqual([]);
    expect(up.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
  });

  it("persists a rate change through the next reboot", async () => {
    const up = await deployment.up(recipe("100/sec"));
    expect(
      up.steps
        .filter((step) => step.op === "update")
        .map((step) => step.name)
        .sort(),
    ).toEqual(["web-ipv4-accept", "web-ipv6-accept", "web-persist"]);
    const before = await managedLines();
    expect(before.filter((line) => line.includes("--hashlimit-upto 100/sec"))).toHaveLength(2);

    await reboot("reboot2");

    expect(await managedLines()).toEqual(before);
  });

  it("removes the unit and its files on destroy", async () => {
    await deployment.destroy();

    expect((await container.exec(["test", "-e", `/etc/systemd/system/${JOB}.service`])).code).toBe(
      1,
    );
    expect(
      (await container.exec(["test", "-e", "/etc/pulumi-iptables/boot-nspawn-web-persist"])).code,
    ).toBe(1);
    await reboot("reboot3");
    expect(await managedLines()).toEqual([]);
    expect((await run(["systemctl", "--failed", "--no-legend", "--plain"])).trim()).toBe("");
  });
});

describe("boot persistence with iptables-legacy", { timeout: 180_000 }, () => {
  it("restores the rules with the legacy programs after a reboot", async () => {
    for (const name of ["iptables", "ip6tables"]) {
      await run(["update-alternatives", "--set", name, `/usr/sbin/${name}-legacy`]);
    }
    await deployment.up(recipe());
    const unit = await run(["cat", `/etc/systemd/system/${JOB}.service`]);
    expect(unit).toContain("/usr/sbin/iptables-legacy-restore --noflush --wait\n");
    const before = await managedLines();
    expect(before).toHaveLength(8);

    await reboot("legacyReboot");

    expect(await managedLines()).toEqual(before);
    const nft = await run(["iptables-nft-save"]);
    expect(nft).not.toContain("pulumi-iptables:");
    expect((await run(["systemctl", "is-active", `${JOB}.service`])).trim()).toBe("active");
    expect((await run(["systemctl", "--failed", "--no-legend", "--plain"])).trim()).toBe("");
    await deployment.destroy();
  });
});
