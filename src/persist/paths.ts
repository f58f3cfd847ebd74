/**
 * Where the persistence files live on a managed host.
 *
 * Everything the rule persistence writes sits in one folder plus the init system's own file, so
 * deleting a PersistenceUnit removes exactly these paths. The conntrack files use the standard
 * drop-in folders, which systemd and kmod read at boot.
 */
import type { Family } from "../netfilter/types";

/** The folder that holds the rules files and the restore script. */
export const PERSIST_DIR = "/etc/pulumi-iptables";

/** The rules file of each family, an `iptables-restore` input rendered from the desired rules. */
export const RULES_PATHS: Readonly<Record<Family, string>> = {
  ipv4: `${PERSIST_DIR}/rules.v4`,
  ipv6: `${PERSIST_DIR}/rules.v6`,
};

/** The script the boot job runs to apply a rules file without duplicating rules already present. */
export const RESTORE_SCRIPT_PATH = `${PERSIST_DIR}/restore.sh`;

/** The systemd unit name and path of the boot-time restore. */
export const SYSTEMD_UNIT_NAME = "pulumi-iptables.service";
export const SYSTEMD_UNIT_PATH = `/etc/systemd/system/${SYSTEMD_UNIT_NAME}`;

/** The upstart job name and path of the boot-time restore. */
export const UPSTART_JOB_NAME = "pulumi-iptables";
export const UPSTART_JOB_PATH = `/etc/init/${UPSTART_JOB_NAME}.conf`;

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
