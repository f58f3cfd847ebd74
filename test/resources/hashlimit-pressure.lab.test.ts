/**
 * A RateLimit whose hashlimit table is deliberately tiny (16 entries), filled source by source
 * from a lab client. Refresh reports the live entries and warns above 75% of the maximum. A full
 * table drops new sources, which is what the warning is for.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { Deployment, type OperationResult, type Program } from "../harness";
import {
  countOutcomes,
  execOrThrow,
  flood,
  startEchoServer,
  type EchoServer,
} from "../traffic/traffic";

type Package = typeof import("../../src/index");

const PORT = 8080;
const TABLE_SIZE = 16;
const HASHLIMIT_NAME = "pressure";

let lab: Lab;
let server: LabHost;
let client: LabHost;
let echo: EchoServer;
let deployment: Deployment;
/** Extra client addresses in the lab's /24, one hashlimit entry each. */
let sources: string[];

beforeAll(async () => {
  lab = await createLab({ name: "res-pressure", hosts: 2 });
  [server, client] = lab.hosts;
  const prefix = client.ipv4.slice(0, client.ipv4.lastIndexOf("."));
  sources = Array.from({ length: TABLE_SIZE + 1 }, (_, index) => `${prefix}.${200 + index}`);
  for (const source of sources) {
    await execOrThrow(lab, client, ["ip", "addr", "add", `${source}/32`, "dev", "eth0"]);
  }
  echo = await startEchoServer(server, PORT);
  deployment = await Deployment.start({ project: "pressure", stack: "test" });
  await deployment.up(program());
});

afterAll(async () => {
  await deployment?.close();
  await echo?.stop();
  await lab?.destroy();
});

function program(): Program {
  return (pkg: Package) => {
    new pkg.RateLimit("pressure", {
      connection: { host: server.ipv4, privateKey: server.privateKey, hostKey: server.hostKey },
      hashlimitName: HASHLIMIT_NAME,
      htableSize: TABLE_SIZE,
      htableMax: TABLE_SIZE,
      // Entries outlive the test's steps instead of expiring after the default 1 s.
      htableExpireMs: 60_000,
      hook: { protocol: "tcp", ports: [PORT] },
      persist: false,
    });
  };
}

/** Opens one connection from each of `from`, in turn, and returns how each ended. */
function connectFrom(from: readonly string[]) {
  return flood(lab, client, {
    target: server.ipv4,
    port: PORT,
    sources: from,
    durationMs: 10_000,
    maxAttempts: from.length,
    concurrency: 1,
    timeoutMs: 500,
  });
}

function warnings(result: OperationResult): string[] {
  return result.logs.map((log) => log.text).filter((text) => text.includes("hashlimit table"));
}

describe("hashlimit table pressure", () => {
  it("reports entries without a warning up to 75%", async () => {
    const report = await connectFrom(sources.slice(0, 12));
    const refresh = await deployment.refresh();

    expect(countOutcomes(report).connected).toBe(12);
    expect(deployment.resource("pressure-ipv4-accept").outputs.entries).toBe(12);
    expect(warnings(refresh)).toEqual([]);
  });

  it("warns above 75% naming host and table", async () => {
    await connectFrom(sources.slice(12, 13));
    const refresh = await deployment.refresh();

    expect(deployment.resource("pressure-ipv4-accept").outputs.entries).toBe(13);
    const [warning, ...others] = warnings(refresh);
    expect(others).toEqual([]);
    expect(warning).toContain(server.ipv4);
    expect(warning).toContain(
      `hashlimit table ${HASHLIMIT_NAME} (ipv4) has 13 entries, 81% of its maximum 16`,
    );
  });

  it("drops a new source once the table is full", async () => {
    const fill = await connectFrom(sources.slice(13, TABLE_SIZE));
    const late = await connectFrom(sources.slice(TABLE_SIZE));

    expect(countOutcomes(fill).connected).toBe(TABLE_SIZE - 13);
    // The 17th source has a full bucket of its own, but the kernel has no entry to give it.
    expect(countOutcomes(late).connected).toBe(0);
    expect(countOutcomes(late).timeout).toBe(1);
  });
});
