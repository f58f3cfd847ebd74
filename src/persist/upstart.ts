/**
 * The upstart job that restores the managed rules at boot, for hosts such as Ubuntu 14.04.
 *
 * Upstart blocks a job that emits `starting X` until every task started by that event has
 * finished (init(5), "starting"), so starting on the network jobs' `starting` events keeps
 * interfaces down until the rules are in. Which of those jobs exists differs between releases,
 * so the job starts on any of them; a second run is harmless because the restore script is
 * idempotent.
 */
import { checkJobs } from "./systemd";
import { restoreArgv, type RestoreJob } from "./restore-script";

/** The jobs whose start the restore runs before. */
export const UPSTART_START_EVENTS = [
  "starting network-interfaces",
  "starting networking",
  "starting network-manager",
] as const;

/**
 * Renders the job file (/etc/init/NAME.conf) of the boot job `name`, which runs the restore
 * script at `scriptPath`. Its `script` section runs under `sh -e`, so the first family that
 * fails stops the job with an error.
 *
 * Throws INVALID_INPUT when `jobs` is empty or lists a family twice, or a path is invalid.
 */
export function renderUpstartJob(
  name: string,
  scriptPath: string,
  jobs: readonly RestoreJob[],
): string {
  checkJobs(jobs);
  return [
    "# Rendered by pulumi-iptables; the next pulumi up overwrites this file.",
    `description "Restore the iptables rules of pulumi-iptables boot job ${name}"`,
    "",
    `start on (${UPSTART_START_EVENTS.join("\n          or ")})`,
    "task",
    "",
    "script",
    ...jobs.map((job) => `  ${restoreArgv(job, scriptPath).join(" ")}`),
    "end script",
    "",
  ].join("\n");
}
