/**
 * Rates of the `limit` and `hashlimit` matches: parsing, the integer arithmetic of iptables 1.8.9
 * (extensions/libxt_limit.c, libxt_hashlimit.c) and of the kernel (net/netfilter/xt_limit.c,
 * xt_hashlimit.c), and the unit iptables-save chooses when it prints a rate.
 *
 * A packet rate is stored as a period: the time between two packets in units of 1/SCALE second
 * (SCALE is 10 000 for `limit`, 1 000 000 for `hashlimit` revisions 2 and 3). The division
 * truncates, so "3000/minute" and "50/sec" are the same rule, and 7/hour prints back as 7/hour
 * only because iptables picks the unit whose division loses nothing significant.
 * A byte rate (`hashlimit` only, "512kb/s") is stored as a cost: UINT32_MAX divided by the number
 * of 16-byte chunks per second.
 *
 * The token bucket constants at the end depend on the kernel's HZ. They are computed for HZ=250,
 * the value of Debian's kernels and of the lab machine (CONFIG_HZ=250); pass another `hz` for
 * kernels built otherwise.
 */
import { IptablesError } from "../errors";

export const LIMIT_SCALE = 10_000;
export const HASHLIMIT_SCALE = 1_000_000;
/** `limit --limit-burst` default and maximum (libxt_limit.c). */
export const LIMIT_DEFAULT_BURST = 5;
export const LIMIT_MAX_BURST = 10_000;
/** `hashlimit --hashlimit-burst` default and maximum for revisions 2 and 3 (libxt_hashlimit.c). */
export const HASHLIMIT_DEFAULT_BURST = 5;
export const HASHLIMIT_MAX_BURST = 1_000_000;
/** Default `--hashlimit-htable-gcinterval`, in milliseconds. */
export const HASHLIMIT_DEFAULT_GC_INTERVAL_MS = 1000;
/** Default `--hashlimit-htable-expire` of a byte rate without and with `--hashlimit-burst`. */
export const HASHLIMIT_BYTE_EXPIRE_MS = 15_000;
export const HASHLIMIT_BYTE_BURST_EXPIRE_MS = 60_000;
/** Byte rates count 16-byte chunks (XT_HASHLIMIT_BYTE_SHIFT = 4). */
export const HASHLIMIT_BYTE_SHIFT = 4;
/** The kernel's jiffy frequency assumed by the token bucket constants (Debian: CONFIG_HZ=250). */
export const DEFAULT_HZ = 250;

const UINT32_MAX = 0xffff_ffff;
const UINT64_MASK = (1n << 64n) - 1n;

/** The rate units iptables accepts after "/", matched as case-insensitive prefixes. */
const UNITS: ReadonlyArray<readonly [string, number]> = [
  ["second", 1],
  ["minute", 60],
  ["hour", 3600],
  ["day", 86_400],
];

/** A packet rate as written: `count` packets per `unitSeconds`. */
export interface PacketRate {
  readonly count: number;
  readonly unitSeconds: number;
}

function rateError(option: string, value: string, reason: string): IptablesError {
  return new IptablesError(
    "RULE_INVALID_VALUE",
    `${option} ${JSON.stringify(value)} is invalid: ${reason}`,
    { details: { option, value } },
  );
}

/**
 * Parses a packet rate such as "50", "50/s", "50/sec", "3000/minute" or "7/h". The unit is a
 * case-insensitive prefix of second, minute, hour or day, as in iptables.
 *
 * NOTE: iptables reads the count with atoi and ignores trailing garbage ("50x/sec" is 50/sec);
 * this parser rejects it instead.
 */
export function parsePacketRate(option: string, text: string): PacketRate {
  const match = /^(\d+)(?:\/([A-Za-z]+))?$/.exec(text);
  if (match === null) {
    throw rateError(option, text, 'expected a rate such as "50/sec", "3000/minute" or "7/hour"');
  }
  const count = Number(match[1]);
  if (count === 0 || count > 0x7fff_ffff) {
    throw rateError(option, text, "the count must be from 1 to 2147483647");
  }
  let unitSeconds = 1;
  if (match[2] !== undefined) {
    const unit = match[2].toLowerCase();
    const found = UNITS.find(([name]) => name.startsWith(unit));
    if (found === undefined) {
      throw rateError(option, text, "the unit must be second, minute, hour or day (or a prefix)");
    }
    unitSeconds = found[1];
  }
  return { count, unitSeconds };
}

