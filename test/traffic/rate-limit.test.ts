/**
 * The rate-limit recipe under real TCP traffic between lab hosts. A noisy client opens
 * connections as fast as it can, a quiet one opens a few per second, an established connection
 * must keep working, and IPv6 sources are grouped by /64.
 *
 * Every count is checked against the kernel's own token bucket replayed by simulateRateLimit on
 * the measured arrival times, and against the rule counters.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { hashlimitBucket, HASHLIMIT_SCALE } from "../../src/netfilter/rates";
import {
  simulateRateLimit,
  type Arrival,
  type SimulateOptions,
} from "../../src/netfilter/simulate";
import { Deployment, type Program } from "../harness";
import type { Attempt } from "./generator";
import {
  chainCounters,
  countOutcomes,
  execOrThrow,
  flood,
  hashlimitEntries,
  hold,
  pace,
  spanSeconds,
  startEchoServer,
  type EchoServer,
} from "./traffic";

const LAB_NAME = "traffic-rate-limit";
const PORT = 8080;
const CHAIN = "RATE-LIMIT";
const RATE_PER_SECOND = 50;
const BURST = 20;
const LOG_RATE_PER_SECOND = 1;
const LOG_BURST = 5;
/** The kernel tick rate of the machine the lab runs on (CONFIG_HZ in /boot/config-*). */
const HZ = 250;

type Family = "ipv4" | "ipv6";
type Package = typeof import("../../src/index");

interface RecipeOptions {
  readonly family: Family;
  /** The hashlimit table; each test uses its own, so no test starts with another's buckets. */
  readonly name: string;
  readonly reject: "REJECT" | "DROP";
}

/** The recipe on the legacy host, which stays the same in every `up`. */
const LEGACY_RECIPE: RecipeOptions = { family: "ipv4", name: "legacy-reject", reject: "REJECT" };

/**
 * Builds a program with the RateLimit recipe on the nft server (with `options`) and on the
 * legacy server: NEW connections to PORT go through CHAIN, which accepts up to the rate per
 * source, logs a sample of the rest and rejects or drops them. Established packets never enter
 * CHAIN. The resource names stay the same, so each `up` updates the previous test's resources.
 */
function recipe(server: LabHost, legacyServer: LabHost, options: RecipeOptions): Program {
  return (pkg: Package) => {
    const rateLimit = (name: string, host: LabHost, recipeOptions: RecipeOptions): void => {
      new pkg.RateLimit(name, {
        connection: { host: host.ipv4, privateKey: host.privateKey, hostKey: host.hostKey },
        family: recipeOptions.family,
        rate: `${RATE_PER_SECOND}/sec`,
        burst: BURST,
        hashlimitName: recipeOptions.name,
        hook: { protocol: "tcp", ports: [PORT] },
        log: { rate: `${LOG_RATE_PER_SECOND}/sec`, burst: LOG_BURST },
        reject: recipeOptions.reject,
        // Lab hosts have no init system to restore rules at boot.
        persist: false,
      });
    };
    rateLimit("traffic", server, options);
    rateLimit("traffic-legacy", legacyServer, LEGACY_RECIPE);
  };
}

/**
 * Returns the range of accepted counts the kernel's hashlimit can produce for these arrivals. The
 * replay is run for jiffy boundaries every quarter of a jiffy, because where the server's ticks
 * fall against the client's clock is unknown.
 */
function simulatedRange(
  arrivals: readonly Arrival[],
  options: SimulateOptions = {},
): [number, number] {
  const counts: number[] = [];
  const jiffyMs = 1000 / HZ;
  for (let offset = 0; offset < jiffyMs; offset += jiffyMs / 4) {
    const result = simulateRateLimit({ rate: `${RATE_PER_SECOND}/sec`, burst: BURST }, arrivals, {
      hz: HZ,
      jiffyOffsetMs: offset,
      ...options,
    });
    counts.push(result.passedCount);
  }
  return [Math.min(...counts), Math.max(...counts)];
}

