/**
 * The script the boot job runs to apply a rules file, and the command line that runs it.
 *
 * Why a script and not a bare `iptables-restore --noflush FILE`: the job also runs on live tables
 * (`systemctl restart`, a second upstart event, a rerun by hand). There a plain restore of the
 * file either fails on `-N` for a chain that exists, or, without `-N`, appends a second copy of
 * every rule in a built-in chain. Declaring the chains with `:NAME - [0:0]` instead would flush
 * them even with `--noflush`, dropping foreign rules. So the script reads each live table first
 * and turns the file into one transaction per table that
 *   - creates only the owned chains that are missing,
 *   - deletes every live rule whose marker id the file lists, wherever it is in the table,
 *   - inserts the file's rules where the planner places a managed rule: just before the first
 *     managed rule of the chain that sorts after it, else just after the last one that sorts
 *     before it, else at the top of the chain.
 * iptables-restore commits a table as a whole or not at all, so a failed run changes nothing in
 * that table, and a second run leaves the same rules as the first. Foreign rules keep their
 * places. Because placement follows marker order, several boot jobs on one host give the same
 * chains whichever runs first.
 *
 * The script is plain POSIX sh and awk (dash and mawk run it) because it runs before the
 * network is up and on hosts as old as Ubuntu 14.04. It is the same for every host; the
 * host-specific parts (the backend's programs and options) are its arguments.
 */
import { IptablesError, quoteForMessage } from "../errors";
import type { Family } from "../netfilter/types";
import { HOST_LOCK_DIRECTORY } from "./paths";

/** The programs and rules file of one family's restore. */
export interface RestoreJob {
  readonly family: Family;
  /** The family's rules file. */
  readonly rulesPath: string;
  /** Absolute path of the backend's save program, such as `/usr/sbin/iptables-nft-save`. */
  readonly saveCommand: string;
  /** Absolute path of the backend's restore program, such as `/usr/sbin/iptables-nft-restore`. */
  readonly restoreCommand: string;
  /** Whether the restore program accepts `--wait` (iptables 1.6.2 and later). */
  readonly wait: boolean;
}

/** Characters allowed in the paths of a job: they need no quoting in a unit, a job or sh. */
const SAFE_PATH = /^\/[A-Za-z0-9_.+/-]*$/;

/**
 * Builds the argv that applies one family's rules file through the restore script at
 * `scriptPath`. Append `--test` to check the file against the live tables without changing them.
 *
 * Throws INVALID_INPUT when a path is not absolute or has characters that need quoting.
 */
export function restoreArgv(job: RestoreJob, scriptPath: string): string[] {
  for (const [field, path] of [
    ["scriptPath", scriptPath],
    ["rulesPath", job.rulesPath],
    ["saveCommand", job.saveCommand],
    ["restoreCommand", job.restoreCommand],
  ] as const) {
    if (!SAFE_PATH.test(path) || path.includes("..")) {
      throw new IptablesError(
        "INVALID_INPUT",
        `${field} ${quoteForMessage(path)} is invalid: use an absolute path of letters, digits ` +
          `and "_", ".", "+", "/", "-"`,
        { details: { field, value: path } },
      );
    }
  }
  const options = job.wait ? ["--noflush", "--wait"] : ["--noflush"];
  return [
    "/bin/sh",
    scriptPath,
    job.family,
    job.rulesPath,
    job.saveCommand,
    job.restoreCommand,
    ...options,
  ];
}

/**
 * The awk program that merges the live dump of one table (`only`) and the rules file into the
 * restore input of that table. It reads the live dump, a separator line, then the rules file,
 * and checks every section of the file. It contains no single quote, because the script passes
 * it to awk in single quotes.
 */
