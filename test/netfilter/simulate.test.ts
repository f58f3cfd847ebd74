import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { simulateRateLimit, type Arrival } from "../../src/netfilter/simulate";

/** Arrival times 0, 1, 2, ... ms: one packet per millisecond. */
function everyMillisecond(count: number): number[] {
  return Array.from({ length: count }, (_, index) => index);
}

function passedTimes(arrivals: readonly number[], passed: readonly boolean[]): number[] {
  return arrivals.filter((_, index) => passed[index]);
}

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error("expected an error");
}

describe("simulateRateLimit with hashlimit", () => {
  it("passes the burst then one packet per period", () => {
    // 50/sec costs 5 jiffies at HZ=250 (a hair less, as the credits round down), so after the
    // burst of 20 at 0..19 ms a token is back every 20 ms: 20, 40, ..., 980.
    const arrivals = everyMillisecond(1000);
    const result = simulateRateLimit({ rate: "50/sec", burst: 20 }, arrivals);

    const expected = [
      ...everyMillisecond(20),
      ...Array.from({ length: 49 }, (_, index) => 20 * (index + 1)),
    ];
    expect(passedTimes(arrivals, result.passed)).toEqual(expected);
    expect(result.passedCount).toBe(69);
    expect(result.limitedCount).toBe(931);
  });

  it("passes 69 or 70 at any jiffy phase", () => {
    const arrivals = everyMillisecond(1000);
    const counts = new Set<number>();
    for (let offset = 0; offset < 4; offset += 0.25) {
      counts.add(
        simulateRateLimit({ rate: "50/sec", burst: 20 }, arrivals, { jiffyOffsetMs: offset })
          .passedCount,
      );
    }
    expect([...counts].sort()).toEqual([69, 70]);
  });

  it("agrees across HZ 100, 250 and 1000", () => {
    const arrivals = everyMillisecond(1000);
    for (const hz of [100, 250, 1000]) {
      expect(simulateRateLimit({ rate: "50/sec", burst: 20 }, arrivals, { hz }).passedCount).toBe(
        69,
      );
    }
  });

  it("treats equal spellings of a rate alike", () => {
    const arrivals = everyMillisecond(3000);
    const perSecond = simulateRateLimit({ rate: "50/sec", burst: 20 }, arrivals, {
      htableExpireMs: 60_000,
    });
    const perMinute = simulateRateLimit({ rate: "3000/minute", burst: 20 }, arrivals);
    expect(perMinute.passed).toEqual(perSecond.passed);
  });

  it("keeps one bucket per key", () => {
    const arrivals: Arrival[] = everyMillisecond(1000).flatMap((atMs) => [
      { atMs, key: "198.51.100.1" },
      { atMs, key: "198.51.100.2" },
    ]);
    const result = simulateRateLimit({ rate: "50/sec", burst: 20 }, arrivals);

    const first = result.passed.filter((_, index) => index % 2 === 0).filter(Boolean).length;
    const second = result.passed.filter((_, index) => index % 2 === 1).filter(Boolean).length;
    expect(first).toBe(69);
    expect(second).toBe(69);
  });

  it("refills an expired entry to full", () => {
    // 1/sec burst 5: the burst is spent at 0..4 ms. 1.5 s later one token has come back, but
    // the entry expired after 1 s (the default for a /sec rate), so the kernel starts it full.
    const arrivals = [0, 1, 2, 3, 4, 5, 1500, 1501, 1502, 1503, 1504];
    const expired = simulateRateLimit({ rate: "1/sec", burst: 5 }, arrivals);
    expect(passedTimes(arrivals, expired.passed)).toEqual([
      0, 1, 2, 3, 4, 1500, 1501, 1502, 1503, 1504,
    ]);

    const kept = simulateRateLimit({ rate: "1/sec", burst: 5 }, arrivals, {
      htableExpireMs: 10_000,
    });
    expect(passedTimes(arrivals, kept.passed)).toEqual([0, 1, 2, 3, 4, 1500]);
  });

  it("wraps refill after 2^25 idle jiffies", () => {
    // At HZ=250 a jiffy adds 2^39 credits; 2^25 jiffies add 2^64, which wraps to 0 in the
    // kernel's unsigned 64-bit arithmetic, so the entry gains nothing after 37 hours idle.
    const options = { htableExpireMs: 4_000_000_000 };
    const wrapped = 2 ** 25 * 4;
    expect(
      simulateRateLimit({ rate: "1/hour", burst: 1 }, [0, wrapped - 4], options).passed,
    ).toEqual([true, true]);
    expect(simulateRateLimit({ rate: "1/hour", burst: 1 }, [0, wrapped], options).passed).toEqual([
      true,
      false,
    ]);
  });

  it("slows burst 1 to whole ticks per packet", () => {
    // 108/sec costs 2.31 ticks at HZ=250. A bucket of one packet cannot keep the 0.69 tick left
    // over, so under a flood a packet passes every 3 ticks (12 ms): 83 per second, not 108.
    const arrivals = Array.from({ length: 20_000 }, (_, index) => index / 10);
    const result = simulateRateLimit({ rate: "108/sec", burst: 1 }, arrivals);
    const times = passedTimes(arrivals, result.passed);
    expect(times.slice(0, 5)).toEqual([0, 12, 24, 36, 48]);
    expect(result.passedCount).toBe(167);
  });

  it("returns results in input order", () => {
    const arrivals = [30, 0, 10, 20];
    const result = simulateRateLimit({ rate: "1/sec", burst: 2 }, arrivals);
    // Replayed in time order, 0 and 10 take the burst.
    expect(result.passed).toEqual([false, true, true, false]);
  });

  it("limits byte rates to one second plus burst", () => {
    // 512kb/s with no burst: the bucket's capacity is one second of bytes, and a packet of 1500 bytes
    // costs 94 chunks of 16 bytes.
    const packets = Array.from({ length: 2000 }, (_, index) => ({
      atMs: index / 1000,
      bytes: 1500,
    }));
    const chunkBytes = 94 * 16;
    const bytesPerSecond = 512 * 1024;

    const plain = simulateRateLimit({ rate: "512kb/s" }, packets);
    expect(plain.passedCount * chunkBytes).toBeLessThanOrEqual(bytesPerSecond);
    expect(plain.passedCount * chunkBytes).toBeGreaterThan(bytesPerSecond - 2 * chunkBytes);

    // A 1mb burst is two more seconds' worth, granted as two refills to full.
    const burst = simulateRateLimit({ rate: "512kb/s", burst: "1mb" }, packets);
    expect(burst.passedCount).toBe(3 * plain.passedCount);
  });
});

