/**
 * RateLimit options beyond the defaults, through the engine harness on one lab host per
 * backend: a hook in Docker's DOCKER-USER chain for some TCP ports, another chain name, DROP
 * instead of REJECT, no LOG, and a secret comment kept out of the state.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { defaultHashlimitName } from "../../src/resources/rate-limit";
import { Deployment, isSecret, type Program } from "../harness";

type Package = typeof import("../../src/index");

const DOCKER = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
`;

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({
    name: "res-options",
    hosts: [{ backend: "nft" }, { backend: "legacy" }],
  });
  for (const host of lab.hosts) {
    const result = await lab.exec(host, ["iptables-restore"], { input: DOCKER });
    if (result.code !== 0) throw new Error(`iptables-restore on ${host.name}: ${result.stderr}`);
  }
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
});

async function filterRules(host: LabHost): Promise<string[]> {
  const result = await lab.exec(host, ["iptables-save", "-t", "filter"]);
  return result.stdout.split("\n").filter((line) => line.startsWith("-A "));
}

for (const index of [0, 1]) {
  describe(`RateLimit options (${index === 0 ? "nft" : "legacy"})`, () => {
    let deployment: Deployment;
    let host: LabHost;
    let before: string[];

    beforeAll(async () => {
      host = lab.hosts[index];
      before = await filterRules(host);
      deployment = await Deployment.start({ project: "options", stack: `host${index}` });
    });

    afterAll(async () => {
      await deployment?.close();
    });

    const program: Program = (pkg: Package) => {
      new pkg.RateLimit("api", {
        connection: { host: host.ipv4, privateKey: host.privateKey },
        chain: "API-LIMIT",
        rate: "10/minute",
        burst: 5,
        hook: { chain: "DOCKER-USER", ports: [8080, 8443] },
        log: false,
        reject: "DROP",
        persist: false,
      });
    };

    it("hooks into DOCKER-USER above Docker's own rule", async () => {
      const result = await deployment.up(program);

      expect(result.calls).toMatchObject({ create: 4, update: 0, delete: 0 });
      const marker = (part: string, order: number) =>
        `-m comment --comment "pulumi-iptables:options/host${index}/api-ipv4-${part}:${order}"`;
      expect(await filterRules(host)).toEqual([
        "-A FORWARD -j DOCKER-USER",
        "-A API-LIMIT -m hashlimit --hashlimit-upto 10/min --hashlimit-burst 5 --hashlimit-mode srcip " +
          `--hashlimit-name ${defaultHashlimitName("options", `host${index}`, "api")} ` +
          `${marker("accept", 10)} -j RETURN`,
        `-A API-LIMIT ${marker("drop", 30)} -j DROP`,
        "-A DOCKER-USER -p tcp -m multiport --dports 8080,8443 -m conntrack --ctstate NEW " +
          `${marker("hook", 0)} -j API-LIMIT`,
        "-A DOCKER-USER -j RETURN",
      ]);
    });

    it("keeps the rule text readable and the connection secret", () => {
      for (const resource of deployment.state.filter((r) => r.custom)) {
        expect(isSecret(resource.outputs.connection)).toBe(true);
        expect(isSecret(resource.outputs.rule)).toBe(false);
      }
    });

    it("destroys back to Docker's rules", async () => {
      await deployment.destroy();

      expect(await filterRules(host)).toEqual(before);
    });

    it("keeps a secret comment out of the plain rule text", async () => {
      const secretComment: Program = (pkg: Package, pulumi) => {
        new pkg.Rule("note", {
          connection: { host: host.ipv4, privateKey: host.privateKey },
          chain: "INPUT",
          protocol: "tcp",
          destinationPorts: [9],
          jump: "DROP",
          comment: pulumi.secret("ticket 4711"),
        });
      };

      await deployment.up(secretComment);
      const note = deployment.resource("note");
      const checkpoint = deployment.checkpoint();
      await deployment.destroy();

      expect(isSecret(note.outputs.rule)).toBe(true);
      expect(isSecret(note.outputs.comment)).toBe(true);
      expect(checkpoint).not.toContain("ticket 4711");
    });
  });
}
