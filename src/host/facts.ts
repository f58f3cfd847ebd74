/**
 * Host facts: iptables version and backend, the binaries of that backend, the init system,
 * kernel support for hashlimit and conntrack, and whether conntrack can be sized.
 *
 * One POSIX sh script collects every fact in one round trip; `parseFacts` turns its
 * `key=value` lines into `HostFacts`.
 */
import { IptablesError } from "../errors";
import type { Backend, Family } from "../netfilter/types";

/** The save and restore programs of one family for the host's backend. */
export interface TableBinaries {
  readonly save: string;
  readonly restore: string;
}

export interface HostFacts {
  /** The version `iptables -V` prints, such as "1.8.9". */
  readonly iptablesVersion: string;
  readonly backend: Backend;
  /**
   * Whether the other backend also has rules. Those rules still filter packets but are
   * invisible to the active backend's `iptables-save`.
   */
  readonly otherBackendHasRules: boolean;
  /** Whether ip6tables of the active backend is installed and the kernel has IPv6. */
  readonly ip6tables: boolean;
  /** "systemd" when /run/systemd/system exists, "upstart" when `initctl version` prints upstart. */
  readonly init: "systemd" | "upstart" | "other";
  /** Whether the kernel has xt_hashlimit, loaded, loadable or built in. */
  readonly hashlimitModule: boolean;
  /** Whether the kernel has nf_conntrack, loaded, loadable or built in. */
  readonly conntrackModule: boolean;
  /**
   * Whether net.netfilter.nf_conntrack_max is writable here. It is read-only in every network
   * namespace but the initial one (so in containers), and where /proc/sys is mounted read-only.
   */
  readonly conntrackSizingWritable: boolean;
  /** The kernel release (`uname -r`). */
  readonly kernel: string;
  /** The login shell of the connection's user (`$SHELL`), which runs every command line. */
  readonly loginShell: string;
  /** Save and restore programs per family; ipv6 is absent when `ip6tables` is false. */
  readonly binaries: { readonly ipv4: TableBinaries; readonly ipv6?: TableBinaries };
  /** Helper programs that table changes need. */
  readonly tools: {
    readonly flock: boolean;
    readonly setsid: boolean;
    readonly sha256sum: boolean;
    readonly systemdRun: boolean;
  };
}

const PROGRAMS = [
  "iptables",
  "ip6tables",
  "iptables-save",
  "iptables-restore",
  "ip6tables-save",
  "ip6tables-restore",
  "iptables-nft-save",
  "iptables-nft-restore",
  "ip6tables-nft-save",
  "ip6tables-nft-restore",
  "iptables-legacy-save",
  "iptables-legacy-restore",
  "ip6tables-legacy-save",
  "ip6tables-legacy-restore",
  "flock",
  "setsid",
  "sha256sum",
  "systemd-run",
];

/**
 * The facts script. Every probe only reads: the other backend's rules are listed with its save
 * program, and for iptables-legacy only when the kernel already has its tables, so that the
 * probe never creates legacy tables.
 */
export const FACTS_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
fact() { printf '%s=%s\\n' "$1" "$2"; }
for p in ${PROGRAMS.join(" ")}; do
  found=$(command -v "$p" 2>/dev/null) && fact "path.$p" "$found"
done
fact kernel "$(uname -r 2>/dev/null)"
fact login.shell "\${SHELL:-}"
fact iptables.version "$(iptables -V 2>&1 | head -n 1)"
fact ip6tables.version "$(ip6tables -V 2>&1 | head -n 1)"
[ -e /proc/net/if_inet6 ] && fact ipv6.kernel yes
if [ -d /run/systemd/system ]; then fact init systemd
elif initctl version 2>/dev/null | grep -q upstart; then fact init upstart
else fact init other; fi

config() {
  if [ -r /proc/config.gz ]; then gzip -dc /proc/config.gz 2>/dev/null | grep -Eq "^$1=(y|m)" && return 0; fi
  [ -r "/boot/config-$(uname -r)" ] && grep -Eq "^$1=(y|m)" "/boot/config-$(uname -r)"
}
builtin_module() { grep -q "/$1\\.ko" "/lib/modules/$(uname -r)/modules.builtin" 2>/dev/null; }
loadable_module() { modinfo "$1" >/dev/null 2>&1; }
if grep -qx hashlimit /proc/net/ip_tables_matches 2>/dev/null || [ -d /sys/module/xt_hashlimit ] ||
   builtin_module xt_hashlimit || loadable_module xt_hashlimit || config CONFIG_NETFILTER_XT_MATCH_HASHLIMIT; then
  fact module.hashlimit yes
fi
if [ -d /proc/sys/net/netfilter ] && [ -e /proc/sys/net/netfilter/nf_conntrack_max ] || [ -d /sys/module/nf_conntrack ] ||
   builtin_module nf_conntrack || loadable_module nf_conntrack || config CONFIG_NF_CONNTRACK; then
  fact module.conntrack yes
fi
# The kernel makes this file read-only (mode 0444) outside the initial network namespace, and
# test -w sees that even for root because /proc/sys checks the mode bits itself.
[ -w /proc/sys/net/netfilter/nf_conntrack_max ] && fact conntrack.sizing writable

