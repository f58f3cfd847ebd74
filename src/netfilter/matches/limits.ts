/**
 * The `limit` and `hashlimit` (revision 3) matches. The arithmetic lives in `../rates.ts`; this
 * file reads the options, applies iptables' defaults and the kernel's checks, and prints.
 */
import { IptablesError } from "../../errors";
import {
  invalidRule,
  invalidValue,
  isPlainName,
  optionTable,
  outOfRange,
  parseUnsigned,
  repeated,
  savedDecimal,
  type MatchInstance,
  type OptionSpec,
  type SavedValueTest,
  type RuleEnv,
} from "../model";
import {
  HASHLIMIT_BYTE_BURST_EXPIRE_MS,
  HASHLIMIT_BYTE_EXPIRE_MS,
  HASHLIMIT_DEFAULT_BURST,
  HASHLIMIT_DEFAULT_GC_INTERVAL_MS,
  HASHLIMIT_MAX_BURST,
  HASHLIMIT_SCALE,
  LIMIT_DEFAULT_BURST,
  LIMIT_MAX_BURST,
  LIMIT_SCALE,
  costToBytes,
  hashlimitKernelAccepts,
  limitKernelAccepts,
  parseByteRate,
  parseHashlimitBurst,
  parsePacketRate,
  printByteBurst,
  printByteRate,
  printRate,
  printedUnitSeconds,
  ratePeriod,
} from "../rates";

/** iptables' default `--limit` when none is given, 3/hour, as a period. */
const LIMIT_DEFAULT_PERIOD = ratePeriod(
  "--limit",
  "3/hour",
  parsePacketRate("--limit", "3/hour"),
  LIMIT_SCALE,
);

const LIMIT_OPTIONS = optionTable([
  [["limit"], 1, false],
  [["limit-burst"], 1, false],
]);

/** The limit match. */
export class LimitMatch implements MatchInstance {
  readonly name = "limit";
  readonly options = LIMIT_OPTIONS;
  private period = LIMIT_DEFAULT_PERIOD;
  private burst = LIMIT_DEFAULT_BURST;
  private readonly seen = new Set<string>();

  constructor(private readonly env: RuleEnv) {}

  option(spec: OptionSpec, args: readonly string[]): void {
    if (this.seen.has(spec.name)) throw repeated(spec.name);
    this.seen.add(spec.name);
    if (spec.name === "limit") {
      this.period = ratePeriod(
        "--limit",
        args[0],
        parsePacketRate("--limit", args[0]),
        LIMIT_SCALE,
      );
    } else {
      this.burst = parseUnsigned(spec.name, args[0], 0, LIMIT_MAX_BURST);
    }
  }

  finish(): void {
    if (this.env.backend === "nft") {
      // iptables-nft stores the rate as printed (count per unit) and reads the period back
      // from it. nf_tables turns a packet burst of 0 into its default of 5.
      const printed = printRate(this.period, LIMIT_SCALE);
      this.period = Math.floor((LIMIT_SCALE * printed.unitSeconds) / printed.count);
      if (this.burst === 0) this.burst = LIMIT_DEFAULT_BURST;
      return;
    }
    if (!limitKernelAccepts(this.period, this.burst)) {
      throw new IptablesError(
        "RULE_OUT_OF_RANGE",
        `--limit ${printRate(this.period, LIMIT_SCALE).text} with --limit-burst ${this.burst} is rejected by ` +
          "the kernel's xt_limit (burst 0, or rate times burst overflows); lower the burst or raise the rate",
        { details: { option: "--limit-burst", value: String(this.burst) } },
      );
    }
  }

  save(): string {
    let out = ` --limit ${printRate(this.period, LIMIT_SCALE).text}`;
    if (this.burst !== LIMIT_DEFAULT_BURST) out += ` --limit-burst ${this.burst}`;
    return out;
  }

  /**
   * Returns a test for `--limit` values. A rate printed as written keeps its period, so
   * iptables-nft's round trip through the printed rate changes nothing, and only the kernel's
   * check with the burst depends on the value.
   */
  savedValueTest(option: string): SavedValueTest | undefined {
    if (option !== "limit") return undefined;
    const legacy = this.env.backend === "legacy";
    const burst = this.burst;
    return (text, start, end) => {
      const period = savedRatePeriod(text, start, end, LIMIT_SCALE, undefined);
      return period >= 0 && (!legacy || limitKernelAccepts(period, burst));
    };
  }
}

