/**
 * The RateLimit recipe end to end. Programs run through the engine harness (the real dynamic
 * provider server, driven over gRPC as `pulumi up` drives it) against four lab hosts, two per
 * iptables backend. Each host has Docker- and fail2ban-style rules of its own that must survive
 * byte for byte. The tests run in order, and each starts from the state the previous one left.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSave } from "../../src/netfilter/parse";
import { HASHLIMIT_SCALE, hashlimitUserToCredits } from "../../src/netfilter/rates";
import type { Family } from "../../src/netfilter/types";
import { splitArgs } from "../../src/netfilter/tokenize";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { defaultHashlimitName } from "../../src/resources/rate-limit";
import {
  CheckFailedError,
  Deployment,
  DeploymentError,
  REPO_ROOT,
  isSecret,
  type OperationResult,
  type Program,
} from "../harness";

type Package = typeof import("../../src/index");

const BACKENDS = ["nft", "legacy", "nft", "legacy"] as const;
/** Hosts 2 and 3 get the recipe in both families; host 3 logs in as a sudo user with a password. */
const BOTH_FAMILIES = [false, false, true, true];
const PROJECT = "acceptance";
const STACK = "test";

const FOREIGN_IPV4 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -i lo -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-USER -j RETURN
-A f2b-sshd -s 203.0.113.7/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW
COMMIT
`;

const FOREIGN_IPV6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A f2b-sshd -s 2001:db8::7/128 -j REJECT --reject-with icmp6-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
`;

let lab: Lab;
let deployment: Deployment;
/** Every host's dumps before the first up, per family. */
const baseline = new Map<string, string>();

beforeAll(async () => {
  lab = await createLab({ name: "res-ratelimit", hosts: BACKENDS.map((backend) => ({ backend })) });
  for (const host of lab.hosts) {
    await mustExec(host, ["iptables-restore"], FOREIGN_IPV4);
    await mustExec(host, ["ip6tables-restore"], FOREIGN_IPV6);
    for (const family of ["ipv4", "ipv6"] as const)
      baseline.set(key(host, family), await dump(host, family));
  }
  deployment = await Deployment.start({ project: PROJECT, stack: STACK });
}, 180_000);

afterAll(async () => {
  await deployment?.close();
  await lab?.destroy();
});

interface RecipeOptions {
  readonly rate?: string;
  readonly htableExpireMs?: number;
}

/** Builds the program under test: the RateLimit recipe on every lab host. */
function recipe(options: RecipeOptions = {}): Program {
  return (pkg: Package) => {
    lab.hosts.forEach((host, index) => {
      new pkg.RateLimit(`web${index}`, {
        connection: connectionOf(host, index),
        family: BOTH_FAMILIES[index] ? "both" : undefined,
        rate: options.rate,
        htableExpireMs: options.htableExpireMs,
        // Lab hosts run no init system, so nothing can restore rules at their boot.
        persist: false,
      });
    });
  };
}

function connectionOf(host: LabHost, index: number) {
  if (index === 3) {
    return { host: host.ipv4, user: host.sudoUser, password: host.sudoPassword, sudo: true };
  }
  return { host: host.ipv4, privateKey: host.privateKey };
}

/** Returns the hashlimit table of host `index`'s RateLimit: the default name for this stack. */
function tableName(index: number): string {
  return defaultHashlimitName(PROJECT, STACK, `web${index}`);
}

function familiesOf(index: number): Family[] {
  return BOTH_FAMILIES[index] ? ["ipv4", "ipv6"] : ["ipv4"];
}

/** The managed lines the recipe must leave in each chain of a host's filter table. */
function expectedManaged(index: number, family: Family, rate = "50/sec"): Record<string, string[]> {
  const marker = (part: string, order: number) =>
    `-m comment --comment "pulumi-iptables:${PROJECT}/${STACK}/web${index}-${family}-${part}:${order}"`;
  const mask = family === "ipv6" ? " --hashlimit-srcmask 64" : "";
  const rejectWith = family === "ipv6" ? "icmp6-port-unreachable" : "icmp-port-unreachable";
  return {
    INPUT: [`-A INPUT -m conntrack --ctstate NEW ${marker("hook", 0)} -j RATE-LIMIT`],
    "RATE-LIMIT": [
      `-A RATE-LIMIT -m hashlimit --hashlimit-upto ${rate} --hashlimit-burst 20 --hashlimit-mode srcip ` +
        `--hashlimit-name ${tableName(index)}${mask} ${marker("accept", 10)} -j RETURN`,
      `-A RATE-LIMIT -m limit --limit 1/sec ${marker("log", 20)} -j LOG --log-prefix "RATE-LIMIT: "`,
      `-A RATE-LIMIT ${marker("reject", 30)} -j REJECT --reject-with ${rejectWith}`,
    ],
  };
}

