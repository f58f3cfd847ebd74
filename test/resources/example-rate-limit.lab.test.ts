/**
 * examples/rate-limit run through the engine harness against two lab hosts, with its fleet in
 * stack config as a user would write it. The harness records the example's `remote.Command`
 * (another provider) without running it; lab hosts already have iptables.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { Deployment, type Program } from "../harness";

let lab: Lab;
let deployment: Deployment;
const before = new Map<string, string>();

const runExample: Program = async () => {
  // A fresh module graph per run, as each `pulumi up` starts a new program process.
  vi.resetModules();
  await import("../../examples/rate-limit/index");
};

beforeAll(async () => {
  lab = await createLab({
    name: "res-example",
    hosts: [{ backend: "nft" }, { backend: "legacy" }],
  });
  const [web, bastion] = lab.hosts;
  const fleet = [
    // Lab hosts run no init system, so nothing can restore rules at their boot.
    { name: "web", host: web.ipv4, family: "both", ports: [80, 443], persist: false },
    {
      name: "bastion",
      host: bastion.ipv4,
      user: bastion.sudoUser,
      sudo: true,
      family: "ipv4",
      persist: false,
    },
  ];
  deployment = await Deployment.start({
    project: "rate-limit",
    stack: "lab",
    config: {
      "rate-limit:fleet": JSON.stringify(fleet),
      "rate-limit:privateKey": web.privateKey,
      "rate-limit:rate": "3000/minute",
    },
  });
  for (const host of lab.hosts) before.set(host.name, await save(host));
}, 120_000);

afterAll(async () => {
  await deployment?.close();
  await lab?.destroy();
});

async function save(host: LabHost): Promise<string> {
  const ipv4 = await lab.exec(host, ["iptables-save", "-t", "filter"]);
  const ipv6 = await lab.exec(host, ["ip6tables-save", "-t", "filter"]);
  return `${ipv4.stdout}${ipv6.stdout}`
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, " [0:0]"))
    .join("\n");
}

describe("examples/rate-limit", () => {
  it("installs iptables first, then limits every host", async () => {
    const result = await deployment.up(runExample);

    const installs = result.steps.filter((step) => step.otherProvider);
    expect(installs.map((step) => step.name).sort()).toEqual([
      "bastion-install-iptables",
      "web-install-iptables",
    ]);
    const [web, bastion] = lab.hosts;
    const webRules = await save(web);
    expect(webRules).toMatch(
      /-A INPUT -p tcp -m multiport --dports 80,443 -m conntrack --ctstate NEW .*web-ipv4-hook:0" -j RATE-LIMIT/,
    );
    // iptables-save prints 3000/minute as 50/sec with the minute's expire of 60 s.
    expect(webRules).toContain(
      "--hashlimit-upto 50/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name web-",
    );
    expect(webRules).toContain("--hashlimit-htable-expire 60000");
    expect(webRules).toContain("--hashlimit-srcmask 64");
    // Only TCP reaches web's chain, so REJECT replies with a reset, not a rate-limited ICMP error.
    expect(webRules).toMatch(
      /-A RATE-LIMIT -p tcp -m comment --comment "[^"]*web-ipv4-reject:30" -j REJECT --reject-with tcp-reset/,
    );
    expect(webRules).toMatch(
      /-A RATE-LIMIT -p tcp -m comment --comment "[^"]*web-ipv6-reject:30" -j REJECT --reject-with tcp-reset/,
    );
    const bastionRules = await save(bastion);
    expect(bastionRules).toMatch(
      /-A INPUT -m conntrack --ctstate NEW .*bastion-ipv4-hook:0" -j RATE-LIMIT/,
    );
    // Every protocol reaches bastion's chain, so REJECT keeps the family's ICMP error.
    expect(bastionRules).toMatch(
      /-A RATE-LIMIT -m comment --comment "[^"]*bastion-ipv4-reject:30" -j REJECT --reject-with icmp-port-unreachable/,
    );
  });

  it("makes no change on a second up", async () => {
    const result = await deployment.up(runExample);

    expect(result.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
  });

  it("destroys back to the hosts as they were", async () => {
    await deployment.destroy();

    for (const host of lab.hosts) expect(await save(host)).toBe(before.get(host.name));
  });
});
