/**
 * RateLimit's verdict for connections within the rate, on one host per backend. By default they
 * return to INPUT, so a port the host's own rules drop stays dropped. With
 * `withinRate: "ACCEPT"` they are admitted before those rules.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { Deployment, type Program } from "../harness";

type Package = typeof import("../../src/index");

/** A port the host's own firewall drops, with nothing listening on it. */
const BLOCKED_PORT = 5432;

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({
    name: "res-verdict",
    hosts: [{ backend: "nft" }, { backend: "legacy" }],
  });
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
});

/** Connects from the host to itself; returns "connected", "refused" or "timed out". */
async function connectToBlockedPort(host: LabHost): Promise<string> {
  const result = await lab.exec(host, [
    "timeout",
    "2",
    "bash",
    "-c",
    `exec 3<>/dev/tcp/127.0.0.1/${BLOCKED_PORT}`,
  ]);
  if (result.code === 0) return "connected";
  return result.code === 124 ? "timed out" : "refused";
}

async function save(host: LabHost): Promise<string[]> {
  const result = await lab.exec(host, ["iptables-save", "-t", "filter"]);
  return result.stdout
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, ""));
}

for (const index of [0, 1]) {
  describe(`RateLimit verdict (${index === 0 ? "nft" : "legacy"})`, () => {
    let deployment: Deployment;
    let host: LabHost;
    let baseline: string[];

    beforeAll(async () => {
      host = lab.hosts[index];
      const drop = ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", String(BLOCKED_PORT)];
      const added = await lab.exec(host, [...drop, "-j", "DROP"]);
      expect(added.code).toBe(0);
      baseline = await save(host);
      deployment = await Deployment.start({ project: "verdict", stack: `host${index}` });
    });

    afterAll(async () => {
      await deployment?.close();
    });

    const program =
      (withinRate?: "RETURN" | "ACCEPT"): Program =>
      (pkg: Package) => {
        new pkg.RateLimit("db", {
          connection: { host: host.ipv4, privateKey: host.privateKey },
          withinRate,
          persist: false,
        });
      };

    it("keeps a port the host drops dropped", async () => {
      expect(await connectToBlockedPort(host)).toBe("timed out");

      await deployment.up(program());

      expect(await connectToBlockedPort(host)).toBe("timed out");
    });

    it("admits within-rate connections with ACCEPT", async () => {
      const result = await deployment.up(program("ACCEPT"));

      expect(result.calls).toMatchObject({ create: 0, update: 1, delete: 0 });
      expect(await connectToBlockedPort(host)).toBe("refused");
    });

    it("destroys back to the host's own rules", async () => {
      await deployment.destroy();

      expect(await save(host)).toEqual(baseline);
    });
  });
}
