/**
 * The host-side sh scripts that read and change one netfilter table, and the parsing of what
 * they print.
 *
 * The scripts are constant text run as `sh -c SCRIPT NAME ARGS...`: every value (program
 * paths, table name, hashes, timeouts) arrives as a positional argument and the restore input
 * arrives on standard input, so nothing a user typed is ever parsed by a shell.
 *
 * Output framing: status lines start with a random nonce chosen per call, and the table dump,
 * when there is one, comes last, after a `NONCE table` line.
 *
 * Each script starts as few programs as it can, because on a loaded host every fork and exec
 * costs more than the network round trip. The table hash is therefore computed on the host only
 * where the compare-and-swap needs it, and by `tableHash` here for dumps this side received.
 */
import { createHash } from "node:crypto";

/** Directory for rollback state on the host; /run is a tmpfs cleared at boot. */
export const RUN_DIRECTORY = "/run/pulumi-iptables";

/** Returns the lock file of one table, held from the read of the live state to the end of the write. */
export function lockFilePath(family: string, table: string): string {
  return `/run/pulumi-iptables.${family}.${table}.lock`;
}

/** Returns the file that keeps the table as it was before the last change, under the lock. */
export function beforeFilePath(family: string, table: string): string {
  return `${RUN_DIRECTORY}/${family}.${table}.before`;
}

const PRELUDE = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
`;

/**
 * The normalisation `tableHash` mirrors: comment lines dropped, the `[packets:bytes]` of rules
 * and chains removed, so that the hash changes only when the rule set does.
 */
const NORMALISE_AWK = `!/^#/ { sub(/^\\[[0-9]+:[0-9]+\\] /, ""); sub(/ \\[[0-9]+:[0-9]+\\]$/, ""); print }`;

/** Stops a watchdog by its process group and removes its state files. */
const DISARM_FUNCTION = `
disarm_watchdog() {
  i=0
  while [ ! -s "$1/$2.pid" ] && [ "$i" -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
  read -r pid < "$1/$2.pid" 2>/dev/null
  # dash's kill takes no "--": a negative number after the signal names the process group.
  if [ -n "$pid" ]; then kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; fi
  rm -f "$1/$2.pid"
}
`;

/** Prints the `-c` dump of one table. Arguments: save program, table. */
export const READ_SCRIPT = `${PRELUDE}
exec "$1" -c -t "$2"
`;

/**
 * Applies a restore script to one table if the table still has the expected hash
 * (compare-and-swap), under the host-side lock, optionally arming the rollback first.
 *
 * Arguments: save, restore, table, lock file, nonce, expected hash, lock wait seconds,
 * rollback seconds (0: no rollback), rollback token, run directory, before file, watchdog
 * script, mode ("apply", or "verify" to only check the hash).
 * Standard input: the restore script, read by iptables-restore itself, which commits only at
 * COMMIT, so input cut short in transfer changes nothing.
 *
 * Status lines: "conflict" with the current table; "unchanged"; "armed"; "rejected CODE" with
 * iptables-restore's message on standard error; "applied" with the table read back.
 * Exit codes: 71 lock file not writable, 72 lock wait timed out, 73 save failed,
 * 75 rollback could not be armed.
 */
export const APPLY_SCRIPT = `${PRELUDE}${DISARM_FUNCTION}
save=$1 restore=$2 table=$3 lock=$4 nonce=$5 expected=$6 wait=$7
rollback=$8 token=$9 dir=\${10} before=\${11} watchdog=\${12} mode=\${13} keep=\${14}
umask 077
exec 9>>"$lock" || exit 71
flock -w "$wait" 9 || exit 72
[ -d "$dir" ] || mkdir -p "$dir" || exit 75
"$save" -c -t "$table" > "$before" || exit 73
hash=$(awk '${NORMALISE_AWK}' "$before" | sha256sum)
if [ "$hash" != "$expected  -" ]; then
  printf '%s status conflict\\n%s table\\n' "$nonce" "$nonce"
  exec cat "$before"
fi
if [ "$mode" = verify ]; then
  printf '%s status unchanged\\n' "$nonce"
  exit 0
fi
if [ "$rollback" != 0 ]; then
  : > "$dir/$token.armed" || exit 75
  # A new session, so that neither the end of this SSH session nor a hangup stops the
  # watchdog. It inherits descriptor 9 and with it the table lock, which it holds until
  # it is disarmed or has restored the table.
  setsid sh -c "$watchdog" watchdog "$dir" "$token" "$rollback" "$restore" "$before" </dev/null >/dev/null 2>&1 &
  printf '%s status armed\\n' "$nonce"
fi
if [ "$keep" = 1 ]; then
  # Built-in chains declared after the steps (before COMMIT) keep their rules, and take the
  # policy and counters saved above under the lock instead of zeroed counters.
  { sed '$d'; grep -E '^:[A-Z]+ (ACCEPT|DROP) \\[[0-9]+:[0-9]+\\]$' "$before"; echo COMMIT; } |
    "$restore" -w -c --noflush
else
  "$restore" -w --noflush
fi
code=$?
if [ "$code" != 0 ]; then
  if [ "$rollback" != 0 ] && mv "$dir/$token.armed" "$dir/$token.cancelled" 2>/dev/null; then
    disarm_watchdog "$dir" "$token"
    rm -f "$dir/$token.cancelled"
  fi
  printf '%s status rejected %s\\n' "$nonce" "$code"
  exit 0
fi
printf '%s status applied\\n%s table\\n' "$nonce" "$nonce"
exec "$save" -c -t "$table"
`;

