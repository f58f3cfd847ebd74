/**
 * The kernel's rate-limit token buckets replayed offline, so a user can see what a rate and a
 * burst do to a stream of packets before deploying them.
 *
 * Three kernel implementations are modelled, each with its own integer arithmetic:
 * - `hashlimit` (net/netfilter/xt_hashlimit.c, match revisions 2 and 3, which iptables 1.8 uses
 *   on both backends): one bucket per hash entry, in credits that refill once per jiffy.
 * - `limit` on the legacy backend (net/netfilter/xt_limit.c): one bucket per rule, 32-bit
 *   credits that refill once per jiffy.
 * - `limit` on the nft backend: iptables-nft 1.8.9 turns `-m limit` into nf_tables' native limit
 *   expression (net/netfilter/nft_limit.c), a bucket of nanoseconds read from a clock, not jiffies.
 *
 * Jiffy-based buckets depend on the kernel's tick rate (CONFIG_HZ). The default, 250, is the
 * value of Debian's kernels and of the lab machine; other builds use 100, 300 or 1000. Read
 * yours from /boot/config-$(uname -r) and pass it as `hz`.
 */
import { IptablesError } from "../errors";
import {
  DEFAULT_HZ,
  HASHLIMIT_BYTE_BURST_EXPIRE_MS,
  HASHLIMIT_BYTE_EXPIRE_MS,
  HASHLIMIT_BYTE_SHIFT,
  HASHLIMIT_DEFAULT_BURST,
  HASHLIMIT_SCALE,
  LIMIT_DEFAULT_BURST,
  LIMIT_MAX_BURST,
  LIMIT_SCALE,
  costToBytes,
  hashlimitBucket,
  hashlimitByteCreditsPerJiffy,
  hashlimitKernelAccepts,
  limitBucket,
  limitKernelAccepts,
  parseByteRate,
  parseHashlimitBurst,
  parsePacketRate,
  ratePeriod,
} from "./rates";
import type { Backend } from "./types";

/** A rate and burst as iptables takes them. */
export interface RateLimitSpec {
  /** A packet rate such as "50/sec" or "3000/minute", or (hashlimit only) a byte rate such as "512kb/s". */
  readonly rate: string;
  /**
   * The bucket size: packets for a packet rate, or a size such as "64kb" for a byte rate.
   * @default 5 for packet rates; no burst for byte rates
   */
  readonly burst?: number | string;
}

/** One packet reaching the rule. */
export interface ArrivalEvent {
  /** Arrival time in milliseconds, on any clock shared by all arrivals. */
  readonly atMs: number;
  /**
   * The hashlimit entry the packet falls into, such as the source address masked by
   * `--hashlimit-srcmask`. Arrivals with the same key share one bucket. Ignored by `limit`,
   * which has one bucket per rule. @default "" (one shared entry)
   */
  readonly key?: string;
  /** The packet's length in bytes (IP header included); required for byte rates. */
  readonly bytes?: number;
}

/** An arrival time in milliseconds, or an arrival with its hash key and length. */
export type Arrival = number | ArrivalEvent;

export interface SimulateOptions {
  /** The match that enforces the rate. @default "hashlimit" */
  readonly match?: "hashlimit" | "limit";
  /** The host's iptables backend, which decides how `limit` is enforced. @default "nft" */
  readonly backend?: Backend;
  /** The kernel's CONFIG_HZ. @default 250 */
  readonly hz?: number;
  /**
   * `--hashlimit-htable-expire`: an entry idle this long starts again with a full bucket.
   * @default what iptables sets: 1000 ms times the rate's unit in seconds (60 000 for "/minute"),
   * 15 000 for a byte rate, 60 000 for a byte rate with a burst
   */
  readonly htableExpireMs?: number;
  /**
   * Offset of the kernel's jiffy boundaries: a tick happens at every time t where
   * (t + jiffyOffsetMs) is a multiple of 1000/hz ms. Real hosts have an unknown offset, so
   * comparisons with a kernel should try several. @default 0
   */
  readonly jiffyOffsetMs?: number;
}

export interface SimulationResult {
  /**
   * For each arrival, in the order given: true when the packet is within the rate (the match
   * of `--hashlimit-upto` or `--limit` succeeds). With `--hashlimit-above` the rule matches the
   * arrivals marked false.
   */
  readonly passed: readonly boolean[];
  readonly passedCount: number;
  readonly limitedCount: number;
}

interface Packet {
  readonly index: number;
  readonly atMs: number;
  readonly key: string;
  readonly bytes?: number;
}

/** Decides, packet by packet in time order, whether each passes. */
type Bucket = (packet: Packet) => boolean;

const UINT32_MASK = 0xffff_ffffn;
const UINT64_MASK = (1n << 64n) - 1n;

