/**
 * Everything the boot-time restore needs on a host, rendered in one call: the rules file of each
 * family, the restore script, and the systemd unit or upstart job that runs it.
 */
import { IptablesError } from "../errors";
import { FAMILIES, type Family } from "../netfilter/types";
import {
  RESTORE_SCRIPT_PATH,
  RULES_PATHS,
  SYSTEMD_UNIT_NAME,
  SYSTEMD_UNIT_PATH,
  UPSTART_JOB_NAME,
  UPSTART_JOB_PATH,
} from "./paths";
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

/** The backend programs of one family, without the rules path, which is fixed per family. */
export type FamilyCommands = Omit<RestoreJob, "family" | "rulesPath">;

export interface PersistenceRequest {
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
  /** Files to write, in the order to write them (the job file last). Empty: nothing to persist. */
  readonly files: readonly PersistFile[];
  /** Every path this library may have written for the boot job, for removal on delete. */
  readonly allPaths: readonly string[];
  readonly skipped: readonly SkippedRule[];
}

/**
 * Renders the boot-time restore for a host.
 *
 * Throws INIT_UNSUPPORTED for an init system other than systemd or upstart, and INVALID_INPUT
 * when a family has rules but no commands, or any rule, chain or path is invalid.
 */
export function renderPersistence(request: PersistenceRequest): PersistencePlan {
  const init = checkInit(request.init);
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
    files.push({ path: RULES_PATHS[family], content: rules.content, mode: 0o644 });
    jobs.push({ family, ...commands });
  }

  const jobName = init === "systemd" ? SYSTEMD_UNIT_NAME : UPSTART_JOB_NAME;
  const jobPath = init === "systemd" ? SYSTEMD_UNIT_PATH : UPSTART_JOB_PATH;
  const allPaths = [...FAMILIES.map((family) => RULES_PATHS[family]), RESTORE_SCRIPT_PATH, jobPath];
  if (jobs.length === 0) return { init, jobName, files: [], allPaths, skipped };

  files.push({ path: RESTORE_SCRIPT_PATH, content: RESTORE_SCRIPT, mode: 0o755 });
  files.push({
    path: jobPath,
    content: init === "systemd" ? renderSystemdUnit(jobs) : renderUpstartJob(jobs),
    mode: 0o644,
  });
  return { init, jobName, files, allPaths, skipped };
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