/**
 * The detached rollback process: after the timeout it restores the saved table, unless a
 * disarm claimed the token first. Claims are renames of "TOKEN.armed", so exactly one of the
 * watchdog, the disarm and a rejected apply wins.
 * Arguments: run directory, token, seconds, restore program, before file.
 */
export const WATCHDOG_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
dir=$1 token=$2 seconds=$3 restore=$4 before=$5
echo "$$" > "$dir/$token.pid"
# sleep must not keep descriptor 9: killing this shell has to release the table lock.
sleep "$seconds" 9>&-
if mv "$dir/$token.armed" "$dir/$token.firing" 2>/dev/null; then
  "$restore" -w -c < "$before" > "$dir/$token.firing" 2>&1
  echo "exit $?" >> "$dir/$token.firing"
  mv "$dir/$token.firing" "$dir/$token.fired"
fi
rm -f "$dir/$token.pid"
# Outcomes nobody collected (their client died) are removed after a day.
find "$dir" -type f -name '*.fired' -mmin +1440 -exec rm -f {} + 2>/dev/null
`;

/**
 * Disarms a rollback. Prints "confirmed", or "rolled-back" when the watchdog fired first, or
 * "unknown" when no state is left. Arguments: run directory, token.
 */
export const DISARM_SCRIPT = `${PRELUDE}${DISARM_FUNCTION}
dir=$1 token=$2
if mv "$dir/$token.armed" "$dir/$token.confirmed" 2>/dev/null; then
  disarm_watchdog "$dir" "$token"
  rm -f "$dir/$token.confirmed"
  echo confirmed
elif [ -e "$dir/$token.fired" ] || [ -e "$dir/$token.firing" ]; then
  echo rolled-back
else
  echo unknown
fi
`;

/**
 * Waits until the watchdog has released the table lock (it fired, or it was disarmed), then
 * reports its outcome and the table as it is now. When the watchdog is gone without firing (it
 * was killed), this script rolls back in its place.
 * Arguments: save, restore, table, lock file, nonce, wait seconds, run directory, token,
 * before file.
 */
export const AWAIT_ROLLBACK_SCRIPT = `${PRELUDE}
save=$1 restore=$2 table=$3 lock=$4 nonce=$5 wait=$6 dir=$7 token=$8 before=$9
exec 9>>"$lock" || exit 71
flock -w "$wait" 9 || exit 72
if mv "$dir/$token.armed" "$dir/$token.firing" 2>/dev/null; then
  "$restore" -w -c < "$before" > "$dir/$token.firing" 2>&1
  echo "exit $?" >> "$dir/$token.firing"
  mv "$dir/$token.firing" "$dir/$token.fired"
  rm -f "$dir/$token.pid"
fi
if [ -e "$dir/$token.fired" ]; then
  printf '%s status fired\\n' "$nonce"
  sed "s/^/$nonce restore-output /" "$dir/$token.fired"
  rm -f "$dir/$token.fired"
else
  printf '%s status not-fired\\n' "$nonce"
fi
printf '%s table\\n' "$nonce"
exec "$save" -c -t "$table"
`;

/**
 * Hashes a table dump as the apply script does on the host: SHA-256 of the dump with comment
 * lines dropped and counters removed, each line ending in a newline.
 */
export function tableHash(dump: string): string {
  const lines = dump.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const normalised = lines
    .filter((line) => !line.startsWith("#"))
    .map(
      (line) => `${line.replace(/^\[[0-9]+:[0-9]+\] /, "").replace(/ \[[0-9]+:[0-9]+\]$/, "")}\n`,
    )
    .join("");
  return createHash("sha256").update(normalised, "utf8").digest("hex");
}

/** The parts of a framed script output: status words, key-value lines and the trailing table dump. */
export interface FramedOutput {
  /** The words of the last status line, such as ["rejected", "2"]. */
  readonly status: readonly string[];
  /** Every status line in order, such as [["armed"], ["applied"]]. */
  readonly statuses: readonly (readonly string[])[];
  /** The dump after the `NONCE table` line, when there was one. */
  readonly table?: string;
  /** Other `NONCE key value` lines, by key, in order. */
  readonly values: ReadonlyMap<string, readonly string[]>;
}

/** Splits a framed script output; lines before the first nonce line are ignored. */
export function parseFramedOutput(stdout: string, nonce: string): FramedOutput {
  const statuses: string[][] = [];
  const values = new Map<string, string[]>();
  let table: string | undefined;

  const prefix = `${nonce} `;
  let offset = 0;
  while (offset < stdout.length) {
    const end = stdout.indexOf("\n", offset);
    const line = stdout.slice(offset, end === -1 ? stdout.length : end);
    offset = end === -1 ? stdout.length : end + 1;
    if (line === `${nonce} table`) {
      table = stdout.slice(offset);
      break;
    }
    if (!line.startsWith(prefix)) continue;
    const rest = line.slice(prefix.length);
    const space = rest.indexOf(" ");
    const key = space === -1 ? rest : rest.slice(0, space);
    const value = space === -1 ? "" : rest.slice(space + 1);
    if (key === "status") statuses.push(value.split(" ").filter((word) => word.length > 0));
    else values.set(key, [...(values.get(key) ?? []), value]);
  }
  return { status: statuses.at(-1) ?? [], statuses, table, values };
}