/**
 * Replays the kernel's token bucket for `spec` over `arrivals` and returns which of them pass.
 *
 * Arrivals may come in any order; they are replayed in time order (ties keep their order) and
 * the result lists them in the order given. Every bucket starts full.
 * Throws RULE_INVALID_VALUE or RULE_OUT_OF_RANGE for a rate or burst iptables or the kernel would
 * reject, and INVALID_INPUT for a malformed arrival or option.
 *
 * @example
 * // One packet per millisecond for one second against 50/sec burst 20: 70 pass.
 * simulateRateLimit({ rate: "50/sec", burst: 20 }, Array.from({ length: 1000 }, (_, i) => i));
 */
export function simulateRateLimit(
  spec: RateLimitSpec,
  arrivals: readonly Arrival[],
  options: SimulateOptions = {},
): SimulationResult {
  const hz = options.hz ?? DEFAULT_HZ;
  if (!Number.isInteger(hz) || hz < 1 || hz > 10_000) {
    throw invalidInput("hz", hz, "use the kernel's CONFIG_HZ, such as 100, 250, 300 or 1000");
  }
  const match = options.match ?? "hashlimit";
  if (match !== "hashlimit" && match !== "limit") {
    throw invalidInput("match", match, 'use "hashlimit" or "limit"');
  }
  const backend = options.backend ?? "nft";
  if (backend !== "nft" && backend !== "legacy") {
    throw invalidInput("backend", backend, 'use "nft" or "legacy"');
  }
  const offset = options.jiffyOffsetMs ?? 0;
  if (!Number.isFinite(offset)) {
    throw invalidInput("jiffyOffsetMs", offset, "use a finite number of milliseconds");
  }
  const packets = normalizeArrivals(arrivals);
  const toJiffies = (atMs: number): bigint => BigInt(Math.floor(((atMs + offset) * hz) / 1000));

  const bucket =
    match === "hashlimit"
      ? hashlimitBuckets(spec, options, hz, toJiffies)
      : backend === "nft"
        ? nftLimitBucket(spec)
        : xtLimitBucket(spec, hz, toJiffies);

  const passed: boolean[] = new Array<boolean>(packets.length);
  for (const packet of packets) passed[packet.index] = bucket(packet);
  const passedCount = passed.filter(Boolean).length;
  return { passed, passedCount, limitedCount: passed.length - passedCount };
}

function invalidInput(field: string, value: unknown, fix: string): IptablesError {
  return new IptablesError(
    "INVALID_INPUT",
    `simulateRateLimit: ${field} ${JSON.stringify(value)} is invalid: ${fix}`,
    { details: { field, value } },
  );
}

function normalizeArrivals(arrivals: readonly Arrival[]): Packet[] {
  const packets = arrivals.map((arrival, index): Packet => {
    const event = typeof arrival === "number" ? { atMs: arrival } : arrival;
    if (!Number.isFinite(event.atMs)) {
      throw invalidInput(
        `arrivals[${index}].atMs`,
        event.atMs,
        "use a finite time in milliseconds",
      );
    }
    if (event.bytes !== undefined && !(Number.isInteger(event.bytes) && event.bytes > 0)) {
      throw invalidInput(
        `arrivals[${index}].bytes`,
        event.bytes,
        "use a positive whole number of bytes",
      );
    }
    return { index, atMs: event.atMs, key: event.key ?? "", bytes: event.bytes };
  });
  // Array.prototype.sort is stable, so arrivals at the same time keep their given order.
  return packets.sort((a, b) => a.atMs - b.atMs);
}

// ---------------------------------------------------------------------------------------------
// hashlimit (xt_hashlimit.c, revisions 2 and 3)

interface HashlimitEntry {
  /** Jiffy of the last refill (`rateinfo.prev`). */
  prev: bigint;
  /** Jiffy at which the entry expires (`expires`). */
  expires: bigint;
  credit: bigint;
  /** Byte rates only: how many more times the bucket may be refilled at once (`credit_cap`). */
  refills: bigint;
}