/**
 * Timing slack for kernel-versus-replay comparisons, in packets. The client stamps each attempt
 * at its connect system call. When the scheduler delays the SYN across a jiffy boundary on a
 * busy machine, the kernel can count one more or one fewer refill than the replay.
 */
const TIMING_SLACK = 1;

/**
 * Computes the token-bucket expectation for a flood lasting `seconds`: the burst plus the refill.
 * Jiffy quantisation at each end can add or remove one token, and the period rounding (a packet
 * costs a hair under 5 jiffies) adds none within seconds.
 */
function bucketExpectation(seconds: number): number {
  return BURST + RATE_PER_SECOND * seconds;
}
const BUCKET_TOLERANCE = 2 + TIMING_SLACK;

/**
 * Asserts `accepted` against the bucket expectation for `attempts`. Refill is lost only while
 * the bucket is full, which in a flood can happen only before the first rejection, so the lower
 * bound gives up the refill of that start-up time.
 */
function expectBucketBounds(accepted: number, attempts: readonly Attempt[]): void {
  const seconds = spanSeconds(attempts);
  const firstLimited = attempts.find((attempt) => attempt.outcome !== "connected");
  const startupSeconds =
    firstLimited === undefined ? seconds : (firstLimited.atMs - attempts[0].atMs) / 1000;
  expect(accepted).toBeLessThanOrEqual(bucketExpectation(seconds) + BUCKET_TOLERANCE);
  expect(accepted).toBeGreaterThanOrEqual(
    bucketExpectation(seconds) - RATE_PER_SECOND * startupSeconds - BUCKET_TOLERANCE,
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function outcomesOf(attempts: readonly Attempt[], outcome: Attempt["outcome"]): Attempt[] {
  return attempts.filter((attempt) => attempt.outcome === outcome);
}

/** Expands an IPv6 address to the form the kernel prints: eight groups of four hex digits. */
function expandIpv6(address: string): string {
  const [head, tail = ""] = address.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.map((group) => group.padStart(4, "0")).join(":");
}

describe("rate limit under real traffic", () => {
  let lab: Lab;
  let server: LabHost;
  let noisy: LabHost;
  let quiet: LabHost;
  let legacyServer: LabHost;
  let deployment: Deployment;
  const echoServers: EchoServer[] = [];

  beforeAll(async () => {
    lab = await createLab({
      name: LAB_NAME,
      hosts: [{ backend: "nft" }, { backend: "nft" }, { backend: "nft" }, { backend: "legacy" }],
    });
    [server, noisy, quiet, legacyServer] = lab.hosts;
    for (const host of [server, legacyServer]) {
      echoServers.push(await startEchoServer(host, PORT));
    }
    deployment = await Deployment.start({ project: "traffic", stack: "test" });
  });

  afterAll(async () => {
    await deployment?.close();
    for (const echo of echoServers) await echo.stop();
    await lab?.destroy();
  });

  it("rejects noisy client, spares quiet one", async () => {
    const name = "noisy-reject";
    await deployment.up(recipe(server, legacyServer, { family: "ipv4", name, reject: "REJECT" }));

    const floodDelayMs = 600;
    const floodMs = 3000;
    // The entries are read halfway through the flood, while both clients are active: an idle
    // entry expires after 1 s.
    const [held, quietReport, noisyReport, entries] = await Promise.all([
      hold(lab, noisy, {
        target: server.ipv4,
        port: PORT,
        durationMs: floodDelayMs + floodMs + 800,
        intervalMs: 50,
        timeoutMs: 500,
      }),
      pace(lab, quiet, {
        target: server.ipv4,
        port: PORT,
        ratePerSecond: 5,
        durationMs: floodDelayMs + floodMs,
        timeoutMs: 1000,
      }),
      // The delay lets the noisy client's bucket refill the token of the held connection's SYN.
      delay(floodDelayMs).then(() =>
        flood(lab, noisy, {
          target: server.ipv4,
          port: PORT,
          durationMs: floodMs,
          maxAttempts: 20_000,
          concurrency: 4,
          timeoutMs: 1000,
        }),
      ),
      delay(floodDelayMs + floodMs / 2).then(() => hashlimitEntries(lab, server, "ipv4", name)),
    ]);

    const attempts = noisyReport.attempts;
    const noisyCounts = countOutcomes(noisyReport);
    const seconds = spanSeconds(attempts);
    const [low, high] = simulatedRange(attempts.map((attempt) => attempt.atMs));
    console.log(
      `noisy: ${attempts.length} attempts in ${seconds.toFixed(3)} s, ${noisyCounts.connected} accepted, ` +
        `replay ${low}..${high}, bucket ${bucketExpectation(seconds).toFixed(1)}`,
    );

    // REJECT: every attempt beyond the bucket is refused at once.
    expect(noisyCounts.timeout).toBe(0);
    expect(noisyCounts.error).toBe(0);
    expect(noisyCounts.refused).toBeGreaterThan(20 * noisyCounts.connected);
    expect(noisyCounts.connected).toBeGreaterThanOrEqual(low - TIMING_SLACK);
    expect(noisyCounts.connected).toBeLessThanOrEqual(high + TIMING_SLACK);
    expectBucketBounds(noisyCounts.connected, attempts);

    const quietCounts = countOutcomes(quietReport);
    expect(quietCounts.connected).toBe(quietReport.attempts.length);
    expect(quietReport.attempts.length).toBeGreaterThanOrEqual(15);

    expect(held.error).toBe("");
    expect(held.failures).toBe(0);
    expect(held.roundTrips).toBeGreaterThanOrEqual(60);

    const [accepted, logged, rejected] = await chainCounters(lab, server, "ipv4", CHAIN);
    // The held connection's SYN went through the chain once; its later packets never did.
    expect(accepted.packets).toBe(noisyCounts.connected + quietCounts.connected + 1);
    expect(rejected.packets).toBe(noisyCounts.refused);

    // The LOG rule receives only what hashlimit let through to it, sampled by its own limit
    // (nf_tables' native limit on this nft host).
    const refusedTimes = outcomesOf(attempts, "refused").map((attempt) => attempt.atMs);
    const predictedLogs = simulateRateLimit(
      { rate: `${LOG_RATE_PER_SECOND}/sec`, burst: LOG_BURST },
      refusedTimes,
      { match: "limit", backend: "nft" },
    ).passedCount;
    console.log(
      `log: ${logged.packets} logged of ${rejected.packets} rejected, replay ${predictedLogs}`,
    );
    expect(Math.abs(logged.packets - predictedLogs)).toBeLessThanOrEqual(TIMING_SLACK);
    expect(logged.packets).toBeLessThanOrEqual(LOG_BURST + LOG_RATE_PER_SECOND * seconds + 1);

    // The kernel's bucket for each source has the cost and size the replay uses.
    const bucket = hashlimitBucket(HASHLIMIT_SCALE / RATE_PER_SECOND, BURST, HZ);
    expect(entries.map((entry) => entry.source).sort()).toEqual([noisy.ipv4, quiet.ipv4].sort());
    for (const entry of entries) {
      expect(entry.cost).toBe(bucket.cost);
      expect(entry.creditCap).toBe(bucket.capacity);
    }
  });

  it("times out noisy client with DROP", async () => {
    await deployment.up(
      recipe(server, legacyServer, { family: "ipv4", name: "noisy-drop", reject: "DROP" }),
    );

    // A dropped SYN is retransmitted after 1 s; a 250 ms timeout ends each attempt before that,
    // so every attempt is one SYN and the bucket counts each arrival once.
    const report = await flood(lab, noisy, {
      target: server.ipv4,
      port: PORT,
      durationMs: 2500,
      maxAttempts: 5000,
      concurrency: 48,
      timeoutMs: 250,
    });

    const counts = countOutcomes(report);
    const seconds = spanSeconds(report.attempts);
    const [low, high] = simulatedRange(report.attempts.map((attempt) => attempt.atMs));
    console.log(
      `drop: ${report.attempts.length} attempts in ${seconds.toFixed(3)} s, ${counts.connected} accepted, ` +
        `replay ${low}..${high}, bucket ${bucketExpectation(seconds).toFixed(1)}`,
    );

    expect(counts.refused).toBe(0);
    expect(counts.error).toBe(0);
    expect(counts.timeout).toBe(report.attempts.length - counts.connected);
    expect(counts.connected).toBeGreaterThanOrEqual(low - TIMING_SLACK);
    expect(counts.connected).toBeLessThanOrEqual(high + TIMING_SLACK);
    expectBucketBounds(counts.connected, report.attempts);

    const [accepted, , dropped] = await chainCounters(lab, server, "ipv4", CHAIN);
    expect(accepted.packets).toBe(counts.connected);
    expect(dropped.packets).toBe(counts.timeout);

    // A refresh reads the same counters into the rule resources' outputs.
    await deployment.refresh();
    expect(deployment.resource("traffic-ipv4-accept").outputs.packets).toBe(accepted.packets);
    expect(deployment.resource("traffic-ipv4-drop").outputs.packets).toBe(dropped.packets);
  });

  it("shares one budget per IPv6 /64", async () => {
    const name = "noisy-v6";
    // Two sources in the lab's /64 (the host's own address and one more), and one in a second
    // /64 inside the lab's ULA /48 that no lab assigns (labs use fd6c:6162:0:<slot>::/64). The
    // extra addresses and the route back to the second /64 live only inside the two lab hosts.
    const labPrefix = noisy.ipv6.slice(0, noisy.ipv6.indexOf("::"));
    const sameA = noisy.ipv6;
    const sameB = `${labPrefix}::1:b`;
    const otherPrefix = labPrefix.replace(/^fd6c:6162:0:/, "fd6c:6162:1:");
    const other = `${otherPrefix}::b`;
    await execOrThrow(lab, noisy, [
      "ip",
      "-6",
      "addr",
      "add",
      `${sameB}/128`,
      "dev",
      "eth0",
      "nodad",
    ]);
    await execOrThrow(lab, noisy, [
      "ip",
      "-6",
      "addr",
      "add",
      `${other}/128`,
      "dev",
      "eth0",
      "nodad",
    ]);
    await execOrThrow(lab, server, [
      "ip",
      "-6",
      "route",
      "add",
      `${otherPrefix}::/64`,
      "dev",
      "eth0",
    ]);
    try {
      // DROP, because a rejection would not reliably reach the client here: between lab hosts
      // the ICMPv6 error comes back while the client's connect() call still holds the socket,
      // and Linux then drops it (TcpExtLockDroppedIcmps) and the client times out anyway.
      await deployment.up(recipe(server, legacyServer, { family: "ipv6", name, reject: "DROP" }));

      // The entries are read halfway through the flood: an idle entry expires after 1 s.
      const [report, entries] = await Promise.all([
        flood(lab, noisy, {
          target: server.ipv6,
          port: PORT,
          sources: [sameA, sameB, other],
          durationMs: 2500,
          maxAttempts: 15_000,
          concurrency: 96,
          timeoutMs: 250,
        }),
        delay(1500).then(() => hashlimitEntries(lab, server, "ipv6", name)),
      ]);

      const seconds = spanSeconds(report.attempts);
      const sharedAttempts = report.attempts.filter((attempt) => attempt.source !== other);
      const otherAttempts = report.attempts.filter((attempt) => attempt.source === other);
      const acceptedA = countOutcomes(report, sameA).connected;
      const acceptedB = countOutcomes(report, sameB).connected;
      const acceptedOther = countOutcomes(report, other).connected;
      const shared = simulatedRange(sharedAttempts.map((attempt) => attempt.atMs));
      const own = simulatedRange(otherAttempts.map((attempt) => attempt.atMs));
      console.log(
        `ipv6: ${report.attempts.length} attempts in ${seconds.toFixed(3)} s; lab /64 ${acceptedA}+${acceptedB} ` +
          `(replay ${shared.join("..")}), other /64 ${acceptedOther} (replay ${own.join("..")}), ` +
          `bucket ${bucketExpectation(seconds).toFixed(1)}`,
      );

      expect(countOutcomes(report).error).toBe(0);
      expect(countOutcomes(report).refused).toBe(0);
      // Both addresses of the lab /64 got through, but together only one bucket's worth.
      expect(acceptedA).toBeGreaterThan(0);
      expect(acceptedB).toBeGreaterThan(0);
      expect(acceptedA + acceptedB).toBeGreaterThanOrEqual(shared[0] - TIMING_SLACK);
      expect(acceptedA + acceptedB).toBeLessThanOrEqual(shared[1] + TIMING_SLACK);
      expectBucketBounds(acceptedA + acceptedB, sharedAttempts);
      // The other /64 had a bucket of its own.
      expect(acceptedOther).toBeGreaterThanOrEqual(own[0] - TIMING_SLACK);
      expect(acceptedOther).toBeLessThanOrEqual(own[1] + TIMING_SLACK);
      expectBucketBounds(acceptedOther, otherAttempts);

      // The kernel keeps one entry per /64, printed as the masked source.
      expect(entries.map((entry) => entry.source).sort()).toEqual(
        [expandIpv6(`${labPrefix}::`), expandIpv6(`${otherPrefix}::`)].sort(),
      );
    } finally {
      await execOrThrow(lab, server, [
        "ip",
        "-6",
        "route",
        "del",
        `${otherPrefix}::/64`,
        "dev",
        "eth0",
      ]);
      await execOrThrow(lab, noisy, ["ip", "-6", "addr", "del", `${other}/128`, "dev", "eth0"]);
      await execOrThrow(lab, noisy, ["ip", "-6", "addr", "del", `${sameB}/128`, "dev", "eth0"]);
    }
  });

  it("agrees with replay on legacy backend", async () => {
    // The recipe has been on the legacy host since the first test's `up`, and its buckets were
    // never touched.

    const report = await flood(lab, noisy, {
      target: legacyServer.ipv4,
      port: PORT,
      durationMs: 2000,
      maxAttempts: 15_000,
      concurrency: 4,
      timeoutMs: 1000,
    });

    const counts = countOutcomes(report);
    const seconds = spanSeconds(report.attempts);
    const [low, high] = simulatedRange(report.attempts.map((attempt) => attempt.atMs));
    // On the legacy backend `-m limit` is xt_limit, which refills per jiffy.
    const refusedTimes = outcomesOf(report.attempts, "refused").map((attempt) => attempt.atMs);
    const logRange = new Set<number>();
    for (let offset = 0; offset < 1000 / HZ; offset += 1000 / HZ / 4) {
      logRange.add(
        simulateRateLimit({ rate: `${LOG_RATE_PER_SECOND}/sec`, burst: LOG_BURST }, refusedTimes, {
          match: "limit",
          backend: "legacy",
          hz: HZ,
          jiffyOffsetMs: offset,
        }).passedCount,
      );
    }
    const [accepted, logged, rejected] = await chainCounters(lab, legacyServer, "ipv4", CHAIN);
    console.log(
      `legacy: ${report.attempts.length} attempts in ${seconds.toFixed(3)} s, ${counts.connected} accepted ` +
        `(replay ${low}..${high}, bucket ${bucketExpectation(seconds).toFixed(1)}), ` +
        `${logged.packets} logged (replay ${[...logRange].join(",")})`,
    );

    expect(counts.timeout).toBe(0);
    expect(counts.connected).toBeGreaterThanOrEqual(low - TIMING_SLACK);
    expect(counts.connected).toBeLessThanOrEqual(high + TIMING_SLACK);
    expectBucketBounds(counts.connected, report.attempts);
    expect(accepted.packets).toBe(counts.connected);
    expect(rejected.packets).toBe(counts.refused);
    expect(logged.packets).toBeGreaterThanOrEqual(Math.min(...logRange) - TIMING_SLACK);
    expect(logged.packets).toBeLessThanOrEqual(Math.max(...logRange) + TIMING_SLACK);
  });
});
