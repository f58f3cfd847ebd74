import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeAllHosts, getHost, type HostEvent } from "../../src/host";
import { createLab, type Lab } from "../../src/lab";
import { formatMarker } from "../../src/netfilter/marker";
import type { DesiredRule } from "../../src/netfilter/plan";
import { startClient } from "./spawn-client";

const LAB_NAME = "host-concurrency";
const CHAIN = "CONCURRENT";

let lab: Lab;
let dir: string;

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
  dir = mkdtempSync(join(tmpdir(), "host-concurrency-"));
});

afterAll(async () => {
  closeAllHosts();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  await lab?.destroy();
});

function writerRule(id: string, order: number, octet: number): DesiredRule {
  const marker = { id, order };
  return {
    marker,
    chain: CHAIN,
    line: `-A ${CHAIN} -s 198.18.201.${octet}/32 -m comment --comment "${formatMarker(marker)}" -j ACCEPT`,
  };
}

describe.each(["nft", "legacy"] as const)("concurrent writers on %s", (backend) => {
  it("keep every rule of 20 in-process and 2 separate writers", async () => {
    const labHost = lab.hosts.find((candidate) => candidate.backend === backend)!;
    const connection = {
      host: labHost.ipv4,
      privateKey: labHost.privateKey,
      hostKey: labHost.hostKey,
    };
    const startFile = join(dir, `start-${backend}`);

    const children = [1, 2].map((n) =>
      startClient({
        connection: {
          host: labHost.ipv4,
          hostKey: labHost.hostKey,
          privateKeyPath: labHost.privateKeyPath,
        },
        operation: "apply",
        chain: CHAIN,
        rules: [writerRule(`process/${n}`, 100 + n, 100 + n)],
        startFile,
      }),
    );
    await Promise.all(children.map((child) => child.waitForLine((line) => line.ready === true)));

    const events: HostEvent[] = [];
    const host = await getHost(connection, { onEvent: (event) => events.push(event) });
    await host.readTable("ipv4", "filter");
    writeFileSync(startFile, "");
    const writers = Array.from({ length: 20 }, (_, i) =>
      host.applyTableChange("ipv4", "filter", {
        createChains: [CHAIN],
        upsertRules: [writerRule(`writer/${i}`, i, i + 1)],
      }),
    );
    const results = await Promise.all(writers);
    const outcomes = await Promise.all(children.map((child) => child.done));

    expect(results.every((result) => result.changed)).toBe(true);
    for (const outcome of outcomes) {
      expect(
        outcome.code,
        JSON.stringify(outcome.lines.filter((line) => (line as { error?: unknown }).error)) +
          outcome.stderr,
      ).toBe(0);
      expect(
        outcome.lines.some((line) => (line as { result?: unknown }).result !== undefined),
      ).toBe(true);
    }
    const saved = await lab.exec(labHost, ["iptables-save", "-t", "filter"]);
    const rules = saved.stdout.split("\n").filter((line) => line.startsWith(`-A ${CHAIN} `));
    expect(rules).toHaveLength(22);
    const ids = [...Array.from({ length: 20 }, (_, i) => `writer/${i}`), "process/1", "process/2"];
    for (const id of ids) {
      expect(
        rules.filter((line) => line.includes(`"pulumi-iptables:${id}:`)),
        id,
      ).toHaveLength(1);
    }
    // Managed rules stay sorted by order whatever the order of arrival.
    const orders = rules.map((line) => Number(/pulumi-iptables:[^:]+:(\d+)"/.exec(line)?.[1]));
    expect(orders).toEqual([...orders].sort((a, b) => a - b));
  });
});
