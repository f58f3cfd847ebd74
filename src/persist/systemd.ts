/**
 * The systemd unit that restores the managed rules at boot.
 *
 * Ordering, from systemd.special(7): network-pre.target is the point before which firewall rules
 * are set up, and it is only pulled into the boot when a unit that must run before it wants it,
 * hence both `Wants=` and `Before=`. `DefaultDependencies=no` lets the unit run before
 * sysinit.target completes, so it needs `After=local-fs.target` for /etc and /run to be there.
 * `After=systemd-modules-load.service` lets the modules listed in /etc/modules-load.d, such as
 * nf_conntrack, and the sysctl values that depend on them be in place first.
 * `RemainAfterExit=yes` keeps the unit active after the restore, so `systemctl is-active` shows
 * whether the rules were restored in this boot.
 */
import { IptablesError } from "../errors";
import { restoreArgv, type RestoreJob } from "./restore-script";

/**
 * Renders the unit file of the boot job `name`, which runs the restore script at `scriptPath`.
 * One `ExecStart=` line per family, run in order; if one fails, the unit fails and the later
 * families are not restored.
 *
 * Throws INVALID_INPUT when `jobs` is empty or lists a family twice, or a path is invalid.
 */
export function renderSystemdUnit(
  name: string,
  scriptPath: string,
  jobs: readonly RestoreJob[],
): string {
  checkJobs(jobs);
  const execLines = jobs.map((job) => `ExecStart=${restoreArgv(job, scriptPath).join(" ")}`);
  return [
    "# Rendered by pulumi-iptables; the next pulumi up overwrites this file.",
    "[Unit]",
    `Description=Restore the iptables rules of pulumi-iptables boot job ${name}`,
    "DefaultDependencies=no",
    "Wants=network-pre.target",
    "Before=network-pre.target shutdown.target",
    "After=systemd-modules-load.service local-fs.target",
    "Conflicts=shutdown.target",
    "",
    "[Service]",
    "Type=oneshot",
    "RemainAfterExit=yes",
    ...execLines,
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** Checks that a boot job restores at least one family and each family once. */
export function checkJobs(jobs: readonly RestoreJob[]): void {
  if (jobs.length === 0) {
    throw new IptablesError(
      "INVALID_INPUT",
      "the boot job needs at least one family to restore: persist at least one rule or chain",
      { details: { field: "jobs" } },
    );
  }
  const families = new Set(jobs.map((job) => job.family));
  if (families.size !== jobs.length) {
    throw new IptablesError(
      "INVALID_INPUT",
      "the boot job lists a family twice: give one job per family",
      { details: { field: "jobs" } },
    );
  }
}
