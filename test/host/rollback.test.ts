import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { closeAllHosts, getHost, type HostConnection, type HostEvent } from "../../src/host";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { formatMarker } from "../../src/netfilter/marker";
import type { DesiredRule } from "../../src/netfilter/plan";
import { startClient } from "./spawn-client";

const LAB_NAME = "host-rollback";
const CONFIRM_SECONDS = 3;

let lab: Lab;

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
});

afterAll(async () => {
  closeAllHosts();
  await lab?.destroy();
});

function inputRule(id: string, order: number, matches: string, target: string): DesiredRule {
  const marker = { id, order };
  return {
    marker,
    chain: "INPUT",
    line: `-A INPUT ${matches} -m comment --comment "${formatMarker(marker)}" ${target}`,
  };
}

/** Returns the filter table without comments and counters, as a comparable text. */
async function filterTable(host: LabHost): Promise<string> {
  const result = await lab.exec(host, ["iptables-save", "-t", "filter"]);
  return result.stdout
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/ \[\d+:\d+\]$/, ""))
    .join("\n");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls the table until `expected` or the time runs out; records every state seen. */
async function waitForTable(
  host: LabHost,
  expected: string,
  timeoutMs: number,
  seen: Set<string>,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let current = await filterTable(host);
  seen.add(current);
  while (current !== expected && Date.now() < deadline) {
    await sleep(100);
    current = await filterTable(host);
    seen.add(current);
  }
  return current;
}

