/**
 * Everything a boot job needs on a host, rendered in one call: the rules file of each family,
 * the restore script, and the systemd unit or upstart job that runs it.
 */
import { IptablesError } from "../errors";
import { FAMILIES, type Family } from "../netfilter/types";
import { persistPaths, type PersistPaths } from "./paths";
import { RESTORE_SCRIPT, type RestoreJob } from "./restore-script";
import { renderRulesFile, type PersistedTable, type SkippedRule } from "./rules-file";
import { renderSystemdUnit } from "./systemd";
import { renderUpstartJob } from "./upstart";

/** The init system of a host, as the host layer detects it. */
export type InitSystem = "systemd" | "upstart" | "other";

/** A file to write on the host. */
export interface PersistFile {
  readonly path: string;
  readonly content: string;
  /** Permission bits, such as 0o644. */
  readonly mode: number;
}

/** The backend programs of one family. */
export type FamilyCommands = Omit<RestoreJob, "family" | "rulesPath">;

export interface PersistenceRequest {
  /** The boot job's name: 1 to 40 lowercase letters, digits and "-". */
  readonly name: string;
  readonly init: InitSystem;
  /** The managed chains and rules of each family; a family left out or empty is not restored. */
  readonly tables: Readonly<Partial<Record<Family, readonly PersistedTable[]>>>;
  /** The host's backend programs of each family that has rules. */
  readonly commands: Readonly<Partial<Record<Family, FamilyCommands>>>;
}

export interface PersistencePlan {
  readonly init: "systemd" | "upstart";
  /** The unit name for systemctl, or the job name for initctl. */
  readonly jobName: string;
  /** The unit or job file. */
  readonly jobPath: string;
  /** The folder of the rules files and the script. */
  readonly dir: string;
  /** Every path of the job, whichever init system it is for. */
  readonly paths: PersistPaths;
  /** Files to write, in the order to write them (the job file last). Empty: nothing to persist. */
  readonly files: readonly PersistFile[];
  /** Every file this boot job may have written, for removal on delete. */
  readonly allPaths: readonly string[];
  readonly skipped: readonly SkippedRule[];
}

/**
 * Renders the boot job `request.name` for a host.
 *
 * Throws INIT_UNSUPPORTED for an init system other than systemd or upstart, and INVALID_INPUT
 * when the name is invalid, a family has rules but no commands, or any rule, chain or path is
 * invalid.
 */
export function renderPersistence(request: PersistenceRequest): PersistencePlan {
  const init = checkInit(request.init);
  const paths = persistPaths(request.name);
  const files: PersistFile[] = [];
  const jobs: RestoreJob[] = [];
  const skipped: SkippedRule[] = [];

  for (const family of FAMILIES) {
    const rules = renderRulesFile(family, request.tables[family] ?? []);
    skipped.push(...rules.skipped);
    if (rules.tables.length === 0) continue;
    const commands = request.commands[family];
    if (commands === undefined) {
      throw new IptablesError(
        "INVALID_INPUT",
        `${family} rules are to be persisted but the host's ${family} save and restore ` +
          `programs are not known: install ${family === "ipv4" ? "iptables" : "ip6tables"} on the host`,
        { details: { field: "commands", family } },
      );
    }
    files.push({ path: paths.rules[family], content: rules.content, mode: 0o644 });
    jobs.push({ family, rulesPath: paths.rules[family], ...commands });
  }

  const jobName = init === "systemd" ? paths.systemdUnitName : paths.upstartJobName;
  const jobPath = init === "systemd" ? paths.systemdUnitPath : paths.upstartJobPath;
  const allPaths = [paths.rules.ipv4, paths.rules.ipv6, paths.script, jobPath];
  const plan = { init, jobName, jobPath, dir: paths.dir, paths, allPaths, skipped };
  if (jobs.length === 0) return { ...plan, files: [] };

  const job =
    init === "systemd"
      ? renderSystemdUnit(request.name, paths.script, jobs)
      : renderUpstartJob(request.name, paths.script, jobs);
  files.push({ path: paths.script, content: RESTORE_SCRIPT, mode: 0o755 });
  files.push({ path: jobPath, content: job, mode: 0o644 });
  return { ...plan, files };
}

function checkInit(init: InitSystem): "systemd" | "upstart" {
  if (init === "systemd" || init === "upstart") return init;
  throw new IptablesError(
    "INIT_UNSUPPORTED",
    `the host's init system is neither systemd nor upstart, so pulumi-iptables cannot install a ` +
      `boot-time restore there: set persist to false and restore the rules with the host's own ` +
      `mechanism, or run the host with systemd`,
    { details: { field: "init", value: init } },
  );
}
