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
 * The table hash ignores comment lines and counters, so it changes only when the rule set does.
 */

/** Directory for rollback state on the host; /run is a tmpfs cleared at boot. */
export const RUN_DIRECTORY = "/run/pulumi-iptables";

/** The host-side lock of one table, held from the read of the live state to the end of the write. */
export function lockFilePath(family: string, table: string): string {
  return `/run/pulumi-iptables.${family}.${table}.lock`;
}

const PRELUDE = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
table_hash() {
  printf '%s\\n' "$1" | sed -e '/^#/d' -e 's/^\\[[0-9]*:[0-9]*\\] //' -e 's/ \\[[0-9]*:[0-9]*\\]$//' |
    sha256sum | cut -d ' ' -f 1
}
emit_table() {
  printf '%s hash %s\\n%s table\\n' "$nonce" "$(table_hash "$1")" "$nonce"
  printf '%s\\n' "$1"
}
`;

/** Stops a watchdog by its process group and removes its state files. */
const DISARM_FUNCTION = `
disarm_watchdog() {
  i=0
  while [ ! -s "$1/$2.pid" ] && [ "$i" -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
  pid=$(cat "$1/$2.pid" 2>/dev/null)
  # dash's kill takes no "--": a negative number after the signal names the process group.
  if [ -n "$pid" ]; then kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; fi
  rm -f "$1/$2.pid" "$1/$2.save"
}
`;

/**
 * Prints the hash and the `-c` dump of one table.
 * Arguments: save program, table, nonce.
 */
export const READ_SCRIPT = `${PRELUDE}
save=$1 table=$2 nonce=$3
dump=$("$save" -c -t "$table") || exit 3
printf '%s status read\\n' "$nonce"
emit_table "$dump"
`;

/**
 * Applies a restore script to one table if the table still has the expected hash
 * (compare-and-swap), under the host-side lock, optionally arming the rollback first.
 *
 * Arguments: save, restore, table, lock file, nonce, expected hash, lock wait seconds,
 * rollback seconds (0: no rollback), rollback token, run directory, watchdog script.
 * Standard input: the restore script ("" to only check the hash).
 *
 * Status lines: "conflict" with the current table; "unchanged"; "rejected CODE" with
 * iptables-restore's message on standard error; "applied" with the table read back.
 * Exit codes: 71 lock file not writable, 72 lock wait timed out, 73 save failed,
 * 74 incomplete input, 75 rollback could not be armed.
 */
export const APPLY_SCRIPT = `${PRELUDE}${DISARM_FUNCTION}
save=$1 restore=$2 table=$3 lock=$4 nonce=$5 expected=$6 wait=$7
rollback=$8 token=$9 dir=\${10} watchdog=\${11}
umask 077
exec 9>>"$lock" || exit 71
flock -w "$wait" 9 || exit 72
current=$("$save" -c -t "$table") || exit 73
if [ "$(table_hash "$current")" != "$expected" ]; then
  printf '%s status conflict\\n' "$nonce"
  emit_table "$current"
  exit 0
fi
# Read all input before changing anything, so a connection cut mid-transfer changes nothing.
input=$(cat)
if [ -z "$input" ]; then
  printf '%s status unchanged\\n' "$nonce"
  exit 0
fi
case "$input" in
  *"
COMMIT") ;;
  *) echo "the restore input does not end with COMMIT: it was cut in transfer" >&2; exit 74 ;;
esac
if [ "$rollback" != 0 ]; then
  mkdir -p "$dir" && chmod 700 "$dir" || exit 75
  find "$dir" -type f -mmin +1440 -exec rm -f {} + 2>/dev/null
  printf '%s\\n' "$current" > "$dir/$token.save" && : > "$dir/$token.armed" || exit 75
  # A new session, so that neither the end of this SSH session nor a hangup stops the
  # watchdog. It inherits descriptor 9 and with it the table lock, which it holds until
  # it is disarmed or has restored the table.
  setsid sh -c "$watchdog" watchdog "$dir" "$token" "$rollback" "$restore" </dev/null >/dev/null 2>&1 &
  printf '%s status armed\\n' "$nonce"
fi
printf '%s\\n' "$input" | "$restore" -w --noflush
code=$?
if [ "$code" != 0 ]; then
  if [ "$rollback" != 0 ] && mv "$dir/$token.armed" "$dir/$token.cancelled" 2>/dev/null; then
    disarm_watchdog "$dir" "$token"
    rm -f "$dir/$token.cancelled"
  fi
  printf '%s status rejected %s\\n' "$nonce" "$code"
  exit 0