describe("simulateRateLimit with limit", () => {
  for (const backend of ["nft", "legacy"] as const) {
    it(`passes the burst then one per period on ${backend}`, () => {
      const arrivals = everyMillisecond(10_000);
      const result = simulateRateLimit({ rate: "1/sec", burst: 5 }, arrivals, {
        match: "limit",
        backend,
      });
      expect(passedTimes(arrivals, result.passed)).toEqual([
        0, 1, 2, 3, 4, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000,
      ]);
    });
  }

  it("shares one bucket across keys", () => {
    const arrivals: Arrival[] = [
      { atMs: 0, key: "a" },
      { atMs: 0, key: "b" },
      { atMs: 1, key: "c" },
    ];
    const result = simulateRateLimit({ rate: "1/sec", burst: 2 }, arrivals, { match: "limit" });
    expect(result.passed).toEqual([true, true, false]);
  });

  it("turns burst 0 into 5 on nft", () => {
    const arrivals = everyMillisecond(10);
    const result = simulateRateLimit({ rate: "1/sec", burst: 0 }, arrivals, { match: "limit" });
    expect(result.passedCount).toBe(5);
  });

  it("rejects burst 0 on legacy", () => {
    const error = thrown(() =>
      simulateRateLimit({ rate: "1/sec", burst: 0 }, [0], { match: "limit", backend: "legacy" }),
    );
    expect(hasErrorCode(error, "RULE_OUT_OF_RANGE")).toBe(true);
  });
});