/** Builds the hashlimit match's buckets: one per key, created full on the key's first packet. */
function hashlimitBuckets(
  spec: RateLimitSpec,
  options: SimulateOptions,
  hz: number,
  toJiffies: (atMs: number) => bigint,
): Bucket {
  const byteCost = parseByteRate("--hashlimit-upto", spec.rate);
  const step = byteCost === undefined ? packetRateStep(spec, hz) : byteRateStep(spec, byteCost, hz);
  const expireMs = options.htableExpireMs ?? step.defaultExpireMs;
  if (!Number.isInteger(expireMs) || expireMs < 1 || expireMs > 0xffff_ffff) {
    throw invalidInput("htableExpireMs", expireMs, "use a whole number of milliseconds from 1");
  }
  // msecs_to_jiffies rounds up.
  const expireJiffies = BigInt(Math.ceil((expireMs * hz) / 1000));
  const entries = new Map<string, HashlimitEntry>();

  return (packet) => {
    const now = toJiffies(packet.atMs);
    let entry = entries.get(packet.key);
    // NOTE: the kernel frees an expired entry at its next garbage collection run (every
    // --hashlimit-htable-gcinterval, 1 s by default), not at the moment it expires. A packet in
    // between refills the old entry by the elapsed time instead of starting a full one. The two
    // differ only when a full refill takes longer than the expiry.
    if (entry === undefined || now >= entry.expires) {
      entry = step.create(now);
      entries.set(packet.key, entry);
    } else {
      step.refill(entry, now);
    }
    entry.expires = now + expireJiffies;
    return step.take(entry, packet);
  };
}

interface HashlimitStep {
  readonly defaultExpireMs: number;
  create(now: bigint): HashlimitEntry;
  refill(entry: HashlimitEntry, now: bigint): void;
  take(entry: HashlimitEntry, packet: Packet): boolean;
}

/** Packet rates: `rateinfo_init`, `rateinfo_recalc` and the credit check of xt_hashlimit.c. */
function packetRateStep(spec: RateLimitSpec, hz: number): HashlimitStep {
  const rate = parsePacketRate("--hashlimit-upto", spec.rate);
  const period = ratePeriod("--hashlimit-upto", spec.rate, rate, HASHLIMIT_SCALE);
  const burst =
    spec.burst === undefined
      ? HASHLIMIT_DEFAULT_BURST
      : parseHashlimitBurst("--hashlimit-burst", String(spec.burst));
  if (!hashlimitKernelAccepts(period, burst, hz)) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `rate ${spec.rate} with burst ${burst} overflows the kernel's credit arithmetic: lower the burst`,
      { details: { rate: spec.rate, burst } },
    );
  }
  const bucket = hashlimitBucket(period, burst, hz);

  return {
    defaultExpireMs: rate.unitSeconds * 1000,
    create: (now) => ({ prev: now, expires: now, credit: bucket.capacity, refills: 0n }),
    refill: (entry, now) => {
      const delta = now - entry.prev;
      if (delta === 0n) return;
      entry.prev = now;
      // Unsigned 64-bit arithmetic: a long enough idle time wraps around.
      const credit =
        (entry.credit + ((delta * bucket.creditsPerJiffy) & UINT64_MASK)) & UINT64_MASK;
      entry.credit = credit > bucket.capacity ? bucket.capacity : credit;
    },
    take: (entry) => {
      if (entry.credit < bucket.cost) return false;
      entry.credit -= bucket.cost;
      return true;
    },
  };
}

/**
 * Byte rates: each packet costs its length in 16-byte chunks. The bucket's capacity is one second
 * of credit, and the burst is a count of extra refills to full, used up and never restored while
 * the entry lives.
 */