/**
 * Converts a packet rate to the period iptables stores: floor(scale * unitSeconds / count).
 * Throws RULE_OUT_OF_RANGE when the period is 0 ("Rate too fast" in iptables).
 */
export function ratePeriod(option: string, text: string, rate: PacketRate, scale: number): number {
  const period = Math.floor((scale * rate.unitSeconds) / rate.count);
  if (period === 0) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `${option} ${JSON.stringify(text)} is too fast: the maximum is ${scale}/sec`,
      { details: { option, value: text } },
    );
  }
  return period;
}

/** A rate as iptables-save prints it, and the unit it chose. */
export interface PrintedRate {
  /** Such as "50/sec" or "7/hour". */
  readonly text: string;
  /** The count before "/". */
  readonly count: number;
  /** The printed unit in seconds: 1, 60, 3600 or 86400. */
  readonly unitSeconds: number;
}

const PRINTED_UNITS: ReadonlyArray<readonly [string, number]> = [
  ["day", 86_400],
  ["hour", 3600],
  ["min", 60],
  ["sec", 1],
];

/**
 * Prints a period as iptables-save does (`print_rate` in libxt_limit.c and libxt_hashlimit.c):
 * the largest unit from day down to second whose count loses less to truncation than it keeps.
 */
export function printRate(period: number, scale: number): PrintedRate {
  const seconds = printedUnitSeconds(period, scale);
  const name = PRINTED_UNITS.find(([, unit]) => unit === seconds)?.[0] ?? "sec";
  const count = Math.floor((scale * seconds) / period);
  return { text: `${count}/${name}`, count, unitSeconds: seconds };
}

/** Returns the length in seconds of the unit `printRate` prints a period in. */
export function printedUnitSeconds(period: number, scale: number): number {
  const units = PRINTED_UNITS;
  let index = 1;
  for (; index < units.length; index++) {
    const mult = scale * units[index][1];
    if (period > mult || Math.floor(mult / period) < mult % period) break;
  }
  return units[index - 1][1];
}

/** Returns the multiplier of a byte unit suffix: "k" is 1024 and "m" is 1048576. */
function unitFactor(suffix: string): number {
  if (suffix === "m") return 1024 * 1024;
  if (suffix === "k") return 1024;
  return 1;
}

/**
 * Parses a `hashlimit` byte rate such as "512kb/s", "1mb/s" or "100b/s" into the cost the kernel
 * stores: UINT32_MAX / (bytes per second / 16 + 1). "k" is 1024 and "m" is 1048576.
 */
export function parseByteRate(option: string, text: string): number | undefined {
  const match = /^(\d+)([km]?)b\/s$/.exec(text);
  if (match === null) return undefined;
  const factor = unitFactor(match[2]);
  const bytes = Number(match[1]) * factor;
  if (bytes === 0) throw rateError(option, text, "the rate must be at least 1b/s");
  const chunks = Math.floor(bytes / 2 ** HASHLIMIT_BYTE_SHIFT);
  if (chunks === 0) {
    // iptables accepts 1b/s to 15b/s, but iptables-save prints them as "0b/s", which
    // iptables-restore cannot read back, and a --hashlimit-burst with them crashes iptables
    // 1.8.9 with a division by zero.
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `${option} ${JSON.stringify(text)} is too low: byte rates count 16-byte chunks, so use at least 16b/s`,
      { details: { option, value: text } },
    );
  }
  if (chunks >= UINT32_MAX) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `${option} ${JSON.stringify(text)} is too high: the maximum is 65535mb/s`,
      { details: { option, value: text } },
    );
  }
  const cost = bytesToCost(bytes);
  if (cost === 0) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `${option} ${JSON.stringify(text)} is too high for the kernel's byte counter`,
      { details: { option, value: text } },
    );
  }
  return cost;
}

/** `bytes_to_cost` of libxt_hashlimit.c: UINT32_MAX / (uint32(bytes >> 4) + 1). */
export function bytesToCost(bytes: number): number {
  const chunks = Math.floor(bytes / 2 ** HASHLIMIT_BYTE_SHIFT) >>> 0;
  return Math.floor(UINT32_MAX / (chunks + 1));
}

/** `cost_to_bytes` of libxt_hashlimit.c: the bytes per second a cost stands for. */
export function costToBytes(cost: number): number {
  const chunks = cost === 0 ? UINT32_MAX : Math.floor(UINT32_MAX / cost);
  return (chunks - 1) * 2 ** HASHLIMIT_BYTE_SHIFT;
}