count_rules() { "$1" 2>/dev/null | grep -c '^-A' ; }
case "$(iptables -V 2>/dev/null)" in
  *nf_tables*)
    for f in ip_tables_names:iptables-legacy-save ip6_tables_names:ip6tables-legacy-save; do
      names=/proc/net/\${f%%:*}; prog=\${f#*:}
      # Files under /proc report size 0, so test -s cannot tell an empty list.
      if grep -q . "$names" 2>/dev/null && command -v "$prog" >/dev/null 2>&1; then
        fact "other.$prog" "$(count_rules "$prog")"
      fi
    done ;;
  *)
    for prog in iptables-nft-save ip6tables-nft-save; do
      command -v "$prog" >/dev/null 2>&1 && fact "other.$prog" "$(count_rules "$prog")"
    done ;;
esac
exit 0
`;

/** Turns the facts script's output into HostFacts; `where` names the host for errors. */
export function parseFacts(output: string, where: string): HostFacts {
  const values = new Map<string, string>();
  for (const line of output.split("\n")) {
    const separator = line.indexOf("=");
    if (separator > 0) values.set(line.slice(0, separator), line.slice(separator + 1));
  }
  const path = (program: string): string | undefined => values.get(`path.${program}`);

  const versionLine = values.get("iptables.version") ?? "";
  const version = /v(\d+(?:\.\d+)+)/.exec(versionLine);
  if (path("iptables") === undefined || version === null) {
    throw new IptablesError(
      "HOST_UNSUPPORTED",
      `iptables is not installed on ${where} (iptables -V printed ${JSON.stringify(versionLine)}): ` +
        `install the iptables package`,
      { details: { host: where } },
    );
  }
  // Before 1.8 there was only the legacy backend, and -V printed no backend name.
  const backend: Backend = versionLine.includes("nf_tables") ? "nft" : "legacy";

  const ipv4 = binariesFor("iptables", backend, path);
  if (ipv4 === undefined) {
    throw new IptablesError(
      "HOST_UNSUPPORTED",
      `${where} has iptables but no iptables-save and iptables-restore for the ${backend} ` +
        `backend: install the complete iptables package`,
      { details: { host: where, backend } },
    );
  }
  const ipv6Binaries = binariesFor("ip6tables", backend, path);
  const ip6tablesVersion = values.get("ip6tables.version") ?? "";
  const ip6tables =
    ipv6Binaries !== undefined &&
    values.get("ipv6.kernel") === "yes" &&
    /v\d/.test(ip6tablesVersion);

  const otherCounts = [...values.entries()]
    .filter(([key]) => key.startsWith("other."))
    .map(([, value]) => Number.parseInt(value, 10));
  const init = values.get("init");

  return {
    iptablesVersion: version[1],
    backend,
    otherBackendHasRules: otherCounts.some((count) => count > 0),
    ip6tables,
    init: init === "systemd" || init === "upstart" ? init : "other",
    hashlimitModule: values.get("module.hashlimit") === "yes",
    conntrackModule: values.get("module.conntrack") === "yes",
    conntrackSizingWritable: values.get("conntrack.sizing") === "writable",
    kernel: values.get("kernel") ?? "",
    loginShell: values.get("login.shell") ?? "",
    binaries: ip6tables ? { ipv4, ipv6: ipv6Binaries } : { ipv4 },
    tools: {
      flock: path("flock") !== undefined,
      setsid: path("setsid") !== undefined,
      sha256sum: path("sha256sum") !== undefined,
      systemdRun: path("systemd-run") !== undefined,
    },
  };
}

/** Returns the save and restore programs of a family, raising HOST_UNSUPPORTED when it has none. */
export function binariesOf(facts: HostFacts, family: Family, where: string): TableBinaries {
  const binaries = facts.binaries[family];
  if (binaries === undefined) {
    throw new IptablesError(
      "HOST_UNSUPPORTED",
      `${where} cannot manage IPv6 rules: ip6tables for the ${facts.backend} backend is not ` +
        `installed or the kernel has IPv6 turned off; install ip6tables or use family "ipv4"`,
      { details: { host: where, family } },
    );
  }
  return binaries;
}

/**
 * Prefers the backend's own programs (iptables-nft-save, iptables-legacy-save) over the
 * unsuffixed names, which the alternatives system may point at the other backend.
 */
function binariesFor(
  command: "iptables" | "ip6tables",
  backend: Backend,
  path: (program: string) => string | undefined,
): TableBinaries | undefined {
  const save = path(`${command}-${backend}-save`) ?? path(`${command}-save`);
  const restore = path(`${command}-${backend}-restore`) ?? path(`${command}-restore`);
  if (save === undefined || restore === undefined) return undefined;
  return { save, restore };
}

/** Login shells that run a POSIX sh script as sh does. */
const POSIX_SHELLS = new Set(["sh", "bash", "dash", "ash", "ksh", "ksh93", "mksh", "busybox"]);

/** Tells whether the login shell can run the library's scripts directly, without `sh -c`. */
export function isPosixShell(loginShell: string): boolean {
  return POSIX_SHELLS.has(loginShell.slice(loginShell.lastIndexOf("/") + 1));
}
