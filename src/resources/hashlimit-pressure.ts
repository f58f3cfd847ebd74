/**
 * Fill level of a HashlimitRule's kernel table, and the warning an operator gets before the
 * table is full. A full table makes xt_hashlimit drop every packet from a new source, whatever the rule's
 * target, so legitimate first-time clients fail too.
 */
import type { Host } from "../host";

/** Share of the table's maximum entries in use above which a read warns. */
export const ENTRIES_WARNING_RATIO = 0.75;

/** The smallest table the kernel creates, in buckets. */
const MIN_HTABLE_SIZE = 16;

/**
 * Computes the buckets xt_hashlimit gives a table without `--hashlimit-htable-size`
 * (`htable_create` in net/netfilter/xt_hashlimit.c): 8192 above 1 GiB of RAM, else one bucket
 * per 128 KiB, and at least 16.
 */
export function defaultHtableSize(memTotalBytes: number): number {
  if (memTotalBytes > 1024 ** 3) return 8192;
  return Math.max(MIN_HTABLE_SIZE, Math.floor(memTotalBytes / 16_384 / 8));
}

/** Computes the maximum entries the kernel applies: 8 times the size when none is given, never below the size. */
export function effectiveHtableMax(size: number, htableMax: number | undefined): number {
  if (htableMax === undefined || htableMax === 0) return 8 * size;
  return Math.max(htableMax, size);
}

export interface TablePressure {
  /** The host, as the warning names it. */
  readonly address: string;
  readonly family: string;
  readonly hashlimitName: string;
  readonly entries: number;
  readonly max: number;
}

/** Builds the warning for a table above ENTRIES_WARNING_RATIO of its maximum, or undefined. */
export function entriesWarning(pressure: TablePressure): string | undefined {
  const { address, family, hashlimitName, entries, max } = pressure;
  if (entries <= max * ENTRIES_WARNING_RATIO) return undefined;
  const percent = Math.round((entries / max) * 100);
  return (
    `warning: ${address}: hashlimit table ${hashlimitName} (${family}) has ${entries} entries, ` +
    `${percent}% of its maximum ${max}; when it is full, the kernel drops packets from new ` +
    `sources whatever the rule says: raise htableMax (and htableSize), or lower htableExpireMs`
  );
}

/**
 * Logs `entriesWarning` for a HashlimitRule's table. The table's maximum depends on the host's
 * memory when neither htableSize nor htableMax is given; /proc/meminfo is read only when the
 * entries could exceed the smallest maximum the table can have.
 *
 * NOTE: the kernel sizes a table from the rule that created it. Rules that share a hashlimit
 * name keep the first rule's size and maximum, which may differ from this rule's inputs.
 */
export async function warnWhenTableFilling(
  host: Pick<Host, "address" | "run">,
  inputs: Record<string, unknown>,
  entries: number,
): Promise<void> {
  const htableSize = typeof inputs.htableSize === "number" ? inputs.htableSize : undefined;
  const htableMax = typeof inputs.htableMax === "number" ? inputs.htableMax : undefined;
  const smallestMax = effectiveHtableMax(htableSize ?? MIN_HTABLE_SIZE, htableMax);
  if (entries <= smallestMax * ENTRIES_WARNING_RATIO) return;

  let size = htableSize;
  if (size === undefined) {
    const meminfo = await host.run(["cat", "/proc/meminfo"], { allowFailure: true });
    const memTotal = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo.stdout);
    // Without the memory size the maximum is unknown, and a warning could be wrong.
    if (memTotal === null) return;
    size = defaultHtableSize(Number(memTotal[1]) * 1024);
  }

  const warning = entriesWarning({
    address: host.address,
    family: String(inputs.family),
    hashlimitName: String(inputs.hashlimitName),
    entries,
    max: effectiveHtableMax(size, htableMax),
  });
  if (warning !== undefined) console.log(warning);
}
