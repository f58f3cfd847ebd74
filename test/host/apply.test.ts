import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { closeAllHosts, getHost, type Host, type HostEvent } from "../../src/host";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { formatMarker } from "../../src/netfilter/marker";
import type { DesiredRule } from "../../src/netfilter/plan";
import type { SaveTable } from "../../src/netfilter/types";

const LAB_NAME = "host-apply";

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
});

afterAll(async () => {
  closeAllHosts();
  await lab?.destroy();
});

/** Builds a managed rule in iptables-save form: `-A CHAIN MATCHES -m comment --comment MARKER TARGET`. */
function rule(
  chain: string,
  id: string,
  order: number,
  matches: string,
  target = "-j ACCEPT",
): DesiredRule {
  const marker = { id, order };
  return {
    marker,
    chain,
    line: `-A ${chain} ${matches} -m comment --comment "${formatMarker(marker)}" ${target}`,
  };
}

function ruleTexts(table: SaveTable | undefined, chain: string): string[] {
  return (table?.rules ?? []).filter((r) => r.chain === chain).map((r) => r.text);
}

async function save(host: LabHost, family: "ipv4" | "ipv6" = "ipv4"): Promise<string> {
  const result = await lab.exec(host, [
    family === "ipv4" ? "iptables-save" : "ip6tables-save",
    "-t",
    "filter",
  ]);
  // iptables-legacy-save prints chain counters even without -c; they change with every packet.
  return result.stdout
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, ""))
    .join("\n");
}

