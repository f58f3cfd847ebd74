/**
 * Where the persistence files live on a managed host.
 *
 * Each boot job has a name. Its rules files and restore script sit in one folder of that name,
 * beside the init system's own file, so several jobs on one host (say, one per RateLimit) never
 * overwrite each other, and deleting one removes exactly its paths. The conntrack files use the
 * standard drop-in folders, which systemd and kmod read at boot.
 */
import { IptablesError, quoteForMessage } from "../errors";
import type { Family } from "../netfilter/types";

/** The folder that contains one folder per boot job. */
export const PERSIST_ROOT = "/etc/pulumi-iptables";

/** The paths of one boot job. */
export interface PersistPaths {
  readonly name: string;
  /** The folder of the rules files and the script. */
  readonly dir: string;
  /** The rules file of each family, an `iptables-restore` input rendered from the desired rules. */
  readonly rules: Readonly<Record<Family, string>>;
  /** The script the boot job runs to apply a rules file without duplicating rules. */
  readonly script: string;
  readonly systemdUnitName: string;
  readonly systemdUnitPath: string;
  readonly upstartJobName: string;
  readonly upstartJobPath: string;
}

/** Boot job names: they become part of a unit name and of a path. */
const JOB_NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;

/**
 * Returns the paths of the boot job `name`.
 *
 * Throws INVALID_INPUT when the name is not 1 to 40 lowercase letters, digits and "-".
 */
export function persistPaths(name: string): PersistPaths {
  if (!JOB_NAME.test(name)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `boot job name ${quoteForMessage(name)} is invalid: use 1 to 40 lowercase letters, digits ` +
        `and "-", starting with a letter or digit`,
      { details: { field: "name", value: name } },
    );
  }
  const dir = `${PERSIST_ROOT}/${name}`;
  const unit = `pulumi-iptables-${name}`;
  return {
    name,
    dir,
    rules: { ipv4: `${dir}/rules.v4`, ipv6: `${dir}/rules.v6` },
    script: `${dir}/restore.sh`,
    systemdUnitName: `${unit}.service`,
    systemdUnitPath: `/etc/systemd/system/${unit}.service`,
    upstartJobName: unit,
    upstartJobPath: `/etc/init/${unit}.conf`,
  };
}

/**
 * The folder of the per-table lock files (`pulumi-iptables.FAMILY.TABLE.lock`) that the restore
 * script shares with the library's changes over SSH, so a manual restart of the boot job never
 * interleaves with a `pulumi up` on the same host.
 */
export const HOST_LOCK_DIRECTORY = "/run";

/**
 * The conntrack sizing files. The "90-" prefix orders the sysctl file after the distribution's
 * defaults and before /etc/sysctl.conf (read as 99-sysctl.conf on Debian), so an administrator's
 * own setting there still wins.
 */
export const SYSCTL_PATH = "/etc/sysctl.d/90-pulumi-iptables-conntrack.conf";
export const MODULES_LOAD_PATH = "/etc/modules-load.d/pulumi-iptables-conntrack.conf";
export const MODPROBE_PATH = "/etc/modprobe.d/pulumi-iptables-conntrack.conf";