describe.each(["nft", "legacy"] as const)("dead-man switch on %s", (backend) => {
  let labHost: LabHost;
  let connection: HostConnection;

  beforeAll(() => {
    labHost = lab.hosts.find((candidate) => candidate.backend === backend)!;
    connection = { host: labHost.ipv4, privateKey: labHost.privateKey, hostKey: labHost.hostKey };
  });

  it("rolls back a rule that blocks new SSH connections", async () => {
    const events: HostEvent[] = [];
    const host = await getHost(connection, { onEvent: (event) => events.push(event) });
    await host.applyTableChange("ipv4", "filter", {
      upsertRules: [inputRule("keep/earlier", 5, "-s 198.18.202.9/32", "-j ACCEPT")],
    });
    const before = await filterTable(labHost);
    events.length = 0;
    const lockout = inputRule(
      "lockout/ssh",
      10,
      `-s ${lab.gatewayIpv4}/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW`,
      "-j DROP",
    );

    const started = Date.now();
    let error: unknown;
    try {
      await host.applyTableChange(
        "ipv4",
        "filter",
        { upsertRules: [lockout] },
        { confirmTimeoutSeconds: CONFIRM_SECONDS },
      );
    } catch (caught) {
      error = caught;
    }
    const elapsed = Date.now() - started;

    expect(hasErrorCode(error, "APPLY_ROLLED_BACK"), String(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain("was rolled back: a new SSH connection failed after the change");
    // The confirm dial's timeout comes from the deadline, so the message names the deadline's
    // setting, not connection.perDialTimeout, and states why no attempt followed.
    expect(message).toContain("(set by the deadline for confirming the change)");
    expect(message).toContain("or raise connection.confirmTimeoutSeconds");
    expect(message).not.toContain("raise connection.perDialTimeout");
    expect(message).toContain(
      "because too little time was left before the deadline for confirming the change to start " +
        "another attempt",
    );
    expect(message).not.toMatch(/within 0\.\d+ s/);
    expect((error as { details: Record<string, unknown> }).details.verified).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(CONFIRM_SECONDS * 1000 - 1000);
    expect(elapsed).toBeLessThan(CONFIRM_SECONDS * 1000 + 5000);
    expect(
      events.some((event) => event.kind === "command-end" && event.command === "disarm rollback"),
    ).toBe(false);

    expect(await filterTable(labHost)).toBe(before);
    closeAllHosts();
    const fresh = await getHost(connection);
    expect((await fresh.run(["true"])).code).toBe(0);
  });

  it("keeps a change that a new connection confirms", async () => {
    const events: HostEvent[] = [];
    const host = await getHost(connection, { onEvent: (event) => events.push(event) });
    const harmless = inputRule("confirmed/accept", 20, "-s 198.18.202.1/32", "-j ACCEPT");
    const confirmSeconds = 5;
    const result = await host.applyTableChange(
      "ipv4",
      "filter",
      { upsertRules: [harmless] },
      { confirmTimeoutSeconds: confirmSeconds },
    );
    expect(result.changed).toBe(true);
    expect(events.some((event) => event.kind === "connect" && event.purpose === "confirm")).toBe(
      true,
    );
    const disarm = events.find(
      (event) => event.kind === "command-end" && event.command === "disarm rollback",
    );
    expect(disarm).toBeDefined();
    expect(disarm?.kind === "command-end" ? disarm.exitCode : undefined).toBe(0);

    await sleep(confirmSeconds * 1000 + 1000);
    expect(await filterTable(labHost)).toContain(harmless.line);
    expect(await rollbackStateFiles(labHost)).toEqual([]);
  });

  it("skips the switch for a chain no packet to the host reaches", async () => {
    const events: HostEvent[] = [];
    const host = await getHost(connection, { onEvent: (event) => events.push(event) });
    await host.applyTableChange("ipv4", "filter", {
      createChains: ["UNHOOKED"],
      upsertRules: [
        {
          marker: { id: "unhooked/drop", order: 1 },
          chain: "UNHOOKED",
          line: `-A UNHOOKED -m comment --comment "${formatMarker({ id: "unhooked/drop", order: 1 })}" -j DROP`,
        },
      ],
    });
    expect(events.some((event) => event.kind === "connect" && event.purpose === "confirm")).toBe(
      false,
    );
  });

  it("rolls back when the client dies before confirming", async () => {
    const before = await filterTable(labHost);
    const change = inputRule("killed/after-apply", 30, "-s 198.18.202.2/32", "-j ACCEPT");
    const client = startClient({
      connection: {
        host: labHost.ipv4,
        hostKey: labHost.hostKey,
        privateKeyPath: labHost.privateKeyPath,
      },
      operation: "apply",
      chain: "INPUT",
      rules: [change],
      rollback: "always",
      confirmTimeoutSeconds: CONFIRM_SECONDS,
      dieOn: { kind: "command-end", command: "apply ipv4 filter" },
    });
    const outcome = await client.done;
    expect(outcome.signal, JSON.stringify(outcome)).toBe("SIGKILL");

    const seen = new Set<string>();
    const after = await waitForTable(labHost, before, CONFIRM_SECONDS * 1000 + 5000, seen);
    expect(after).toBe(before);
    // The client died after the transaction, so the host held the new table until the rollback.
    const changed = [...seen].filter((state) => state !== before);
    for (const state of changed)
      expect(state.split("\n").filter((line) => line === change.line)).toHaveLength(1);
    await expectLockFree(connection);
  });

  it("keeps the table whole when the client dies mid-apply", async () => {
    const before = await filterTable(labHost);
    const change = inputRule("killed/during-apply", 40, "-s 198.18.202.3/32", "-j ACCEPT");
    const client = startClient({
      connection: {
        host: labHost.ipv4,
        hostKey: labHost.hostKey,
        privateKeyPath: labHost.privateKeyPath,
      },
      operation: "apply",
      chain: "INPUT",
      rules: [change],
      rollback: "always",
      confirmTimeoutSeconds: CONFIRM_SECONDS,
      dieOn: { kind: "command-start", command: "apply ipv4 filter" },
    });
    const outcome = await client.done;
    expect(outcome.signal, JSON.stringify(outcome)).toBe("SIGKILL");

    const seen = new Set<string>();
    const after = await waitForTable(labHost, before, CONFIRM_SECONDS * 1000 + 5000, seen);
    expect(after).toBe(before);
    for (const state of seen) {
      if (state !== before) expect(state.replace(`${change.line}\n`, "")).toBe(before);
    }
    await expectLockFree(connection);
  });

  it("keeps the table whole when the SSH session dies", async () => {
    const before = await filterTable(labHost);
    const change = inputRule("killed/session", 50, "-s 198.18.202.4/32", "-j ACCEPT");
    const host = await getHost(connection);
    await host.readTable("ipv4", "filter");

    // Holding the table lock makes the apply wait on the host, where its session is then killed.
    const holder = lab.exec(labHost, [
      "flock",
      "/run/pulumi-iptables.ipv4.filter.lock",
      "sleep",
      "2",
    ]);
    await sleep(300);
    const applying = host
      .applyTableChange(
        "ipv4",
        "filter",
        { upsertRules: [change] },
        { rollback: "always", confirmTimeoutSeconds: CONFIRM_SECONDS },
      )
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    await sleep(700);
    const sessions = await lab.exec(labHost, [
      "ps",
      "-o",
      "pid=",
      "--ppid",
      String(labHost.sshdPid),
    ]);
    const pids = sessions.stdout
      .split("\n")
      .map((line) => Number(line.trim()))
      .filter((pid) => pid > 0);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(pid, "SIGKILL");

    const error = await applying;
    expect(hasErrorCode(error, "SSH_CLOSED")).toBe(true);
    expect((error as Error).message).toContain("the host restores the previous table by itself");
    await holder;

    const seen = new Set<string>();
    const after = await waitForTable(labHost, before, CONFIRM_SECONDS * 1000 + 6000, seen);
    expect(after).toBe(before);
    for (const state of seen) {
      if (state !== before) expect(state.replace(`${change.line}\n`, "")).toBe(before);
    }
    closeAllHosts();
    await expectLockFree(connection);
  });
});

/** Applies a change that needs the table lock, which must come free within a few seconds. */
async function expectLockFree(connection: HostConnection): Promise<void> {
  const host = await getHost(connection);
  const started = Date.now();
  const marker = { id: `lock/free-${started}`, order: 99 };
  await host.applyTableChange(
    "ipv4",
    "filter",
    {
      createChains: ["LOCKCHECK"],
      upsertRules: [
        {
          marker,
          chain: "LOCKCHECK",
          line: `-A LOCKCHECK -m comment --comment "${formatMarker(marker)}" -j RETURN`,
        },
      ],
    },
    { rollback: "never" },
  );
  expect(Date.now() - started).toBeLessThan(5000);
}

/** Files a rollback leaves under /run/pulumi-iptables, besides the kept copy of each table. */
async function rollbackStateFiles(host: LabHost): Promise<string[]> {
  const listing = await lab.exec(host, ["ls", "-A", "/run/pulumi-iptables"]);
  return listing.stdout.split("\n").filter((name) => name !== "" && !name.endsWith(".before"));
}