function byteRateStep(spec: RateLimitSpec, cost: number, hz: number): HashlimitStep {
  const bytesPerSecond = costToBytes(cost);
  let refills = 0n;
  if (spec.burst !== undefined) {
    const burstBytes = parseHashlimitBurst("--hashlimit-burst", String(spec.burst));
    if (burstBytes < bytesPerSecond) {
      throw new IptablesError(
        "RULE_OUT_OF_RANGE",
        `burst ${spec.burst} is smaller than one second of rate ${spec.rate} (${bytesPerSecond} bytes): raise it`,
        { details: { rate: spec.rate, burst: spec.burst } },
      );
    }
    // libxt_hashlimit rounds the burst up to whole seconds of rate.
    refills = BigInt(Math.ceil(burstBytes / bytesPerSecond));
  }
  const creditsPerJiffy = BigInt(hashlimitByteCreditsPerJiffy(hz));
  const full = creditsPerJiffy * BigInt(hz);
  // user2credits_byte: the cost of one chunk, (cost * HZ * credits per jiffy) >> 32.
  const chunkCost = (BigInt(cost) * full) >> 32n;

  return {
    defaultExpireMs:
      spec.burst === undefined ? HASHLIMIT_BYTE_EXPIRE_MS : HASHLIMIT_BYTE_BURST_EXPIRE_MS,
    create: (now) => ({ prev: now, expires: now, credit: full, refills }),
    refill: (entry, now) => {
      const delta = now - entry.prev;
      if (delta === 0n) return;
      entry.prev = now;
      const before = entry.credit;
      const credit = (before + creditsPerJiffy * delta) & UINT64_MASK;
      entry.credit = before >= credit || credit > full ? full : credit;
    },
    take: (entry, packet) => {
      if (packet.bytes === undefined) {
        throw invalidInput(
          `arrivals[${packet.index}].bytes`,
          undefined,
          "byte rates need each packet's length",
        );
      }
      const chunks = BigInt((packet.bytes >>> HASHLIMIT_BYTE_SHIFT) + 1);
      let packetCost = chunks * chunkCost;
      if (packetCost > full) packetCost = full;
      if (entry.credit < packetCost && entry.refills > 0n) {
        entry.refills--;
        entry.credit = full;
      }
      if (entry.credit < packetCost) return false;
      entry.credit -= packetCost;
      return true;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// limit

function limitPeriodAndBurst(spec: RateLimitSpec): { period: number; burst: number } {
  const rate = parsePacketRate("--limit", spec.rate);
  const period = ratePeriod("--limit", spec.rate, rate, LIMIT_SCALE);
  const burst = spec.burst ?? LIMIT_DEFAULT_BURST;
  if (
    typeof burst !== "number" ||
    !Number.isInteger(burst) ||
    burst < 0 ||
    burst > LIMIT_MAX_BURST
  ) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `--limit-burst ${JSON.stringify(burst)} is out of range: use a whole number from 0 to ${LIMIT_MAX_BURST}`,
      { details: { option: "--limit-burst", value: burst } },
    );
  }
  return { period, burst };
}

/** xt_limit.c (legacy backend): one bucket of 32-bit credits for the whole rule. */
function xtLimitBucket(
  spec: RateLimitSpec,
  hz: number,
  toJiffies: (atMs: number) => bigint,
): Bucket {
  const { period, burst } = limitPeriodAndBurst(spec);
  if (!limitKernelAccepts(period, burst, hz)) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `--limit ${spec.rate} with --limit-burst ${burst} is rejected by xt_limit ` +
        `(burst 0, or rate x burst overflows 32 bits): use a burst from 1 that fits`,
      { details: { rate: spec.rate, burst } },
    );
  }
  const bucket = limitBucket(period, burst, hz);
  let credit = bucket.capacity;
  let prev: bigint | undefined;

  return (packet) => {
    const now = toJiffies(packet.atMs);
    // The rule's bucket is full from the moment the rule is inserted. Starting it at the first
    // packet gives the same credit, because the refill is capped.
    prev ??= now;
    const increase = ((now - prev) * bucket.creditsPerJiffy) & UINT32_MASK;
    prev = now;
    let next = (credit + increase) & UINT32_MASK;
    if (next > bucket.capacity) next = bucket.capacity;
    const pass = next >= bucket.cost;
    credit = pass ? next - bucket.cost : next;
    return pass;
  };
}

/** Milliseconds to whole nanoseconds, exact for epoch times (where atMs * 1e6 exceeds 2^53). */
function toNanoseconds(atMs: number): bigint {
  const whole = Math.floor(atMs);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((atMs - whole) * 1_000_000));
}

/** Units iptables-nft tries, largest first, when it turns an xt_limit period into a rate. */
const NFT_LIMIT_UNITS = [LIMIT_SCALE * 86_400, LIMIT_SCALE * 3600, LIMIT_SCALE * 60, LIMIT_SCALE];

/**
 * nf_tables' native limit (nft_limit.c) as iptables-nft 1.8.9 builds it from `-m limit`
 * (`add_nft_limit` in iptables/nft.c): a bucket of nanoseconds, where a packet costs
 * unit / rate and the capacity is burst packets. Burst 0 becomes 5 in the kernel.
 */
function nftLimitBucket(spec: RateLimitSpec): Bucket {
  const { period, burst } = limitPeriodAndBurst(spec);
  // Same unit choice as iptables-save's print_rate: the largest unit that keeps the count exact enough.
  let index = 1;
  for (; index < NFT_LIMIT_UNITS.length; index++) {
    const mult = NFT_LIMIT_UNITS[index];
    if (period > mult || Math.floor(mult / period) < mult % period) break;
  }
  const rate = BigInt(Math.floor(NFT_LIMIT_UNITS[index - 1] / period));
  const unitNs = BigInt(NFT_LIMIT_UNITS[index - 1] / LIMIT_SCALE) * 1_000_000_000n;
  const cost = unitNs / rate;
  const capacity = cost * BigInt(burst === 0 ? LIMIT_DEFAULT_BURST : burst);
  let tokens = capacity;
  let last: bigint | undefined;

  return (packet) => {
    const now = toNanoseconds(packet.atMs);
    last ??= now;
    tokens += now - last;
    if (tokens > capacity) tokens = capacity;
    last = now;
    if (tokens < cost) return false;
    tokens -= cost;
    return true;
  };
}
