/**
 * The sysctl.d file that sets kernel parameters at boot.
 *
 * systemd-sysctl and procps' `sysctl --system` read "key = value" lines; later files override
 * earlier ones (sysctl.d(5)). Keys are written in sorted order so that the same settings always
 * render the same bytes.
 */
import { IptablesError, quoteForMessage } from "../errors";

/** A sysctl value: an integer, or text such as a list of integers separated by spaces. */
export type SysctlValue = number | bigint | string;

/** A dotted sysctl key such as `net.netfilter.nf_conntrack_max`. */
const SYSCTL_KEY = /^[a-z0-9_-]+(\.[a-z0-9_-]+)+$/;
/** Printable text without "#" or ";", which start a comment in sysctl.d files. */
const SYSCTL_TEXT = /^[\x20-\x22\x24-\x3a\x3c-\x7e]+$/;

/**
 * Renders a sysctl.d file that sets `settings`, with a header naming `owner`.
 *
 * Throws INVALID_INPUT when a key is not a dotted sysctl name or a value is not a non-negative
 * integer or printable text.
 */
export function renderSysctlConf(
  owner: string,
  settings: Readonly<Record<string, SysctlValue>>,
): string {
  const keys = Object.keys(settings).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const lines = keys.map((key) => `${checkKey(key)} = ${formatValue(key, settings[key])}`);
  return [
    `# ${owner}, rendered by pulumi-iptables; the next pulumi up overwrites this file.`,
    ...lines,
    "",
  ].join("\n");
}

/** Turns a dotted sysctl key into its path under /proc/sys. */
export function sysctlPath(key: string): string {
  return `/proc/sys/${checkKey(key).replace(/\./g, "/")}`;
}

function checkKey(key: string): string {
  if (!SYSCTL_KEY.test(key)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `sysctl key ${quoteForMessage(key)} is invalid: use a dotted name of lowercase letters, ` +
        `digits, "_" and "-", such as net.netfilter.nf_conntrack_max`,
      { details: { field: "settings", value: key } },
    );
  }
  return key;
}

function formatValue(key: string, value: SysctlValue): string {
  if (typeof value === "bigint" && value >= 0n) return value.toString();
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return String(value);
  if (typeof value === "string" && SYSCTL_TEXT.test(value) && value.trim() === value) return value;
  throw new IptablesError(
    "INVALID_INPUT",
    `sysctl ${key} value ${quoteForMessage(String(value))} is invalid: use a non-negative ` +
      `integer, or printable text without "#", ";" or surrounding spaces`,
    { details: { field: "settings", key, value: String(value) } },
  );
}