const MERGE_PROGRAM = String.raw`
# Returns the id of the last marker comment of a line ("" for a foreign rule) and sets
# markerOrder. The library writes its marker as the last comment of a rule.
function parseMarker(line,    rest, token, id) {
  id = ""
  markerOrder = 0
  rest = line
  while (match(rest, /--comment "?pulumi-iptables:[A-Za-z0-9_.\/-]+:-?[0-9]+/)) {
    token = substr(rest, RSTART, RLENGTH)
    rest = substr(rest, RSTART + RLENGTH)
    sub(/^--comment "?pulumi-iptables:/, "", token)
    markerOrder = token
    sub(/^.*:/, "", markerOrder)
    markerOrder = markerOrder + 0
    sub(/:-?[0-9]+$/, "", token)
    id = token
  }
  return id
}
# Tells whether marker (order1, id1) sorts before (order2, id2): by order, then by id.
function sortsBefore(order1, id1, order2, id2) {
  return order1 < order2 || (order1 == order2 && (id1 "") < (id2 ""))
}
function fail(message) {
  print "pulumi-iptables: " message > "/dev/stderr"
  failed = 1
  exit 1
}
function emit(    i, k, chain, order, id, position, last, count) {
  print "*" table
  for (i = 1; i <= chainCount; i++)
    if (!(chains[i] in liveChain)) print "-N " chains[i]

  # The chains as they are after the deletes: marker id and order per position, "" if foreign.
  split("", size)
  for (i = 1; i <= liveCount; i++) {
    if (liveId[i] != "" && (liveId[i] in wanted)) {
      print "-D" substr(liveRule[i], 3)
      continue
    }
    chain = liveRuleChain[i]
    k = ++size[chain]
    slotId[chain, k] = liveId[i]
    slotOrder[chain, k] = liveOrder[i]
  }

  for (i = 1; i <= ruleCount; i++) {
    chain = ruleChain[i]
    id = ruleId[i]
    order = ruleOrder[i]
    count = size[chain] + 0
    position = 0
    for (k = 1; k <= count; k++) {
      if (slotId[chain, k] != "" && sortsBefore(order, id, slotOrder[chain, k], slotId[chain, k])) {
        position = k
        break
      }
    }
    if (position == 0) {
      last = 0
      for (k = 1; k <= count; k++)
        if (slotId[chain, k] != "" && sortsBefore(slotOrder[chain, k], slotId[chain, k], order, id)) last = k
      position = last + 1
    }
    for (k = count; k >= position; k--) {
      slotId[chain, k + 1] = slotId[chain, k]
      slotOrder[chain, k + 1] = slotOrder[chain, k]
    }
    slotId[chain, position] = id
    slotOrder[chain, position] = order
    size[chain] = count + 1
    print "-I " chain " " position substr(ruleLine[i], length(chain) + 4)
  }
  print "COMMIT"
}
!inRules && $0 == "#pulumi-iptables:end-of-live-tables" { inRules = 1; table = ""; next }
!inRules {
  if (substr($0, 1, 1) == ":") {
    split(substr($0, 2), words, " ")
    liveChain[words[1]] = 1
  } else if (substr($0, 1, 3) == "-A ") {
    split($0, words, " ")
    liveCount++
    liveRule[liveCount] = $0
    liveRuleChain[liveCount] = words[2]
    liveId[liveCount] = parseMarker($0)
    liveOrder[liveCount] = markerOrder
  }
  next
}
{ lineNumber++ }
/^#/ || /^[ \t]*$/ { next }
substr($0, 1, 1) == "*" {
  if (table != "") fail("line " lineNumber " of the rules file opens a table before COMMIT")
  table = substr($0, 2)
  chainCount = 0
  ruleCount = 0
  split("", wanted)
  next
}
table != "" && substr($0, 1, 3) == "-N " { chains[++chainCount] = $2; next }
table != "" && substr($0, 1, 3) == "-A " {
  id = parseMarker($0)
  if (id == "") fail("line " lineNumber " of the rules file has no pulumi-iptables marker")
  ruleCount++
  ruleLine[ruleCount] = $0
  ruleChain[ruleCount] = $2
  ruleId[ruleCount] = id
  ruleOrder[ruleCount] = markerOrder
  wanted[id] = 1
  next
}
table != "" && $0 == "COMMIT" {
  if (table == only) emit()
  table = ""
  next
}
{ fail("line " lineNumber " of the rules file is not a table, -N, -A or COMMIT line") }
END {
  if (failed) exit 1
  if (inRules && table != "") fail("the rules file ends without COMMIT")
}
`;

/**
 * The restore script. Usage:
 * `restore.sh FAMILY RULES_FILE SAVE_COMMAND RESTORE_COMMAND [RESTORE_OPTION...]`.
 */
export const RESTORE_SCRIPT = `#!/bin/sh
# Applies a pulumi-iptables rules file to the live tables without duplicating rules.
# Rendered by pulumi-iptables; the next pulumi up overwrites this file.
#
# Usage: restore.sh FAMILY RULES_FILE SAVE_COMMAND RESTORE_COMMAND [RESTORE_OPTION...]
#
# For each table of the rules file, one restore transaction creates the owned chains that are
# missing, deletes the live rules whose marker id the file lists, and inserts the file's rules
# in marker order among the managed rules of their chains. Running it twice leaves the same
# rules as running it once. A table that fails is left unchanged; the other tables are still
# applied, and the exit status is 1.
set -u
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL

if [ "$#" -lt 4 ]; then
  echo "usage: $0 FAMILY RULES_FILE SAVE_COMMAND RESTORE_COMMAND [RESTORE_OPTION...]" >&2
  exit 2
fi
family=$1
rules=$2
save=$3
shift 3
case "$family" in
  ipv4|ipv6) ;;
  *) echo "pulumi-iptables: family must be ipv4 or ipv6, not $family" >&2; exit 2 ;;
esac
if [ ! -r "$rules" ]; then
  echo "pulumi-iptables: cannot read the rules file $rules" >&2
  exit 1
fi
tables=$(sed -n 's/^[*]\\([a-z]*\\)$/\\1/p' "$rules") || exit 1

# Restores one table under the lock that pulumi-iptables holds while it changes that table
# over SSH, so a rerun by hand never interleaves with a pulumi up.
restore_table() {
  table=$1
  shift
  lock=${HOST_LOCK_DIRECTORY}/pulumi-iptables.$family.$table.lock
  if command -v flock >/dev/null 2>&1 && [ -w ${HOST_LOCK_DIRECTORY} ]; then
    exec 9>>"$lock" || return 1
    if ! flock -w 60 9; then
      echo "pulumi-iptables: timed out after 60 s waiting for $lock" >&2
      return 1
    fi
  fi
  live=$("$save" -t "$table") || return 1
  transaction=$(printf '%s\\n#pulumi-iptables:end-of-live-tables\\n' "$live" | cat - "$rules" |
    awk -v only="$table" '${MERGE_PROGRAM}') || return 1
  if [ -z "$transaction" ]; then
    return 0
  fi
  if ! printf '%s\\n' "$transaction" | "$@"; then
    echo "pulumi-iptables: $* rejected this input for the $table table, built from $rules; the table was not changed:" >&2
    printf '%s\\n' "$transaction" | awk '{ printf "%4d  %s\\n", NR, $0 }' >&2
    return 1
  fi
}

status=0
for table in $tables; do
  # A subshell per table releases the table's lock when it ends.
  ( restore_table "$table" "$@" ) || status=1
done
exit "$status"
`;
