import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import {
  HASHLIMIT_SCALE,
  LIMIT_SCALE,
  bytesToCost,
  costToBytes,
  hashlimitBucket,
  hashlimitCreditsPerJiffy,
  hashlimitKernelAccepts,
  hashlimitUserToCredits,
  limitBucket,
  limitCreditsPerJiffy,
  limitKernelAccepts,
  limitUserToCredits,
  parseByteRate,
  parseHashlimitBurst,
  parsePacketRate,
  printByteBurst,
  printByteRate,
  printRate,
  ratePeriod,
} from "../../src/netfilter/rates";

function period(text: string, scale: number): number {
  return ratePeriod("--limit", text, parsePacketRate("--limit", text), scale);
}

describe("parsePacketRate", () => {
  const cases: Array<[string, number, number]> = [
    ["50", 50, 1],
    ["50/s", 50, 1],
    ["50/sec", 50, 1],
    ["50/second", 50, 1],
    ["50/Sec", 50, 1],
    ["3000/minute", 3000, 60],
    ["2/m", 2, 60],
    ["7/h", 7, 3600],
    ["1/d", 1, 86_400],
  ];
  for (const [text, count, unitSeconds] of cases) {
    it(`reads ${text}`, () => {
      expect(parsePacketRate("--limit", text)).toEqual({ count, unitSeconds });
    });
  }

  for (const text of [
    "",
    "0/sec",
    "5/x",
    "5/seconds",
    "50x/sec",
    "/sec",
    "5/",
    "-5/sec",
    "1.5/sec",
  ]) {
    it(`rejects ${JSON.stringify(text)}`, () => {
      expect(() => parsePacketRate("--limit", text)).toThrow(
        expect.objectContaining({ code: "RULE_INVALID_VALUE" }),
      );
    });
  }
});

describe("printRate", () => {
  // Expected texts were read back from iptables-save 1.8.9 (see test/fixtures/rules.txt).
  const cases: Array<[string, number, string]> = [
    ["3000/minute", LIMIT_SCALE, "50/sec"],
    ["333/min", LIMIT_SCALE, "333/min"],
    ["7/h", LIMIT_SCALE, "7/hour"],
    ["3/hour", LIMIT_SCALE, "3/hour"],
    ["1/d", LIMIT_SCALE, "1/day"],
    ["10000/s", LIMIT_SCALE, "10000/sec"],
    ["60/min", HASHLIMIT_SCALE, "1/sec"],
    ["1000000/s", HASHLIMIT_SCALE, "1000000/sec"],
    ["333/min", HASHLIMIT_SCALE, "333/min"],
  ];
  for (const [written, scale, printed] of cases) {
    it(`prints ${written} as ${printed} at scale ${scale}`, () => {
      expect(printRate(period(written, scale), scale).text).toBe(printed);
    });
  }

  it("truncates the period with integer division", () => {
    expect(period("3", LIMIT_SCALE)).toBe(3333);
    expect(period("7/hour", LIMIT_SCALE)).toBe(5_142_857);
  });

  it("rejects a rate faster than the scale", () => {
    expect(() => period("10001/s", LIMIT_SCALE)).toThrow(
      expect.objectContaining({ code: "RULE_OUT_OF_RANGE" }),
    );
  });
});

describe("byte rates", () => {
  const cases: Array<[string, string]> = [
    ["512kb/s", "512kb/s"],
    ["1mb/s", "1mb/s"],
    ["1000b/s", "992b/s"],
    ["100b/s", "96b/s"],
    ["17b/s", "16b/s"],
    ["4000mb/s", "4095mb/s"],
  ];
  for (const [written, printed] of cases) {
    it(`prints ${written} as ${printed}`, () => {
      expect(printByteRate(parseByteRate("--hashlimit-upto", written)!)).toBe(printed);
    });
  }

  it("returns undefined for a packet rate", () => {
    expect(parseByteRate("--hashlimit-upto", "50/sec")).toBeUndefined();
  });

  it("rejects rates below one chunk per second", () => {
    expect(() => parseByteRate("--hashlimit-upto", "9b/s")).toThrow(
      expect.objectContaining({ code: "RULE_OUT_OF_RANGE" }),
    );
  });

  it("converts between cost and bytes as libxt_hashlimit does", () => {
    const cost = bytesToCost(512 * 1024);
    expect(cost).toBe(Math.floor(0xffff_ffff / (512 * 64 + 1)));
    expect(costToBytes(cost)).toBe(524_288);
  });

  it("prints a burst in the largest unit it reaches", () => {
    const cost = parseByteRate("--hashlimit-upto", "512kb/s")!;
    expect(printByteBurst(cost, 2)).toBe("1mb");
    expect(printByteBurst(parseByteRate("--hashlimit-upto", "3kb/s")!, 2)).toBe("6kb");
  });
});