fi
after=$("$save" -c -t "$table") || { printf '%s status applied-unread\\n' "$nonce"; exit 0; }
printf '%s status applied\\n' "$nonce"
emit_table "$after"
`;

/**
 * The detached rollback process: after the timeout it restores the saved table, unless a
 * disarm claimed the token first. Claims are renames of "TOKEN.armed", so exactly one of the
 * watchdog, the disarm and a rejected apply wins.
 * Arguments: run directory, token, seconds, restore program.
 */
export const WATCHDOG_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
dir=$1 token=$2 seconds=$3 restore=$4
echo "$$" > "$dir/$token.pid"
# sleep must not keep descriptor 9: killing this shell has to release the table lock.
sleep "$seconds" 9>&-
if mv "$dir/$token.armed" "$dir/$token.firing" 2>/dev/null; then
  "$restore" -w -c < "$dir/$token.save" > "$dir/$token.firing" 2>&1
  echo "exit $?" >> "$dir/$token.firing"
  mv "$dir/$token.firing" "$dir/$token.fired"
fi
rm -f "$dir/$token.pid" "$dir/$token.save"
`;

/**
 * Disarms a rollback. Prints "confirmed", or "rolled-back" and the watchdog's restore output
 * when the watchdog fired first. Arguments: run directory, token.
 */
export const DISARM_SCRIPT = `${DISARM_FUNCTION}
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
 * Arguments: save, restore, table, lock file, nonce, wait seconds, run directory, token.
 */
export const AWAIT_ROLLBACK_SCRIPT = `${PRELUDE}
save=$1 restore=$2 table=$3 lock=$4 nonce=$5 wait=$6 dir=$7 token=$8
exec 9>>"$lock" || exit 71
flock -w "$wait" 9 || exit 72
if mv "$dir/$token.armed" "$dir/$token.firing" 2>/dev/null; then
  "$restore" -w -c < "$dir/$token.save" > "$dir/$token.firing" 2>&1
  echo "exit $?" >> "$dir/$token.firing"
  mv "$dir/$token.firing" "$dir/$token.fired"
  rm -f "$dir/$token.pid" "$dir/$token.save"
fi
if [ -e "$dir/$token.fired" ]; then
  printf '%s status fired\\n' "$nonce"
  sed "s/^/$nonce restore-output /" "$dir/$token.fired"
  rm -f "$dir/$token.fired"
else
  printf '%s status not-fired\\n' "$nonce"
fi
dump=$("$save" -c -t "$table") || exit 73
emit_table "$dump"
`;

/** What a framed script printed: status words, key-value lines and the trailing table dump. */
export interface FramedOutput {
  /** The words of the last status line, such as ["rejected", "2"]. */
  readonly status: readonly string[];
  /** Every status line in order, such as [["armed"], ["applied"]]. */
  readonly statuses: readonly (readonly string[])[];
  readonly hash?: string;
  /** The dump after the `NONCE table` line, when there was one. */
  readonly table?: string;
  /** Other `NONCE key value` lines, by key, in order. */
  readonly values: ReadonlyMap<string, readonly string[]>;
}

/** Splits a framed script output; lines before the first nonce line are ignored. */
export function parseFramedOutput(stdout: string, nonce: string): FramedOutput {
  const statuses: string[][] = [];
  const values = new Map<string, string[]>();
  let hash: string | undefined;
  let table: string | undefined;

  const prefix = `${nonce} `;
  let offset = 0;
  while (offset < stdout.length) {
    const end = stdout.indexOf("\n", offset);
    const line = stdout.slice(offset, end === -1 ? stdout.length : end);
    offset = end === -1 ? stdout.length : end + 1;
    if (!line.startsWith(prefix)) continue;
    const rest = line.slice(prefix.length);
    const space = rest.indexOf(" ");
    const key = space === -1 ? rest : rest.slice(0, space);
    const value = space === -1 ? "" : rest.slice(space + 1);
    if (key === "table") {
      table = stdout.slice(offset);
      break;
    }
    if (key === "status") statuses.push(value.split(" ").filter((word) => word.length > 0));
    else if (key === "hash") hash = value;
    else values.set(key, [...(values.get(key) ?? []), value]);
  }
  return { status: statuses.at(-1) ?? [], statuses, hash, table, values };
}