const BYTE_UNITS: ReadonlyArray<readonly [string, number]> = [
  ["m", 1024 * 1024],
  ["k", 1024],
  ["", 1],
];

/**
 * Prints a byte rate cost as iptables-save does (`print_bytes`): in mb or kb only when that unit
 * maps back to the same cost, else in bytes.
 */
export function printByteRate(cost: number): string {
  const bytes = costToBytes(cost);
  let index = 0;
  for (; index < BYTE_UNITS.length - 1; index++) {
    const threshold = BYTE_UNITS[index][1];
    const rounded = bytes - (bytes % threshold);
    if (bytes >= threshold && bytesToCost(rounded) === cost) break;
  }
  const [name, threshold] = BYTE_UNITS[index];
  return `${Math.floor(bytes / threshold)}${name}b/s`;
}

/** Prints a byte-mode burst (a count of rate-seconds) in the largest unit it reaches. */
export function printByteBurst(cost: number, burst: number): string {
  const bytes = costToBytes(cost) * burst;
  let index = 0;
  for (; index < BYTE_UNITS.length - 1; index++) {
    if (bytes >= BYTE_UNITS[index][1]) break;
  }
  const [name, threshold] = BYTE_UNITS[index];
  return `${Math.floor(bytes / threshold)}${name}b`;
}

/**
 * Parses `--hashlimit-burst`: a C number in base 0, optionally followed by "k" (x1024) or "m"
 * (x1048576) and an optional "b", as `parse_burst` in libxt_hashlimit.c reads it.
 */
export function parseHashlimitBurst(option: string, text: string): number {
  const match = /^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)([km]?)b?$/.exec(text);
  if (match === null) {
    throw rateError(option, text, 'expected a number, optionally with "k" or "m" such as "64kb"');
  }
  const raw = match[1];
  const value = /^0[xX]/.test(raw)
    ? Number.parseInt(raw.slice(2), 16)
    : raw.length > 1 && raw.startsWith("0")
      ? Number.parseInt(raw.slice(1), 8)
      : Number(raw);
  if (value === 0 || (match[2] === "" && value > HASHLIMIT_MAX_BURST)) {
    throw new IptablesError(
      "RULE_OUT_OF_RANGE",
      `${option} ${JSON.stringify(text)} is out of range: use 1 to ${HASHLIMIT_MAX_BURST}`,
      { details: { option, value: text } },
    );
  }
  const factor = unitFactor(match[2]);
  return value * factor;
}

// ---------------------------------------------------------------------------------------------
// Token bucket constants (kernel side), for checks the kernel makes and for offline simulation.

function pow2Below(value: bigint): bigint {
  let power = 1n;
  while (power * 2n <= value) power *= 2n;
  return power;
}

const limitCpjByHz = new Map<number, number>();

/** Credits added per jiffy by xt_limit: the power of two below UINT32_MAX / (HZ * 86400). */
export function limitCreditsPerJiffy(hz = DEFAULT_HZ): number {
  let cpj = limitCpjByHz.get(hz);
  if (cpj === undefined) {
    cpj = Number(pow2Below(BigInt(Math.floor(UINT32_MAX / (hz * 86_400)))));
    limitCpjByHz.set(hz, cpj);
  }
  return cpj;
}

/** `user2credits` of xt_limit.c, in 32-bit unsigned arithmetic. */
export function limitUserToCredits(user: number, hz = DEFAULT_HZ): number {
  const cpj = limitCreditsPerJiffy(hz);
  const value = user >>> 0;
  if (value > Math.floor(UINT32_MAX / (hz * cpj))) {
    return Math.imul(Math.floor(value / LIMIT_SCALE), hz * cpj) >>> 0;
  }
  return Math.floor((value * hz * cpj) / LIMIT_SCALE) >>> 0;
}

/**
 * Tells whether xt_limit (the legacy backend) accepts a period and burst: burst 0, or a product
 * period * burst that wraps around 32 bits so that the bucket would be smaller than one packet,
 * is rejected with ERANGE ("Numerical result out of range"). nf_tables' native limit has no
 * such check, and it turns burst 0 into the default 5.
 */
export function limitKernelAccepts(period: number, burst: number, hz = DEFAULT_HZ): boolean {
  if (burst === 0) return false;
  // A product below 2^32 does not wrap around, and a double represents it exactly.
  const exact = period * burst;
  const product =
    exact <= UINT32_MAX ? exact : Number((BigInt(period) * BigInt(burst)) & 0xffff_ffffn);
  return limitUserToCredits(product, hz) >= limitUserToCredits(period, hz);
}