describe.each(["nft", "legacy"] as const)("applyTableChange on %s", (backend) => {
  let labHost: LabHost;
  let host: Host;
  const events: HostEvent[] = [];

  beforeAll(async () => {
    labHost = lab.hosts.find((candidate) => candidate.backend === backend)!;
    host = await getHost(
      { host: labHost.ipv4, privateKey: labHost.privateKey, hostKey: labHost.hostKey },
      { onEvent: (event) => events.push(event) },
    );
  });

  // iptables-nft prints no policy counters ([0:0] always); iptables-legacy-restore used to zero them.
  it.runIf(backend === "legacy")("keeps the counters of built-in chains", async () => {
    // FORWARD carries no traffic in a lab host, so its counters change only through restores.
    const counted = await lab.exec(labHost, ["iptables-restore", "-c", "--noflush"], {
      input: "*filter\n:FORWARD ACCEPT [1000:50000]\nCOMMIT\n",
    });
    expect(counted.code).toBe(0);

    await host.applyTableChange("ipv4", "filter", {
      upsertRules: [rule("INPUT", "apply/counters", 50, "-s 198.18.200.9/32")],
    });
    const saved = await lab.exec(labHost, ["iptables-save", "-c", "-t", "filter"]);
    await host.applyTableChange("ipv4", "filter", { deleteRules: ["apply/counters"] });

    expect(saved.stdout).toContain(":FORWARD ACCEPT [1000:50000]");
  });

  it("creates a chain and a rule and reads them back", async () => {
    const first = rule("APPLY", "apply/first", 10, "-s 198.18.200.1/32");
    const result = await host.applyTableChange("ipv4", "filter", {
      createChains: ["APPLY"],
      upsertRules: [first],
    });
    expect(result.changed).toBe(true);
    expect(result.plan.steps.map((step) => step.line)).toEqual(["-N APPLY", first.line]);
    expect(ruleTexts(result.after, "APPLY")).toEqual([first.line]);
    expect(result.after?.rules.find((r) => r.chain === "APPLY")?.counters).toEqual({
      packets: 0n,
      bytes: 0n,
    });
    expect(await save(labHost)).toContain(first.line);
  });

  it("changes nothing the second time", async () => {
    const before = await save(labHost);
    const result = await host.applyTableChange("ipv4", "filter", {
      createChains: ["APPLY"],
      upsertRules: [rule("APPLY", "apply/first", 10, "-s 198.18.200.1/32")],
    });
    expect(result.changed).toBe(false);
    expect(result.plan.script).toBe("");
    expect(await save(labHost)).toBe(before);
  });

  it("changes nothing for another spelling of a rule", async () => {
    const result = await host.applyTableChange("ipv4", "filter", {
      upsertRules: [rule("APPLY", "apply/first", 10, "-s 198.18.200.1")],
    });
    expect(result.changed).toBe(false);
  });

  it("costs one command for a change after a change", async () => {
    const started = events.length;
    const next = rule("APPLY", "apply/next", 15, "-s 198.18.200.10/32");
    const result = await host.applyTableChange("ipv4", "filter", { upsertRules: [next] });
    expect(result.changed).toBe(true);
    const commands = events.slice(started).filter((event) => event.kind === "command-start");
    expect(commands.map((event) => event.kind === "command-start" && event.command)).toEqual([
      "apply ipv4 filter",
    ]);
    expect(events.slice(started).some((event) => event.kind === "retry")).toBe(false);
  });

  it("reads a table", async () => {
    const table = await host.readTable("ipv4", "filter");
    expect(table?.name).toBe("filter");
    expect(table?.chains.map((chain) => chain.name)).toContain("APPLY");
  });

  it("rejects a bad transaction as a whole and names the rule", async () => {
    const before = await save(labHost);
    let error: unknown;
    try {
      await host.applyTableChange("ipv4", "filter", {
        upsertRules: [
          rule("APPLY", "apply/good", 20, "-s 198.18.200.2/32"),
          rule("APPLY", "apply/bad", 30, "-s 198.18.200.3/32", "-j NO-SUCH-CHAIN"),
        ],
      });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "APPLY_REJECTED")).toBe(true);
    expect((error as { details: Record<string, unknown> }).details.markerId).toBe("apply/bad");
    expect((error as Error).message).toContain("rule apply/bad");
    expect((error as Error).message).toMatch(/nothing was changed$/);
    expect(await save(labHost)).toBe(before);
  });

  it("disarms the rollback of a rejected transaction at once", async () => {
    let error: unknown;
    try {
      await host.applyTableChange(
        "ipv4",
        "filter",
        {
          upsertRules: [
            rule("INPUT", "apply/bad-input", 10, "-s 198.18.200.4/32", "-j NO-SUCH-CHAIN"),
          ],
        },
        { rollback: "always", confirmTimeoutSeconds: 30 },
      );
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "APPLY_REJECTED")).toBe(true);
    // The watchdog held the table lock: the next change would wait 30 s if it were still armed.
    const started = Date.now();
    await host.applyTableChange("ipv4", "filter", {
      upsertRules: [rule("APPLY", "apply/after-rejected", 40, "-s 198.18.200.5/32")],
    });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await rollbackStateFiles(labHost)).toEqual([]);
  });

  it("rejects DROP in nat with iptables' reason", async () => {
    let error: unknown;
    try {
      await host.applyTableChange(
        "ipv4",
        "nat",
        {
          upsertRules: [rule("PREROUTING", "apply/nat-drop", 10, "-s 198.18.200.6/32", "-j DROP")],
        },
        { rollback: "never" },
      );
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "APPLY_REJECTED")).toBe(true);
    expect((error as { details: Record<string, unknown> }).details.markerId).toBe("apply/nat-drop");
    expect((error as Error).message).toContain(
      'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited; ' +
        "nothing was changed",
    );
  });

  it("explains a rejection iptables gives no reason for", async () => {
    let error: unknown;
    try {
      await host.applyTableChange(
        "ipv4",
        "nat",
        {
          upsertRules: [
            rule("POSTROUTING", "apply/nat-reject", 10, "-s 198.18.200.7/32", "-j REJECT"),
          ],
        },
        { rollback: "never" },
      );
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "APPLY_REJECTED")).toBe(true);
    const message = (error as Error).message;
    // iptables-nft-restore blames the line with an errno, iptables-legacy-restore only COMMIT.
    expect(message).toContain("rule apply/nat-reject");
    expect(message).toContain("check that each target and match is valid in the nat table");
    expect(message).not.toMatch(/: ;| \| /);
  });

  it("plans again when another writer changed the table", async () => {
    await lab.exec(labHost, [
      "iptables",
      "-w",
      "-I",
      "APPLY",
      "1",
      "-s",
      "198.18.77.1/32",
      "-j",
      "RETURN",
    ]);
    const retriesBefore = events.filter((event) => event.kind === "retry").length;
    const second = rule("APPLY", "apply/second", 50, "-s 198.18.200.6/32");
    const result = await host.applyTableChange("ipv4", "filter", { upsertRules: [second] });
    expect(events.filter((event) => event.kind === "retry").length).toBe(retriesBefore + 1);
    const texts = ruleTexts(result.after, "APPLY");
    expect(texts[0]).toBe("-A APPLY -s 198.18.77.1/32 -j RETURN");
    expect(texts).toContain(second.line);
    expect(texts.filter((text) => text === second.line)).toHaveLength(1);
  });

  it("fails when a chain vanished behind a kept snapshot", async () => {
    await host.applyTableChange("ipv4", "filter", { createChains: ["GONE"] });
    await lab.exec(labHost, ["iptables", "-w", "-X", "GONE"]);
    let error: unknown;
    try {
      await host.applyTableChange("ipv4", "filter", {
        upsertRules: [rule("GONE", "apply/gone", 10, "-s 198.18.200.7/32")],
      });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "PLAN_CONFLICT")).toBe(true);
  });

  it("applies hostile comment and LOG prefix text literally", async () => {
    const comment = `a "quoted" $(touch /run/pwned-1) \`touch /run/pwned-2\`; touch /run/pwned-3 'x'`;
    const prefix = `"$(touch /run/pwned-4)\`;'`;
    const escape = (text: string) => text.replace(/["\\]/g, (ch) => `\\${ch}`);
    const marker = { id: "apply/hostile", order: 60 };
    const hostile: DesiredRule = {
      marker,
      chain: "APPLY",
      line:
        `-A APPLY -s 198.18.200.8/32 -m comment --comment "${escape(comment)}" ` +
        `-m comment --comment "${formatMarker(marker)}" -j LOG --log-prefix "${escape(prefix)}"`,
    };
    const result = await host.applyTableChange("ipv4", "filter", { upsertRules: [hostile] });
    const written = result.after?.rules.find((r) => r.args.includes(formatMarker(marker)));
    expect(written?.args).toContain(comment);
    expect(written?.args).toContain(prefix);
    const pwned = await lab.exec(labHost, ["sh", "-c", "ls /run | grep pwned || true"]);
    expect(pwned.stdout).toBe("");
  });

  it("rejects a line break inside a rule", async () => {
    const before = await save(labHost);
    const marker = { id: "apply/newline", order: 70 };
    let error: unknown;
    try {
      await host.applyTableChange("ipv4", "filter", {
        upsertRules: [
          {
            marker,
            chain: "APPLY",
            line: `-A APPLY -m comment --comment "x\n-F INPUT" -m comment --comment "${formatMarker(marker)}" -j ACCEPT`,
          },
        ],
      });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect(await save(labHost)).toBe(before);
  });

  it("applies to ip6tables", async () => {
    const v6 = rule("APPLY6", "apply/v6", 10, "-s fd6c:6162:ffff::1/128");
    const result = await host.applyTableChange("ipv6", "filter", {
      createChains: ["APPLY6"],
      upsertRules: [v6],
    });
    expect(ruleTexts(result.after, "APPLY6")).toEqual([v6.line]);
    expect(await save(labHost, "ipv6")).toContain(v6.line);
  });

  it("applies through sudo", async () => {
    const sudoHost = await getHost({
      host: labHost.ipv4,
      user: labHost.sudoUser,
      privateKey: labHost.privateKey,
      hostKey: labHost.hostKey,
      sudo: true,
    });
    const viaSudo = rule("APPLY", "apply/sudo", 80, "-s 198.18.200.9/32");
    const result = await sudoHost.applyTableChange("ipv4", "filter", { upsertRules: [viaSudo] });
    expect(ruleTexts(result.after, "APPLY")).toContain(viaSudo.line);
  });

  it("deletes rules and chains", async () => {
    const result = await host.applyTableChange("ipv4", "filter", {
      deleteRules: ["apply/first", "apply/second"],
    });
    const texts = ruleTexts(result.after, "APPLY");
    expect(texts.some((text) => text.includes("apply/first:"))).toBe(false);
    expect(texts.some((text) => text.includes("apply/second:"))).toBe(false);
    const dropped = await host.applyTableChange("ipv6", "filter", {
      deleteRules: ["apply/v6"],
      deleteChains: ["APPLY6"],
    });
    expect(dropped.after?.chains.map((chain) => chain.name)).not.toContain("APPLY6");
  });
});

describe("files", () => {
  let labHost: LabHost;
  let host: Host;

  beforeAll(async () => {
    labHost = lab.hosts[0];
    host = await getHost({
      host: labHost.ipv4,
      privateKey: labHost.privateKey,
      hostKey: labHost.hostKey,
    });
  });

  it("writes a file atomically only when it differs", async () => {
    const path = "/etc/pulumi-iptables-test/rules.v4";
    const content =
      '*filter\n-A INPUT -m comment --comment "$(touch /run/pwned-file)" -j ACCEPT\nCOMMIT\n';
    expect(await host.readFile(path)).toBeUndefined();
    expect(await host.writeFileAtomic(path, content)).toBe(true);
    expect(await host.writeFileAtomic(path, content)).toBe(false);
    expect(await host.readFile(path)).toBe(content);
    expect((await lab.exec(labHost, ["stat", "-c", "%a", path])).stdout.trim()).toBe("644");
    expect(await host.writeFileAtomic(path, content, 0o600)).toBe(true);
    expect((await lab.exec(labHost, ["stat", "-c", "%a", path])).stdout.trim()).toBe("600");
    expect(await host.writeFileAtomic(path, `${content}# more\n`, 0o600)).toBe(true);
    expect(await host.readFile(path)).toBe(`${content}# more\n`);
    const folder = await lab.exec(labHost, ["ls", "-A", "/etc/pulumi-iptables-test"]);
    expect(folder.stdout.trim()).toBe("rules.v4");
    expect((await lab.exec(labHost, ["test", "-e", "/run/pwned-file"])).code).toBe(1);
  });

  it("passes a hostile path literally", async () => {
    await host.facts();
    const path = `/run/odd name $(touch /run/pwned-path) \`x\`; 'q' "d"`;
    expect(await host.writeFileAtomic(path, "content\n")).toBe(true);
    expect(await host.readFile(path)).toBe("content\n");
    expect((await lab.exec(labHost, ["cat", path])).stdout).toBe("content\n");
    expect((await lab.exec(labHost, ["test", "-e", "/run/pwned-path"])).code).toBe(1);
  });

  it("rejects a relative path", async () => {
    let error: unknown;
    try {
      await host.readFile("etc/passwd");
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });

  it("fails on a folder", async () => {
    let error: unknown;
    try {
      await host.readFile("/etc");
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "COMMAND_FAILED")).toBe(true);
  });
});

/** Files a rollback leaves under /run/pulumi-iptables, besides the kept copy of each table. */
async function rollbackStateFiles(host: LabHost): Promise<string[]> {
  const listing = await lab.exec(host, ["ls", "-A", "/run/pulumi-iptables"]);
  return listing.stdout.split("\n").filter((name) => name !== "" && !name.endsWith(".before"));
}