describe("simulateRateLimit bounds", () => {
  const specs = fc.record({
    ratePerSecond: fc.integer({ min: 1, max: 500 }),
    burst: fc.integer({ min: 1, max: 100 }),
  });

  it("never passes more than burst plus refill", () => {
    fc.assert(
      fc.property(
        specs,
        fc.array(fc.double({ min: 0, max: 5000, noNaN: true }), { minLength: 1, maxLength: 300 }),
        ({ ratePerSecond, burst }, arrivals) => {
          // A long expiry keeps entries alive, so only refills add tokens.
          const result = simulateRateLimit({ rate: `${ratePerSecond}/sec`, burst }, arrivals, {
            htableExpireMs: 1_000_000,
          });
          const jiffies = arrivals.map((atMs) => Math.floor((atMs * 250) / 1000));
          const span = Math.max(...jiffies) - Math.min(...jiffies);
          return result.passedCount <= burst + Math.floor((span * ratePerSecond) / 250) + 1;
        },
      ),
    );
  });

  it("passes burst plus refill under a flood", () => {
    // From burst 3 up the cap never cuts the credit left over after a tick (at up to 500/sec a
    // packet costs at least half a tick), so a flood that arrives every tick gets the full rate.
    const roomySpecs = fc.record({
      ratePerSecond: fc.integer({ min: 1, max: 500 }),
      burst: fc.integer({ min: 3, max: 100 }),
    });
    fc.assert(
      fc.property(
        roomySpecs,
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 500, maxLength: 3000 }),
        ({ ratePerSecond, burst }, gaps) => {
          let atMs = 0;
          const arrivals = gaps.map((gap) => (atMs += gap));
          const result = simulateRateLimit({ rate: `${ratePerSecond}/sec`, burst }, arrivals);
          const span = Math.floor((atMs * 250) / 1000);
          const expected = Math.min(
            arrivals.length,
            burst + Math.floor((span * ratePerSecond) / 250),
          );
          return result.passedCount >= expected - 1;
        },
      ),
    );
  });
});

describe("simulateRateLimit input checks", () => {
  it("rejects an invalid rate", () => {
    const error = thrown(() => simulateRateLimit({ rate: "fast" }, [0]));
    expect(hasErrorCode(error, "RULE_INVALID_VALUE")).toBe(true);
  });

  it("rejects a rate faster than the scale", () => {
    const error = thrown(() => simulateRateLimit({ rate: "2000000/sec" }, [0]));
    expect(hasErrorCode(error, "RULE_OUT_OF_RANGE")).toBe(true);
  });

  it("rejects a burst that overflows the credits", () => {
    // The kernel refuses this rule too ("Numerical result out of range").
    const error = thrown(() => simulateRateLimit({ rate: "1/day", burst: 2 }, [0]));
    expect(hasErrorCode(error, "RULE_OUT_OF_RANGE")).toBe(true);
  });

  it("rejects a byte burst below one second of rate", () => {
    const error = thrown(() =>
      simulateRateLimit({ rate: "512kb/s", burst: "1kb" }, [{ atMs: 0, bytes: 60 }]),
    );
    expect(hasErrorCode(error, "RULE_OUT_OF_RANGE")).toBe(true);
  });

  it("rejects a byte rate without packet lengths", () => {
    const error = thrown(() => simulateRateLimit({ rate: "512kb/s" }, [0]));
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as { details: Record<string, unknown> }).details.field).toBe("arrivals[0].bytes");
  });

  it("rejects a time that is not finite", () => {
    const error = thrown(() => simulateRateLimit({ rate: "50/sec" }, [0, Number.NaN]));
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as { details: Record<string, unknown> }).details.field).toBe("arrivals[1].atMs");
  });

  it("rejects an unknown match", () => {
    const error = thrown(() =>
      simulateRateLimit({ rate: "50/sec" }, [0], { match: "meter" as unknown as "limit" }),
    );
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });

  it("rejects an invalid HZ", () => {
    const error = thrown(() => simulateRateLimit({ rate: "50/sec" }, [0], { hz: 0 }));
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });
});
