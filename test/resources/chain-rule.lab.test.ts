/**
 * `Chain` and `Rule` on their own, through the engine harness against one lab host per
 * backend: ownership of chains, deletion guards, raw rules, replacement, and the host key
 * recorded at the first operation.
 */
import { generateKeyPairSync } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { Deployment, DeploymentError, type Program } from "../harness";

type Package = typeof import("../../src/index");

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({ name: "res-chain", hosts: [{ backend: "nft" }, { backend: "legacy" }] });
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
});

function connectionOf(host: LabHost) {
  return { host: host.ipv4, privateKey: host.privateKey };
}

async function save(host: LabHost, command = "iptables-save"): Promise<string> {
  const result = await lab.exec(host, [command, "-t", "filter"]);
  return result.stdout;
}

/** Generates an ed25519 public key in authorized_keys format, which no lab host presents. */
function randomHostKey(): string {
  const { publicKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  const field = (bytes: Buffer): Buffer => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    return Buffer.concat([length, bytes]);
  };
  const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(raw)]);
  return `ssh-ed25519 ${blob.toString("base64")}`;
}

async function exec(host: LabHost, argv: string[]): Promise<void> {
  const result = await lab.exec(host, argv);
  if (result.code !== 0) throw new Error(`${argv.join(" ")} failed: ${result.stderr}`);
}