describe("RateLimit through the engine", () => {
  it("applies the recipe to four hosts", async () => {
    const result = await deployment.up(recipe());

    expect(result.calls).toMatchObject({ create: 30, update: 0, delete: 0 });
    for (const [index, host] of lab.hosts.entries()) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const before = baseline.get(key(host, family))!;
        const after = await dump(host, family);
        if (!familiesOf(index).includes(family)) {
          expect(after).toBe(before);
          continue;
        }
        expectRecipe(before, after, expectedManaged(index, family));
      }
    }
  });

  it("makes no change on a second up", async () => {
    const before = await dumpAll();
    const result = await deployment.up(recipe());

    expectNoChange(result);
    expect(await dumpAll()).toEqual(before);
  });

  it("makes no change for equivalent rate spellings", async () => {
    const short = await deployment.up(recipe({ rate: "50/s" }));
    const minutes = await deployment.up(recipe({ rate: "3000/minute", htableExpireMs: 1000 }));

    expectNoChange(short);
    expectNoChange(minutes);
  });

  it("previews a rate change as the old and new rule line", async () => {
    const before = await dumpAll();
    const result = await deployment.preview(recipe({ rate: "100/sec" }));

    const changed = result.steps.filter((step) => step.op !== "same");
    expect(changed.map((step) => step.name).sort()).toEqual(acceptRuleNames());
    for (const step of changed) {
      expect(step.op).toBe("update");
      expect(step.changedKeys).toEqual(["rule", "upto"]);
      expect(step.oldInputs?.rule).toContain("--hashlimit-upto 50/sec");
      expect(step.newInputs?.rule).toBe(String(step.oldInputs?.rule).replace("50/sec", "100/sec"));
    }
    expect(result.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
    expect(await dumpAll()).toEqual(before);
  });

  it("changes only the rate rule on up", async () => {
    const before = await dumpAll();
    const result = await deployment.up(recipe({ rate: "100/sec" }));

    expect(result.calls).toMatchObject({ create: 0, update: 6, delete: 0 });
    expect(
      result.steps
        .filter((step) => step.op === "update")
        .map((step) => step.name)
        .sort(),
    ).toEqual(acceptRuleNames());
    const after = await dumpAll();
    for (const [index, host] of lab.hosts.entries()) {
      for (const family of familiesOf(index)) {
        const { removed, added } = lineDiff(before[key(host, family)], after[key(host, family)]);
        expect(removed).toEqual([expectedManaged(index, family)["RATE-LIMIT"][0]]);
        expect(added).toEqual([expectedManaged(index, family, "100/sec")["RATE-LIMIT"][0]]);
      }
    }
  });

  it("makes the kernel enforce the new rate, not the first one", async () => {
    // Each bucket of /proc/net/ip*t_hashlimit/NAME ends with the cost of one packet, which is
    // the credits of one period: 10 ms at 100/sec, twice that at 50/sec.
    const cost = String(hashlimitUserToCredits(BigInt(HASHLIMIT_SCALE / 100)));
    for (const [index, host] of lab.hosts.entries()) {
      for (const family of familiesOf(index)) {
        const loopback = family === "ipv4" ? "127.0.0.1" : "::1";
        // A connection to a closed port of the host itself: its SYN goes through the hook.
        await lab.exec(host, ["bash", "-c", `exec 3<>/dev/tcp/${loopback}/9`]);
        const directory = family === "ipv4" ? "ipt_hashlimit" : "ip6t_hashlimit";
        const buckets = await mustExec(host, ["cat", `/proc/net/${directory}/${tableName(index)}`]);

        const costs = buckets
          .trim()
          .split("\n")
          .map((line) => line.split(" ").at(-1));
        expect(costs.length).toBeGreaterThan(0);
        expect(costs).toEqual(costs.map(() => cost));
      }
    }
  });

  it("refresh drops a rule deleted out of band and up restores it", async () => {
    const host = lab.hosts[1];
    const before = await dump(host, "ipv4");
    await mustExec(host, ["iptables", "-D", "RATE-LIMIT", "3"]);

    const refresh = await deployment.refresh();
    const droppedFromState = !deployment.state.some(
      (resource) => resource.name === "web1-ipv4-reject",
    );
    const up = await deployment.up(recipe({ rate: "100/sec" }));

    expect(
      refresh.steps.filter((step) => step.op === "refresh-delete").map((step) => step.name),
    ).toEqual(["web1-ipv4-reject"]);
    expect(droppedFromState).toBe(true);
    expect(up.calls).toMatchObject({ create: 1, update: 0, delete: 0 });
    expect(up.steps.find((step) => step.op === "create")?.name).toBe("web1-ipv4-reject");
    expect(await dump(host, "ipv4")).toBe(before);
  });

  it("refresh reports a rule edited out of band and up repairs it", async () => {
    const host = lab.hosts[2];
    const before = await dump(host, "ipv6");
    const line = ruleLines(before, "RATE-LIMIT")[0];
    const edited = splitArgs(line.replace("100/sec", "10/sec")).slice(2);
    await mustExec(host, ["ip6tables", "-R", "RATE-LIMIT", "1", ...edited]);

    const refresh = await deployment.refresh();
    const up = await deployment.up(recipe({ rate: "100/sec" }));

    const drifted = refresh.steps.filter((step) => step.changedKeys.includes("rule"));
    expect(drifted.map((step) => step.name)).toEqual(["web2-ipv6-accept"]);
    expect(deployment.resource("web2-ipv6-accept").outputs.rule).toBe(line);
    expect(up.calls).toMatchObject({ create: 0, update: 1, delete: 0 });
    expect(await dump(host, "ipv6")).toBe(before);
  });

  it("refresh reports a rule moved out of order and up repairs it", async () => {
    const host = lab.hosts[0];
    const before = await dump(host, "ipv4");
    const logLine = ruleLines(before, "RATE-LIMIT")[1];
    await mustExec(host, ["iptables", "-D", "RATE-LIMIT", "2"]);
    await mustExec(host, ["iptables", "-A", ...splitArgs(logLine).slice(1)]);

    const refresh = await deployment.refresh();
    const up = await deployment.up(recipe({ rate: "100/sec" }));

    const moved = refresh.steps.filter((step) => step.changedKeys.includes("placement"));
    expect(moved.map((step) => step.name)).toContain("web0-ipv4-log");
    expect(up.calls.create).toBe(0);
    expect(up.calls.delete).toBe(0);
    expect(up.calls.update).toBeGreaterThanOrEqual(1);
    expect(await dump(host, "ipv4")).toBe(before);
  });

  it("keeps secrets out of the serialised provider and the state", () => {
    const secrets = secretTexts();
    const custom = deployment.state.filter((resource) => resource.custom);

    expect(custom.length).toBe(30);
    for (const resource of custom) {
      const provider = String(resource.inputs.__provider);
      expect(provider).toContain('require("pulumi-iptables/resources/providers/index")');
      expect(provider).not.toContain(REPO_ROOT);
      expect(provider).not.toMatch(/["'`]\/(work|tmp|var|root|home|usr)\//);
      for (const secret of secrets) expect(provider).not.toContain(secret);
      expect(isSecret(resource.inputs.connection)).toBe(true);
      expect(isSecret(resource.outputs.connection)).toBe(true);
      expect(typeof resource.outputs.backend).toBe("string");
    }
    const checkpoint = deployment.checkpoint();
    for (const secret of secrets) expect(checkpoint).not.toContain(secret);
  });
});

describe("invalid inputs", () => {
  it("fail in check with one failure each, contacting no host", async () => {
    const host = lab.hosts[0];
    const connectionsBefore = await newSshConnections(host);
    const before = await dumpAll();
    // A provider process of its own has no pooled connection, so any contact would be a new one.
    const fresh = await Deployment.start({ project: PROJECT, stack: "invalid" });
    try {
      const error = await fresh.up(invalidProgram(host)).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(DeploymentError);
      const failed = (error as DeploymentError).errors.filter((e) => e instanceof CheckFailedError);
      const byName = Object.fromEntries(failed.map((e) => [e.resourceName, e.failures]));
      expect(Object.keys(byName).sort()).toEqual([
        "bad-mask",
        "bad-name",
        "bad-prefix",
        "bad-rate",
      ]);
      expect(byName["bad-name"]).toEqual([expect.objectContaining({ property: "hashlimitName" })]);
      expect(byName["bad-rate"]).toEqual([expect.objectContaining({ property: "upto" })]);
      expect(byName["bad-mask"]).toEqual([expect.objectContaining({ property: "srcMask" })]);
      expect(byName["bad-prefix"]).toEqual([expect.objectContaining({ property: "logPrefix" })]);
      expect((error as DeploymentError).result.calls).toMatchObject({
        create: 0,
        update: 0,
        delete: 0,
      });
    } finally {
      await fresh.close();
    }
    expect(await newSshConnections(host)).toBe(connectionsBefore);
    expect(await dumpAll()).toEqual(before);
  });
});

/** The outcome of an up that is expected to fail. */
interface FailedUp {
  readonly error: DeploymentError;
  /** Custom resources in the stack's state afterwards. */
  readonly created: number;
}

/**
 * Runs one RateLimit "web" on `host` in a stack of its own, expecting the up to fail. Returns the
 * error and the count of resources it created, then destroys them.
 */
async function failingRecipe(
  host: LabHost,
  stack: string,
  args: Record<string, unknown>,
): Promise<FailedUp> {
  const fresh = await Deployment.start({ project: PROJECT, stack });
  try {
    const error = await fresh
      .up((pkg: Package) => {
        new pkg.RateLimit("web", {
          connection: { host: host.ipv4, privateKey: host.privateKey },
          ...args,
        });
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeploymentError);
    const created = fresh.state.filter((resource) => resource.custom).length;
    await fresh.destroy();
    return { error: error as DeploymentError, created };
  } finally {
    await fresh.close();
  }
}

describe("a RateLimit that cannot be applied", () => {
  it("fails on invalid arguments first", async () => {
    const before = await dumpAll();

    const { error } = await failingRecipe(lab.hosts[0], "invalid-recipe", {
      family: "both",
      rejectWith: { ipv6: "icmp-port-unreachable" },
      persist: false,
    });

    expect(error.message).toContain('rejectWith.ipv6 "icmp-port-unreachable" is invalid');
    expect(error.result.calls).toMatchObject({ create: 0 });
    expect(await dumpAll()).toEqual(before);
  });

  it("fails without an init system", async () => {
    const before = await dumpAll();

    const { error, created } = await failingRecipe(lab.hosts[1], "no-init", {
      family: "both",
      chain: "NO-INIT",
    });

    expect(error.message).toContain("runs neither systemd nor upstart");
    expect(error.message).toContain("persist: false");
    expect(created).toBe(0);
    expect(await dumpAll()).toEqual(before);
  });

  it("fails without its hook chain", async () => {
    const before = await dumpAll();

    const { error, created } = await failingRecipe(lab.hosts[1], "no-hook-chain", {
      chain: "NO-HOOK",
      hook: { chain: "DOCKER-USER-MISSING" },
      persist: false,
    });

    expect(error.message).toContain(
      'chain "DOCKER-USER-MISSING" does not exist in the filter table on the host',
    );
    expect(created).toBe(0);
    expect(await dumpAll()).toEqual(before);
  });

  it("removes the boot files of a failed create", async () => {
    const host = lab.hosts[0];

    const { error } = await failingRecipe(host, "wrong-init", {
      chain: "WRONG-INIT",
      persist: { init: "systemd" },
    });
    const left = await lab.exec(host, [
      "sh",
      "-c",
      "ls -d /etc/pulumi-iptables/* /etc/systemd/system/pulumi-iptables-* 2>/dev/null",
    ]);

    expect(error.message).toContain("web-persist");
    expect(left.stdout).toBe("");
  });
});

describe("destroy", () => {
  it("restores every host exactly", async () => {
    const result = await deployment.destroy();

    expect(result.calls.delete).toBe(30);
    for (const host of lab.hosts) {
      for (const family of ["ipv4", "ipv6"] as const) {
        expect(await dump(host, family)).toBe(baseline.get(key(host, family)));
      }
    }
  });
});

function invalidProgram(host: LabHost): Program {
  return (pkg: Package) => {
    const connection = { host: host.ipv4, privateKey: host.privateKey };
    const common = { connection, chain: "INPUT", upto: "50/sec", hashlimitName: "ok" };
    new pkg.HashlimitRule("bad-name", { ...common, hashlimitName: "a/b" });
    new pkg.HashlimitRule("bad-rate", { ...common, upto: "50/fortnight" });
    new pkg.HashlimitRule("bad-mask", { ...common, srcMask: 64 });
    new pkg.Rule("bad-prefix", {
      connection,
      chain: "INPUT",
      jump: "LOG",
      logPrefix: "x".repeat(40),
    });
  };
}

/** Asserts the recipe's lines are in place and every foreign line is untouched. */
function expectRecipe(before: string, after: string, managed: Record<string, string[]>): void {
  const beforeDump = parseSave(before);
  const afterDump = parseSave(after);
  for (const table of afterDump.tables) {
    const old = beforeDump.tables.find((t) => t.name === table.name);
    if (table.name !== "filter") {
      expect(renderTable(after, table.name)).toBe(renderTable(before, table.name));
      continue;
    }
    const chains = new Set([
      ...table.chains.map((c) => c.name),
      ...(old?.chains.map((c) => c.name) ?? []),
    ]);
    for (const chain of chains) {
      const rules = table.rules.filter((r) => r.chain === chain).map((r) => r.text);
      const oldRules = old?.rules.filter((r) => r.chain === chain).map((r) => r.text) ?? [];
      const ours = managed[chain] ?? [];
      // Managed rules of INPUT sit above every foreign rule, because the planner puts the first
      // managed rule of a chain at position 1. The owned chain contains only managed rules.
      expect(rules).toEqual([...ours, ...oldRules]);
    }
    const headers = table.chains.map((c) => c.name).sort();
    expect(headers).toEqual([...(old?.chains.map((c) => c.name) ?? []), "RATE-LIMIT"].sort());
  }
}

function expectNoChange(result: OperationResult): void {
  expect(result.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
  expect(result.steps.every((step) => step.op === "same")).toBe(true);
}

function acceptRuleNames(): string[] {
  return lab.hosts
    .flatMap((_, index) => familiesOf(index).map((family) => `web${index}-${family}-accept`))
    .sort();
}

/** Returns the lines `after` has that `before` lacks, and the other way round. */
function lineDiff(before: string, after: string): { removed: string[]; added: string[] } {
  const old = before.split("\n");
  const now = after.split("\n");
  return {
    removed: old.filter((line) => !now.includes(line)),
    added: now.filter((line) => !old.includes(line)),
  };
}

function ruleLines(text: string, chain: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(`-A ${chain} `));
}

function renderTable(text: string, table: string): string {
  const start = text.indexOf(`*${table}\n`);
  return text.slice(start, text.indexOf("COMMIT", start));
}

/** Texts that must never appear in state or in the serialised provider. */
function secretTexts(): string[] {
  const texts: string[] = [];
  for (const host of lab.hosts) {
    texts.push(host.sudoPassword);
    for (const line of host.privateKey.split("\n")) {
      if (line.trim().length >= 16 && !line.startsWith("-----")) texts.push(line.trim());
    }
  }
  return texts;
}

/** New SSH connections the host accepted, from the foreign counting rule in mangle INPUT. */
async function newSshConnections(host: LabHost): Promise<number> {
  const result = await mustExec(host, ["iptables-save", "-c", "-t", "mangle"]);
  const line = result.split("\n").find((l) => l.includes("--dport 22 -m conntrack --ctstate NEW"));
  const match = /^\[(\d+):/.exec(line ?? "");
  if (match === null) throw new Error(`no SSH counting rule on ${host.name}:\n${result}`);
  return Number(match[1]);
}

/** Returns the host's dump for a family, without comments and with chain counters zeroed. */
async function dump(host: LabHost, family: Family): Promise<string> {
  const text = await mustExec(host, [family === "ipv4" ? "iptables-save" : "ip6tables-save"]);
  return text
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, " [0:0]"))
    .join("\n");
}

async function dumpAll(): Promise<Record<string, string>> {
  const dumps: Record<string, string> = {};
  for (const host of lab.hosts) {
    for (const family of ["ipv4", "ipv6"] as const)
      dumps[key(host, family)] = await dump(host, family);
  }
  return dumps;
}

function key(host: LabHost, family: Family): string {
  return `${host.name}/${family}`;
}

async function mustExec(host: LabHost, argv: string[], input?: string): Promise<string> {
  const result = await lab.exec(host, argv, input === undefined ? {} : { input });
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} on ${host.name} failed (${result.code}): ${result.stderr}`);
  }
  return result.stdout;
}