const HASHLIMIT_OPTIONS = optionTable([
  [["hashlimit-upto", "hashlimit"], 1, true],
  [["hashlimit-above"], 1, true],
  [["hashlimit-srcmask"], 1, false],
  [["hashlimit-dstmask"], 1, false],
  [["hashlimit-burst"], 1, false],
  [["hashlimit-htable-size"], 1, false],
  [["hashlimit-htable-max"], 1, false],
  [["hashlimit-htable-gcinterval"], 1, false],
  [["hashlimit-htable-expire"], 1, false],
  [["hashlimit-mode"], 1, false],
  [["hashlimit-name"], 1, false],
  [["hashlimit-rate-match"], 0, false],
  [["hashlimit-rate-interval"], 1, false],
]);

const MODES: ReadonlyArray<readonly [string, number]> = [
  ["srcip", 0x02],
  ["srcport", 0x08],
  ["dstip", 0x01],
  ["dstport", 0x04],
];
/** The kernel caps htable size and max at this many entries (HASHLIMIT_MAX_SIZE). */
const HASHLIMIT_MAX_SIZE = 1_048_576;
/** The name buffer has room for 255 characters, and iptables cuts longer names. */
const HASHLIMIT_NAME_MAX = 255;

/** The hashlimit match. */
export class HashlimitMatch implements MatchInstance {
  readonly name = "hashlimit";
  readonly options = HASHLIMIT_OPTIONS;
  private rateText: string | undefined;
  private above = false;
  private bytes = false;
  private avg = 0;
  private unitSeconds = 1;
  private burstText: string | undefined;
  private burst = HASHLIMIT_DEFAULT_BURST;
  private mode = 0;
  private srcmask: number;
  private dstmask: number;
  private size = 0;
  private max = 0;
  private gcInterval = HASHLIMIT_DEFAULT_GC_INTERVAL_MS;
  private expire: number | undefined;
  private hashName: string | undefined;
  private rateMatch = false;
  private interval = 0;
  private readonly seen = new Set<string>();

  constructor(private readonly env: RuleEnv) {
    this.srcmask = this.dstmask = this.fullMask();
  }

  private fullMask(): number {
    return this.env.family === "ipv4" ? 32 : 128;
  }

  option(spec: OptionSpec, args: readonly string[], invert: boolean): void {
    const key = spec.name === "hashlimit-above" ? "hashlimit-upto" : spec.name;
    if (this.seen.has(key)) throw repeated(spec.name);
    this.seen.add(key);
    const value = args[0];

    switch (spec.name) {
      case "hashlimit-upto":
      case "hashlimit-above": {
        this.rateText = value;
        this.above = (spec.name === "hashlimit-above") !== invert;
        const cost = parseByteRate(`--${spec.name}`, value);
        if (cost !== undefined) {
          this.bytes = true;
          this.avg = cost;
        } else {
          const rate = parsePacketRate(`--${spec.name}`, value);
          this.avg = ratePeriod(`--${spec.name}`, value, rate, HASHLIMIT_SCALE);
          this.unitSeconds = rate.unitSeconds;
        }
        break;
      }
      case "hashlimit-srcmask":
        this.srcmask = parseUnsigned(spec.name, value, 0, this.fullMask());
        break;
      case "hashlimit-dstmask":
        this.dstmask = parseUnsigned(spec.name, value, 0, this.fullMask());
        break;
      case "hashlimit-burst":
        this.burstText = value;
        this.burst = parseHashlimitBurst(`--${spec.name}`, value);
        break;
      case "hashlimit-htable-size":
        this.size = Math.min(parseUnsigned(spec.name, value, 0, 0xffff_ffff), HASHLIMIT_MAX_SIZE);
        break;
      case "hashlimit-htable-max":
        this.max = Math.min(parseUnsigned(spec.name, value, 0, 0xffff_ffff), HASHLIMIT_MAX_SIZE);
        break;
      case "hashlimit-htable-gcinterval":
        this.gcInterval = parseUnsigned(spec.name, value, 1, 0xffff_ffff);
        break;
      case "hashlimit-htable-expire":
        this.expire = parseUnsigned(spec.name, value, 1, 0xffff_ffff);
        break;
      case "hashlimit-mode":
        this.mode = parseMode(spec.name, value);
        break;
      case "hashlimit-name":
        this.hashName = parseHashlimitName(spec.name, value);
        break;
      case "hashlimit-rate-match":
        this.rateMatch = true;
        break;
      case "hashlimit-rate-interval":
        if (!/^[1-9]\d*$/.test(value))
          throw invalidValue(spec.name, value, "expected a number of seconds from 1");
        this.interval = parseUnsigned(spec.name, value, 1, 0x7fff_ffff);
        break;
    }
  }

