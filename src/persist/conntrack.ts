/**
 * Conntrack sizing at boot: which sysctl.d, modules-load.d and modprobe.d files set it, and the
 * sizing guidance ConntrackSysctl checks.
 *
 * At boot systemd-modules-load loads nf_conntrack from modules-load.d before systemd-sysctl
 * applies sysctl.d; without it the conntrack keys do not exist yet and systemd-sysctl skips them.
 * The bucket count also goes to modprobe.d as `options nf_conntrack hashsize=`, which sizes the
 * table when the module loads and is the only way to set it where the buckets sysctl is
 * read-only (kernels before it became writable).
 *
 * NOTE: on upstart hosts the module is loaded at boot only if the distribution's kmod job reads
 * /etc/modules-load.d; the boot tests cover systemd hosts only.
 */
import { renderModprobeOptions, renderModulesLoad } from "./modules";
import { MODPROBE_PATH, MODULES_LOAD_PATH, SYSCTL_PATH } from "./paths";
import { renderSysctlConf } from "./sysctl";
import type { PersistFile } from "./boot-job";

export const CONNTRACK_MAX_KEY = "net.netfilter.nf_conntrack_max";
export const CONNTRACK_BUCKETS_KEY = "net.netfilter.nf_conntrack_buckets";
export const CONNTRACK_COUNT_KEY = "net.netfilter.nf_conntrack_count";
/** The module parameter that sets the bucket count when the sysctl is read-only. */
export const HASHSIZE_PARAMETER_PATH = "/sys/module/nf_conntrack/parameters/hashsize";

/**
 * The ratio of `max` to `buckets` the guidance aims at. The kernel sized max at 4 times the
 * buckets before Linux 5.15 (nf_conntrack_core.c, max_factor); each connection sits in two hash
 * chains (original and reply direction), so this gives chains of 8 entries on average.
 */
export const RECOMMENDED_MAX_PER_BUCKET = 4;

/** The desired conntrack settings of a host. */
export interface ConntrackSettings {
  readonly max?: number;
  readonly buckets?: number;
  /** Other `net.netfilter.nf_conntrack_*` keys, by full key. */
  readonly settings?: Readonly<Record<string, number>>;
}

/**
 * Returns a warning when `max` is more than 4 times away from 4 x `buckets`, else undefined.
 * Far fewer entries than buckets wastes memory on empty buckets; far more makes long hash
 * chains, and Linux 5.15 and later refuse new connections once a chain reaches 64 entries.
 */
export function sizingWarning(max: number, buckets: number): string | undefined {
  const ratio = max / buckets;
  const low = RECOMMENDED_MAX_PER_BUCKET / 4;
  const high = RECOMMENDED_MAX_PER_BUCKET * 4;
  if (ratio >= low && ratio <= high) return undefined;
  const suggestion = Math.max(1, Math.round(max / RECOMMENDED_MAX_PER_BUCKET));
  return (
    `nf_conntrack_max ${max} is ${ratio < low ? "less than" : "more than"} ${ratio < low ? low : high} ` +
    `times the ${buckets} buckets (ratio ${ratio.toFixed(2)}): the usual sizing is max = ` +
    `${RECOMMENDED_MAX_PER_BUCKET} x buckets, so set buckets to about ${suggestion} or adjust max`
  );
}

/**
 * Renders the boot files for `desired`. `bucketsSysctlWritable` is whether the buckets
 * sysctl can be written on this host; when not, only modprobe.d carries the bucket count.
 * Returns the files to write; the others of `CONNTRACK_PATHS` are to be removed.
 */
export function renderConntrackFiles(
  desired: ConntrackSettings,
  bucketsSysctlWritable: boolean,
): PersistFile[] {
  const owner = "ConntrackSysctl";
  const sysctl: Record<string, number> = { ...(desired.settings ?? {}) };
  if (desired.max !== undefined) sysctl[CONNTRACK_MAX_KEY] = desired.max;
  if (desired.buckets !== undefined && bucketsSysctlWritable)
    sysctl[CONNTRACK_BUCKETS_KEY] = desired.buckets;

  const files: PersistFile[] = [];
  if (Object.keys(sysctl).length === 0 && desired.buckets === undefined) return files;
  files.push({
    path: MODULES_LOAD_PATH,
    content: renderModulesLoad(owner, ["nf_conntrack"]),
    mode: 0o644,
  });
  if (desired.buckets !== undefined) {
    files.push({
      path: MODPROBE_PATH,
      content: renderModprobeOptions(owner, "nf_conntrack", { hashsize: desired.buckets }),
      mode: 0o644,
    });
  }
  if (Object.keys(sysctl).length > 0) {
    files.push({ path: SYSCTL_PATH, content: renderSysctlConf(owner, sysctl), mode: 0o644 });
  }
  return files;
}

/** Every file ConntrackSysctl may write. */
export const CONNTRACK_PATHS: readonly string[] = [MODULES_LOAD_PATH, MODPROBE_PATH, SYSCTL_PATH];