describe("parseHashlimitBurst", () => {
  const cases: Array<[string, number]> = [
    ["5", 5],
    ["010", 8],
    ["0x10", 16],
    ["5k", 5120],
    ["600kb", 614_400],
    ["1mb", 1_048_576],
    ["5000b", 5000],
  ];
  for (const [text, value] of cases) {
    it(`reads ${text}`, () => {
      expect(parseHashlimitBurst("--hashlimit-burst", text)).toBe(value);
    });
  }

  it("rejects 0 and values above 1000000 without a suffix", () => {
    for (const text of ["0", "1000001"]) {
      let thrown: unknown;
      try {
        parseHashlimitBurst("--hashlimit-burst", text);
      } catch (error) {
        thrown = error;
      }
      expect(hasErrorCode(thrown, "RULE_OUT_OF_RANGE")).toBe(true);
    }
  });

  it("rejects garbage after the number", () => {
    expect(() => parseHashlimitBurst("--hashlimit-burst", "5x")).toThrow(
      expect.objectContaining({ code: "RULE_INVALID_VALUE" }),
    );
  });
});

describe("kernel checks", () => {
  it("uses the HZ=250 constants of Debian kernels", () => {
    expect(limitCreditsPerJiffy()).toBe(128);
    expect(hashlimitCreditsPerJiffy()).toBe(2n ** 39n);
  });

  it("scales xt_limit credits by HZ", () => {
    expect(limitCreditsPerJiffy(1000)).toBe(32);
    expect(limitUserToCredits(10_000, 250)).toBe(32_000);
  });

  // The expected results were observed with iptables-legacy on a Debian 12 kernel (HZ=250).
  // The 32-bit wrap-around makes 1/d with burst 3 pass while burst 2 fails.
  it("rejects what xt_limit rejects with ERANGE", () => {
    const oneADay = period("1/d", LIMIT_SCALE);
    expect(limitKernelAccepts(period("7/h", LIMIT_SCALE), 0)).toBe(false);
    expect([1, 2, 3, 4, 5].map((burst) => limitKernelAccepts(oneADay, burst))).toEqual([
      true,
      false,
      true,
      false,
      false,
    ]);
    expect(limitKernelAccepts(period("3/hour", LIMIT_SCALE), 5)).toBe(true);
  });

  it("rejects what xt_hashlimit rejects as overflow", () => {
    const oneADay = period("1/day", HASHLIMIT_SCALE);
    expect([1, 2, 5, 100].map((burst) => hashlimitKernelAccepts(oneADay, burst))).toEqual([
      true,
      false,
      false,
      false,
    ]);
    expect(hashlimitKernelAccepts(period("50/sec", HASHLIMIT_SCALE), 1_000_000)).toBe(true);
  });

  it("agrees with plain 64-bit arithmetic for any period and burst", () => {
    // The checks skip BigInt when no value can wrap; compare with the arithmetic they skip.
    const periods = fc.oneof(
      fc.integer({ min: 1, max: 1000 }),
      fc.integer({ min: 1, max: 86_400 * HASHLIMIT_SCALE }),
    );
    const bursts = fc.oneof(
      fc.integer({ min: 1, max: 10 }),
      fc.integer({ min: 1, max: 1_000_000 }),
    );
    fc.assert(
      fc.property(periods, bursts, (periodValue, burst) => {
        const product = (BigInt(periodValue) * BigInt(burst)) & ((1n << 64n) - 1n);
        const wide = hashlimitUserToCredits(product) >= hashlimitUserToCredits(BigInt(periodValue));
        expect(hashlimitKernelAccepts(periodValue, burst)).toBe(wide);
        const narrow = Number((BigInt(periodValue) * BigInt(burst)) & 0xffff_ffffn);
        const limitWide = limitUserToCredits(narrow) >= limitUserToCredits(periodValue);
        expect(limitKernelAccepts(periodValue, burst)).toBe(limitWide);
      }),
      { numRuns: 2000 },
    );
  });

  it("computes the hashlimit bucket the kernel shows in /proc", () => {
    // Read from /proc/net/ipt_hashlimit on a Debian 12 kernel (HZ=250) for 1/sec burst 3.
    const bucket = hashlimitBucket(period("1/sec", HASHLIMIT_SCALE), 3);
    expect(bucket.cost).toBe(137_438_953_000_000n);
    expect(bucket.capacity).toBe(412_316_859_000_000n);
  });

  it("computes the limit bucket from the same arithmetic", () => {
    const bucket = limitBucket(period("50/sec", LIMIT_SCALE), 5);
    expect(bucket.creditsPerJiffy).toBe(128n);
    expect(bucket.cost).toBe(BigInt(limitUserToCredits(200)));
    expect(bucket.capacity).toBe(BigInt(limitUserToCredits(1000)));
  });
});