  finish(): void {
    if (this.rateText === undefined) {
      throw new IptablesError(
        "RULE_SYNTAX",
        "the hashlimit match needs --hashlimit-upto or --hashlimit-above",
        {
          details: { option: "-m hashlimit" },
        },
      );
    }
    if (this.hashName === undefined) {
      throw new IptablesError("RULE_SYNTAX", "the hashlimit match needs --hashlimit-name", {
        details: { option: "--hashlimit-name" },
      });
    }

    // The default expire is the unit the rate was written in (libxt_hashlimit.c).
    let defaultExpire = this.unitSeconds * 1000;
    if (this.bytes) {
      defaultExpire = HASHLIMIT_BYTE_EXPIRE_MS;
      let chunks = 0;
      if (this.burstText !== undefined) {
        const perSecond = costToBytes(this.avg);
        if (this.burst < perSecond) {
          throw outOfRange(
            "hashlimit-burst",
            this.burstText,
            `a byte burst must be at least ${perSecond}b, one second of the rate`,
          );
        }
        chunks = Math.ceil(this.burst / perSecond);
        defaultExpire = HASHLIMIT_BYTE_BURST_EXPIRE_MS;
      }
      this.burst = chunks;
    } else if (this.burst > HASHLIMIT_MAX_BURST) {
      throw outOfRange(
        "hashlimit-burst",
        this.burstText ?? String(this.burst),
        `use 1 to ${HASHLIMIT_MAX_BURST}`,
      );
    }
    this.expire ??= defaultExpire;

    if (this.rateMatch) {
      if (!this.bytes) this.avg = Math.floor(this.avg / this.unitSeconds);
      if (this.interval === 0) this.interval = this.bytes ? 1 : this.unitSeconds;
      if (this.avg === 0 || this.avg > 0xffff_ffff)
        throw invalidRule("hashlimit-rate-match", "the rate is out of the kernel's range");
    } else if (!this.bytes && !hashlimitKernelAccepts(this.avg, this.burst)) {
      throw new IptablesError(
        "RULE_OUT_OF_RANGE",
        `--hashlimit-burst ${this.burst} with rate ${this.rateText} overflows the kernel's credit arithmetic ` +
          '("overflow, try lower"); lower the burst or raise the rate',
        { details: { option: "--hashlimit-burst", value: String(this.burst) } },
      );
    }
  }

  save(): string {
    let out = this.above ? " --hashlimit-above" : " --hashlimit-upto";
    let quantum: number;
    if (this.bytes) {
      out += ` ${printByteRate(this.avg)}`;
      if (this.burst !== 0) out += ` --hashlimit-burst ${printByteBurst(this.avg, this.burst)}`;
      quantum = this.burst === 0 ? HASHLIMIT_BYTE_EXPIRE_MS : HASHLIMIT_BYTE_BURST_EXPIRE_MS;
    } else {
      const printed = printRate(this.avg, HASHLIMIT_SCALE);
      out += ` ${printed.text} --hashlimit-burst ${this.burst}`;
      quantum = printed.unitSeconds * 1000;
    }
    if (this.mode !== 0) {
      out += ` --hashlimit-mode ${MODES.filter(([, bit]) => (this.mode & bit) !== 0)
        .map(([name]) => name)
        .join(",")}`;
    }
    out += ` --hashlimit-name ${this.hashName}`;
    if (this.size !== 0) out += ` --hashlimit-htable-size ${this.size}`;
    if (this.max !== 0) out += ` --hashlimit-htable-max ${this.max}`;
    if (this.gcInterval !== HASHLIMIT_DEFAULT_GC_INTERVAL_MS)
      out += ` --hashlimit-htable-gcinterval ${this.gcInterval}`;
    if (this.expire !== quantum) out += ` --hashlimit-htable-expire ${this.expire}`;
    if (this.srcmask !== this.fullMask()) out += ` --hashlimit-srcmask ${this.srcmask}`;
    if (this.dstmask !== this.fullMask()) out += ` --hashlimit-dstmask ${this.dstmask}`;
    if (this.rateMatch) {
      out += " --hashlimit-rate-match";
      if (this.interval !== 1) out += ` --hashlimit-rate-interval ${this.interval}`;
    }
    return out;
  }

