import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  assertNotRootNetfilter,
  createLab,
  destroyLab,
  guardRoutesPresent,
  labCommandLog,
  labDir,
  listLabNamespaces,
  readInventory,
  runLocal,
  type Lab,
} from "../../src/lab";
import { hasErrorCode } from "../../src/errors";
import { openSsh, sshExec } from "../helpers/ssh";

const LAB_NAME = "lab-selftest";

/** What the root namespace holds, read without changing it, to prove the lab never writes it. */
async function rootNetfilterSnapshot(): Promise<string> {
  const parts = [];
  for (const program of [
    "iptables-nft-save",
    "ip6tables-nft-save",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
  ]) {
    const result = await runLocal([program], { allowFailure: true });
    parts.push(result.stdout.replace(/^#.*\n/gm, ""));
  }
  return parts.join("\n");
}

/** Tells whether a process runs; a zombie (killed, not yet reaped by its new parent) does not. */
function processAlive(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

describe("lab hosts", () => {
  let lab: Lab;
  let rootBefore: string;

  beforeAll(async () => {
    rootBefore = await rootNetfilterSnapshot();
    labCommandLog.length = 0;
    lab = await createLab({
      name: LAB_NAME,
      hosts: [{ backend: "nft" }, { backend: "nft" }, { backend: "legacy" }, { backend: "legacy" }],
    });
  });

  afterAll(async () => {
    await destroyLab(LAB_NAME);
  });

  it("installs guard routes before the first namespace", async () => {
    const routeIndex = labCommandLog.findIndex(
      (argv) => argv.includes("unreachable") && argv.includes("198.18.0.0/15"),
    );
    const route6Index = labCommandLog.findIndex(
      (argv) => argv.includes("unreachable") && argv.includes("fd6c:6162::/48"),
    );
    const firstNetns = labCommandLog.findIndex((argv) => argv.join(" ").startsWith("ip netns add"));
    expect(routeIndex).toBeGreaterThanOrEqual(0);
    expect(route6Index).toBeGreaterThanOrEqual(0);
    expect(firstNetns).toBeGreaterThan(routeIndex);
    expect(firstNetns).toBeGreaterThan(route6Index);
    expect(await guardRoutesPresent()).toBe(true);
  });

  it("routes an address of no host to unreachable", async () => {
    const v4 = await runLocal(["ip", "-4", "route", "get", "198.19.250.7"], { allowFailure: true });
    const v6 = await runLocal(["ip", "-6", "route", "get", "fd6c:6162:0:ff::7"], {
      allowFailure: true,
    });
    expect(v4.code).not.toBe(0);
    expect(v4.stderr).toMatch(/unreachable|No route to host/i);
    expect(v6.code).not.toBe(0);
    expect(v6.stderr).toMatch(/unreachable|No route to host|Network is unreachable/i);
  });

  it("runs no netfilter command in the root namespace", async () => {
    const netfilterCommands = labCommandLog.filter((argv) =>
      argv.some((arg) => /^(ip6?tables|nft|sysctl)/.test(arg.split("/").pop() ?? "")),
    );
    for (const argv of netfilterCommands) expect(() => assertNotRootNetfilter(argv)).not.toThrow();
    expect(rootBefore).toBe(await rootNetfilterSnapshot());
  });

  it("rejects a netfilter write aimed at the root namespace", async () => {
    for (const argv of [
      ["iptables", "-A", "INPUT", "-j", "DROP"],
      ["/usr/sbin/ip6tables-legacy", "-F"],
      ["sysctl", "-w", "net.ipv4.ip_forward=1"],
      ["nft", "flush", "ruleset"],
      ["iptables-nft-restore", "--noflush"],
    ]) {
      await expect(runLocal(argv)).rejects.toSatisfy((error) => hasErrorCode(error, "LAB_UNSAFE"));
    }
  });

  it("writes an inventory tests can read", () => {
    const inventory = readInventory(lab.inventoryPath);
    expect(inventory.hosts).toHaveLength(4);
    expect(inventory.hosts.map((host) => host.backend)).toEqual(["nft", "nft", "legacy", "legacy"]);
    for (const host of inventory.hosts) {
      expect(host.ipv4).toMatch(/^198\.18\.\d+\.\d+$/);
      expect(host.ipv6).toMatch(/^fd6c:6162:/);
      expect(existsSync(host.privateKeyPath)).toBe(true);
      expect(host.hostKey).toMatch(/^ssh-ed25519 /);
    }
  });

  it("serves each host over ssh2 on IPv4 and IPv6", async () => {
    for (const host of lab.hosts) {
      for (const address of [host.ipv4, host.ipv6]) {
        const client = await openSsh({
          host: address,
          port: host.port,
          user: "root",
          privateKey: host.privateKey,
        });
        try {
          const v4 = await sshExec(client, "iptables-save");
          const v6 = await sshExec(client, "ip6tables-save");
          const version = await sshExec(client, "iptables -V; hostname");
          expect(v4.code).toBe(0);
          expect(v6.code).toBe(0);
          expect(version.stdout).toContain(host.backend === "nft" ? "(nf_tables)" : "(legacy)");
          expect(version.stdout).toContain(host.name);
        } finally {
          client.end();
        }
      }
    }
  });

  it("keeps a hashlimit table inside its host", async () => {
    for (const host of lab.hosts) {
      const client = await openSsh({
        host: host.ipv4,
        port: host.port,
        user: "root",
        privateKey: host.privateKey,
      });
      const name = `lab-${host.name}`;
      try {
        const add = await sshExec(
          client,
          `iptables -w -A INPUT -p tcp --dport 8080 -m hashlimit --hashlimit-upto 50/sec ` +
            `--hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name ${name} -j ACCEPT`,
        );
        expect(add.stderr).toBe("");
        expect(add.code).toBe(0);
        const saved = await sshExec(client, "iptables-save -t filter");
        expect(saved.stdout).toContain(
          `-A INPUT -p tcp -m tcp --dport 8080 -m hashlimit --hashlimit-upto 50/sec ` +
            `--hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name ${name} -j ACCEPT`,
        );
        const tables = await sshExec(client, "ls /proc/net/ipt_hashlimit/");
        expect(tables.stdout.split("\n")).toContain(name);
      } finally {
        client.end();
      }
    }
    for (const host of lab.hosts) {
      const listing = await lab.exec(host, ["ls", "/proc/net/ipt_hashlimit/"]);
      expect(listing.stdout.trim().split("\n")).toEqual([`lab-${host.name}`]);
    }
    expect(existsSync("/proc/net/ipt_hashlimit/lab-h0")).toBe(false);
  });

  it("gives each host a private /etc", async () => {
    const marker = `/etc/pulumi-iptables-lab-${process.pid}`;
    await lab.exec(lab.hosts[0], ["sh", "-c", `echo private > ${marker}`]);
    const own = await lab.exec(lab.hosts[0], ["cat", marker]);
    const other = await lab.exec(lab.hosts[1], ["cat", marker]);
    expect(own.stdout).toBe("private\n");
    expect(other.code).not.toBe(0);
    expect(existsSync(marker)).toBe(false);
  });

  it("sets TCP_NODELAY for fast commands", async () => {
    const host = lab.hosts[0];
    const timeCommands = async (noDelay: boolean): Promise<number> => {
      const client = await openSsh(
        { host: host.ipv4, port: host.port, user: "root", privateKey: host.privateKey },
        { noDelay },
      );
      try {
        const samples: number[] = [];
        for (let i = 0; i < 8; i++) {
          const started = performance.now();
          await sshExec(client, "true");
          samples.push(performance.now() - started);
        }
        return samples.sort((a, b) => a - b)[4];
      } finally {
        client.end();
      }
    };
    const fast = await timeCommands(true);
    const slow = await timeCommands(false);
    console.log(
      `median ssh2 command: ${fast.toFixed(1)} ms with TCP_NODELAY, ${slow.toFixed(1)} ms without`,
    );
    expect(fast).toBeLessThan(slow);
  });
});

describe("lab teardown", () => {
  it("removes namespaces, links, processes and files", async () => {
    const lab = await createLab({ name: "lab-teardown", hosts: 2 });
    const pids = lab.hosts.map((host) => host.sshdPid);
    const slot = lab.slot;
    await lab.destroy();

    expect((await listLabNamespaces()).filter((ns) => ns.startsWith(`pil-${slot}-`))).toEqual([]);
    const links = await runLocal(["ip", "-o", "link", "show"]);
    expect(links.stdout).not.toMatch(new RegExp(`: (pil${slot}h\\d+|pilbr${slot})[@:]`));
    for (const pid of pids) expect(processAlive(pid)).toBe(false);
    expect(existsSync(labDir("lab-teardown"))).toBe(false);
    const mounts = readFileSync("/proc/self/mountinfo", "utf8");
    expect(mounts).not.toContain(join(labDir("lab-teardown"), "hosts"));
  });

  it("treats a second teardown as a no-op", async () => {
    const lab = await createLab({ name: "lab-twice", hosts: 1 });
    await lab.destroy();
    await expect(lab.destroy()).resolves.toBeUndefined();
  });

  it("cleans leftovers of a crashed run on up", async () => {
    // A child process creates a lab and is killed before it can tear anything down.
    const script = `
      const { createLab } = require("./src/lab");
      createLab({ name: "lab-crash", hosts: 2 }).then((lab) => {
        console.log(JSON.stringify({ slot: lab.slot, pids: lab.hosts.map((host) => host.sshdPid) }));
        process.kill(process.pid, "SIGKILL");
      });`;
    const child = spawnSync("npx", ["tsx", "-e", script], {
      cwd: join(__dirname, "../.."),
      encoding: "utf8",
    });
    const stale = JSON.parse(child.stdout.trim()) as { slot: number; pids: number[] };
    expect(stale.pids.every(processAlive)).toBe(true);

    const lab = await createLab({ name: "lab-crash", hosts: 1 });
    try {
      for (const pid of stale.pids) expect(processAlive(pid)).toBe(false);
      if (stale.slot !== lab.slot) {
        expect(
          (await listLabNamespaces()).filter((ns) => ns.startsWith(`pil-${stale.slot}-`)),
        ).toEqual([]);
      }
      expect((await listLabNamespaces()).filter((ns) => ns.startsWith(`pil-${lab.slot}-`))).toEqual(
        [`pil-${lab.slot}-h0`],
      );
    } finally {
      await lab.destroy();
    }
  });
});