const hashlimitCpjByHz = new Map<number, bigint>();

/** Credits added per jiffy by xt_hashlimit for packet rates (revision 2 and later, 64-bit). */
export function hashlimitCreditsPerJiffy(hz = DEFAULT_HZ): bigint {
  let cpj = hashlimitCpjByHz.get(hz);
  if (cpj === undefined) {
    cpj = pow2Below(UINT64_MASK / BigInt(hz * 86_400));
    hashlimitCpjByHz.set(hz, cpj);
  }
  return cpj;
}

const hashlimitFactorByHz = new Map<number, number>();

/** Returns the factor `hashlimitUserToCredits` multiplies by, or 1 when it divides. */
function hashlimitCreditFactor(hz: number): number {
  let factor = hashlimitFactorByHz.get(hz);
  if (factor === undefined) {
    const scale = BigInt(HASHLIMIT_SCALE);
    const perSecond = BigInt(hz) * hashlimitCreditsPerJiffy(hz);
    factor = scale >= perSecond ? 1 : Number(perSecond / scale);
    hashlimitFactorByHz.set(hz, factor);
  }
  return factor;
}

/** `user2credits` of xt_hashlimit.c for revisions 2 and 3, in 64-bit unsigned arithmetic. */
export function hashlimitUserToCredits(user: bigint, hz = DEFAULT_HZ): bigint {
  const scale = BigInt(HASHLIMIT_SCALE);
  const perSecond = BigInt(hz) * hashlimitCreditsPerJiffy(hz);
  if (scale >= perSecond) return user / (scale / perSecond);
  return (user * (perSecond / scale)) & UINT64_MASK;
}

/**
 * Tells whether xt_hashlimit accepts a packet period and burst: the kernel rejects with ERANGE
 * when period * burst overflows the credit arithmetic ("overflow, try lower").
 */
export function hashlimitKernelAccepts(period: number, burst: number, hz = DEFAULT_HZ): boolean {
  if (burst === 0) return false;
  // user2credits multiplies or divides by a constant, so it never decreases while nothing
  // wraps around 64 bits. Then a burst of 1 or more always passes. A double product below
  // 2^53 is exact and bounds every intermediate value.
  if (period * burst * hashlimitCreditFactor(hz) < 2 ** 53) return true;
  const product = (BigInt(period) * BigInt(burst)) & UINT64_MASK;
  return hashlimitUserToCredits(product, hz) >= hashlimitUserToCredits(BigInt(period), hz);
}

/** Credits per jiffy of xt_hashlimit byte rates: the power of two below UINT32_MAX / HZ. */
export function hashlimitByteCreditsPerJiffy(hz = DEFAULT_HZ): number {
  return Number(pow2Below(BigInt(Math.floor(UINT32_MAX / hz))));
}

/**
 * A kernel token bucket in credits, for offline simulation. Each jiffy adds `creditsPerJiffy`
 * up to `capacity`. A packet passes when the bucket contains at least `cost` (per packet, or per
 * 16-byte chunk for byte rates) and takes it. A new bucket starts full.
 */
export interface TokenBucket {
  readonly hz: number;
  readonly creditsPerJiffy: bigint;
  /** Credits one packet costs (packet rates) or one 16-byte chunk costs (byte rates). */
  readonly cost: bigint;
  /** Maximum credits, which is also the starting credit. */
  readonly capacity: bigint;
}

/** Returns the bucket of an xt_limit rule (legacy backend) with the given period and burst. */
export function limitBucket(period: number, burst: number, hz = DEFAULT_HZ): TokenBucket {
  return {
    hz,
    creditsPerJiffy: BigInt(limitCreditsPerJiffy(hz)),
    cost: BigInt(limitUserToCredits(period, hz)),
    capacity: BigInt(
      limitUserToCredits(Number((BigInt(period) * BigInt(burst)) & 0xffff_ffffn), hz),
    ),
  };
}

/** Returns the per-entry bucket of an xt_hashlimit packet-rate rule (revision 3). */
export function hashlimitBucket(period: number, burst: number, hz = DEFAULT_HZ): TokenBucket {
  return {
    hz,
    creditsPerJiffy: hashlimitCreditsPerJiffy(hz),
    cost: hashlimitUserToCredits(BigInt(period), hz),
    capacity: hashlimitUserToCredits((BigInt(period) * BigInt(burst)) & UINT64_MASK, hz),
  };
}