  /**
   * Returns tests for `--hashlimit-name` and packet rates. A rate in the unit it was written in
   * keeps the default expire and the printed expire quantum, so only the kernel's check with
   * the burst depends on its count. Byte rates and --hashlimit-rate-match derive other values
   * from the rate, so they have no test.
   */
  savedValueTest(option: string): SavedValueTest | undefined {
    if (option === "hashlimit-name") return isSavedHashlimitName;
    if (option !== "hashlimit-upto" && option !== "hashlimit-above") return undefined;
    if (this.bytes || this.rateMatch) return undefined;
    const unitSeconds = this.unitSeconds;
    const burst = this.burst;
    return (text, start, end) => {
      const period = savedRatePeriod(text, start, end, HASHLIMIT_SCALE, unitSeconds);
      return period >= 0 && hashlimitKernelAccepts(period, burst);
    };
  }
}

/**
 * Returns the length in seconds of a unit iptables-save prints after a rate's "/" ("sec",
 * "min", "hour" or "day"), or -1 for any other text. It has no loop or destructuring, which
 * keeps it cheap for V8 to compile while the first dump of a process is read.
 */
function savedUnitSeconds(text: string, start: number, end: number): number {
  const length = end - start;
  if (length === 3) {
    if (text.startsWith("sec", start)) return 1;
    if (text.startsWith("min", start)) return 60;
    if (text.startsWith("day", start)) return 86_400;
  } else if (length === 4 && text.startsWith("hour", start)) {
    return 3600;
  }
  return -1;
}

/**
 * Returns the period of a packet rate that iptables-save prints exactly as written (and in
 * `unitSeconds`, when given), or -1 for any other text.
 */
function savedRatePeriod(
  text: string,
  start: number,
  end: number,
  scale: number,
  unitSeconds: number | undefined,
): number {
  const slash = text.indexOf("/", start);
  if (slash < 0 || slash >= end) return -1;
  const count = savedDecimal(text, start, slash, 0x7fff_ffff);
  if (count <= 0) return -1;
  const seconds = savedUnitSeconds(text, slash + 1, end);
  if (seconds < 0 || (unitSeconds !== undefined && seconds !== unitSeconds)) return -1;
  // printRate prints this text back when it picks the same unit and the count survives the
  // division both ways.
  const period = Math.floor((scale * seconds) / count);
  if (period === 0 || printedUnitSeconds(period, scale) !== seconds) return -1;
  return Math.floor((scale * seconds) / period) === count ? period : -1;
}

function parseMode(option: string, text: string): number {
  let mode = 0;
  for (const item of text.split(/[,|]/)) {
    if (item === "") continue;
    const found = MODES.find(([name]) => name === item);
    if (found === undefined) {
      throw invalidValue(
        option,
        text,
        "expected a comma-separated list of srcip, srcport, dstip and dstport",
      );
    }
    mode |= found[1];
  }
  return mode;
}

/** Tells whether `parseHashlimitName` accepts a name unchanged, which then prints as is. */
function isSavedHashlimitName(text: string, start: number, end: number): boolean {
  const length = end - start;
  if (length > HASHLIMIT_NAME_MAX || !isPlainName(text, start, end)) return false;
  if (length === 1 && text.startsWith(".", start)) return false;
  return !(length === 2 && text.startsWith("..", start));
}

/** Checks a hashlimit name as iptables (length) and the kernel (a /proc file name) do. */
function parseHashlimitName(option: string, text: string): string {
  const name = text.slice(0, HASHLIMIT_NAME_MAX);
  if (name === "" || name === "." || name === ".." || name.includes("/")) {
    throw invalidValue(
      option,
      text,
      'the name becomes a file under /proc/net/ipt_hashlimit: use 1 to 255 characters without "/"',
    );
  }
  if (!/^[\x21-\x7e]+$/.test(name) || /["'\\]/.test(name)) {
    // iptables-save prints the name without quoting, so a name with spaces or quotes would not
    // read back as the same rule.
    throw invalidValue(
      option,
      text,
      "use printable characters without spaces, quotes or backslashes",
    );
  }
  return name;
}