for (const index of [0, 1]) {
  describe(`Chain and Rule (${index === 0 ? "nft" : "legacy"})`, () => {
    let deployment: Deployment;
    let host: LabHost;

    beforeAll(async () => {
      host = lab.hosts[index];
      deployment = await Deployment.start({ project: "chains", stack: `host${index}` });
    });

    afterAll(async () => {
      await deployment?.close();
    });

    const chainAndRule =
      (options: { chain?: string; comment?: string } = {}): Program =>
      (pkg: Package) => {
        const connection = connectionOf(host);
        const chain = new pkg.Chain("audit", { connection, name: "WATCH" });
        new pkg.Rule("audit-ssh", {
          connection,
          chain: options.chain ?? chain,
          args: "-p tcp --dport 2222 -j RETURN",
          comment: options.comment ?? "audit ssh",
        });
      };

    it("creates a chain and a raw rule with its comment", async () => {
      const result = await deployment.up(chainAndRule());

      expect(result.calls).toMatchObject({ create: 2, update: 0, delete: 0 });
      const text = await save(host);
      expect(text).toContain(":WATCH - [0:0]");
      expect(text).toContain(
        '-A WATCH -p tcp -m tcp --dport 2222 -m comment --comment "audit ssh" ' +
          '-m comment --comment "pulumi-iptables:chains/host' +
          `${index}/audit-ssh:0" -j RETURN`,
      );
    });

    it("finds no chain change on the first refresh", async () => {
      expect(deployment.resource("audit").outputs.foreignRules).toBe(0);

      const result = await deployment.refresh();

      const chainStep = result.steps.find((step) => step.name === "audit");
      expect(chainStep?.changedKeys ?? []).toEqual([]);
    });

    it("records the host key at the first operation", () => {
      expect(deployment.resource("audit").outputs.hostKey).toBe(host.hostKey);
      expect(deployment.resource("audit-ssh").outputs.hostKey).toBe(host.hostKey);
    });

    it("fails with another host key than the recorded one", async () => {
      const rule = deployment.resource("audit-ssh");
      const otherKey = randomHostKey();
      deployment.state = deployment.state.map((r) =>
        r.urn === rule.urn ? { ...r, outputs: { ...r.outputs, hostKey: otherKey } } : r,
      );

      const error = await deployment.refresh().catch((e: unknown) => e);

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toMatch(/host key .* does not match/);
      deployment.state = deployment.state.map((r) => (r.urn === rule.urn ? rule : r));
    });

    it("updates a comment in place", async () => {
      const result = await deployment.up(chainAndRule({ comment: "audit ssh v2" }));

      expect(result.calls).toMatchObject({ create: 0, update: 1, delete: 0 });
      expect(await save(host)).toContain('--comment "audit ssh v2"');
    });

    it("replaces a rule moved to another chain, deleting it first", async () => {
      const result = await deployment.up(chainAndRule({ chain: "INPUT" }));

      expect(result.calls).toMatchObject({ create: 1, update: 0, delete: 1 });
      const text = await save(host);
      expect(text).toMatch(/-A INPUT -p tcp -m tcp --dport 2222 .*audit-ssh:0" -j RETURN/);
      expect(text).not.toMatch(/-A WATCH .*audit-ssh/);
      expect(text.match(/audit-ssh:0/g)).toHaveLength(1);
    });

    it("refuses to create a chain that already exists", async () => {
      await exec(host, ["iptables", "-N", "TAKEN"]);
      const program: Program = (pkg: Package) => {
        new pkg.Chain("taken", { connection: connectionOf(host), name: "TAKEN" });
      };

      const error = await deployment.up(program).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toContain(
        "chain TAKEN in table filter already exists",
      );
      expect((error as DeploymentError).message).toContain("adopt: true");
      await exec(host, ["iptables", "-X", "TAKEN"]);
    });

    it("lets only one of two resources create one chain", async () => {
      const program: Program = (pkg: Package) => {
        new pkg.Chain("twin-a", { connection: connectionOf(host), name: "TWIN" });
        new pkg.Chain("twin-b", { connection: connectionOf(host), name: "TWIN" });
      };

      const error = await deployment.up(program).catch((e: unknown) => e);
      const created = deployment.state.filter((r) => r.name.startsWith("twin-")).length;
      await deployment.destroy();

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toContain(
        "chain TWIN in table filter already exists",
      );
      expect(created).toBe(1);
      expect(await save(host)).not.toContain("TWIN");
    });

    it("refuses to create a rule whose marker another rule carries", async () => {
      const marker = `pulumi-iptables:other/stack/web:0`;
      await exec(host, [
        "iptables",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-m",
        "comment",
        "--comment",
        marker,
        "-j",
        "DROP",
      ]);
      const claim =
        (adopt?: boolean): Program =>
        (pkg: Package) => {
          new pkg.Rule("claim", {
            connection: connectionOf(host),
            chain: "OUTPUT",
            markerId: "other/stack/web",
            args: "-p udp --dport 9 -j ACCEPT",
            adopt,
          });
        };
      const before = await save(host);

      const error = await deployment.up(claim()).catch((e: unknown) => e);
      const rejectedDump = await save(host);
      const adopted = await deployment.up(claim(true));
      const afterAdoption = await save(host);
      await deployment.destroy();

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toContain(
        "already has a different rule with this marker id",
      );
      expect((error as DeploymentError).message).toContain("adopt: true");
      // Timestamps ("# Generated ... on <time>") and chain counters differ between any two dumps.
      const rules = (dump: string) =>
        dump
          .split("\n")
          .filter((line) => !line.startsWith("#"))
          .map((line) => line.replace(/ \[\d+:\d+\]$/, ""));
      expect(rules(rejectedDump)).toEqual(rules(before));
      expect(adopted.calls).toMatchObject({ create: 1 });
      expect(afterAdoption).toContain(
        `-A OUTPUT -p udp -m udp --dport 9 -m comment --comment "${marker}" -j ACCEPT`,
      );
      expect(afterAdoption).not.toContain("-j DROP");
      expect(await save(host)).not.toContain(marker);
    });

    it("rolls back a lock-out within the connection's confirm timeout", async () => {
      const program: Program = (pkg: Package) => {
        new pkg.Rule("lockout", {
          connection: { ...connectionOf(host), confirmTimeoutSeconds: 2 },
          chain: "INPUT",
          args: "-p tcp --dport 22 -m conntrack --ctstate NEW -j DROP",
        });
      };

      const started = Date.now();
      const error = await deployment.up(program).catch((e: unknown) => e);
      const seconds = (Date.now() - started) / 1000;

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toContain("was rolled back");
      expect((error as DeploymentError).message).toContain("by itself after 2 s");
      expect(seconds).toBeLessThan(15);
      expect(await save(host)).not.toContain("lockout");
    });

    it("fails to delete a chain that foreign rules jump to, naming them", async () => {
      await deployment.up(chainAndRule());
      await exec(host, ["iptables", "-A", "FORWARD", "-o", "eth9", "-j", "WATCH"]);

      const error = await deployment.destroy().catch((e: unknown) => e);

      expect(error).toBeInstanceOf(DeploymentError);
      expect((error as DeploymentError).message).toContain('"-A FORWARD -o eth9 -j WATCH"');
      expect((error as DeploymentError).message).toContain("still jump to it");
      expect(await save(host)).toContain(":WATCH - [0:0]");
      expect(deployment.state.some((r) => r.name === "audit")).toBe(true);
    });

    it("deletes the chain once the foreign jump is gone", async () => {
      await exec(host, ["iptables", "-D", "FORWARD", "-o", "eth9", "-j", "WATCH"]);

      const result = await deployment.destroy();

      expect(result.calls.delete).toBe(1);
      expect(await save(host)).not.toContain("WATCH");
    });

    it("purges foreign rules of a chain that asks for it", async () => {
      const program: Program = (pkg: Package) => {
        new pkg.Chain("scratch", {
          connection: connectionOf(host),
          name: "SCRATCH",
          purgeUnmanaged: true,
        });
      };
      await deployment.up(program);
      await exec(host, ["iptables", "-A", "SCRATCH", "-s", "192.0.2.1", "-j", "DROP"]);

      await deployment.refresh();
      const counted = deployment.resource("scratch").outputs.foreignRules;
      const repair = await deployment.up(program);
      const updated = await save(host);
      await deployment.destroy();

      expect(counted).toBe(1);
      expect(repair.calls.update).toBe(1);
      expect(updated).not.toContain("-A SCRATCH");
      expect(await save(host)).not.toContain("SCRATCH");
    });
  });
}
