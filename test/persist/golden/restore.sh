#!/bin/sh
# Applies a pulumi-iptables rules file to the live tables without duplicating rules.
# Rendered by pulumi-iptables; the next pulumi up overwrites this file.
#
# Usage: restore.sh FAMILY RULES_FILE SAVE_COMMAND RESTORE_COMMAND [RESTORE_OPTION...]
#
# For each table of the rules file, one restore transaction creates the owned chains that are
# missing, deletes the live rules whose marker id the file lists, and inserts the file's rules
# at the top of their chains. Running it twice leaves the same rules as running it once.
# A table that fails is left unchanged; the other tables are still applied, and the exit
# status is 1.
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
tables=$(sed -n 's/^[*]\([a-z]*\)$/\1/p' "$rules") || exit 1

# Restores one table under the lock that pulumi-iptables holds while it changes that table
# over SSH, so a rerun by hand never interleaves with a pulumi up.
restore_table() {
  table=$1
  shift
  lock=/run/pulumi-iptables.$family.$table.lock
  if command -v flock >/dev/null 2>&1 && [ -w /run ]; then
    exec 9>>"$lock" || return 1
    if ! flock -w 60 9; then
      echo "pulumi-iptables: timed out after 60 s waiting for $lock" >&2
      return 1
    fi
  fi
  live=$("$save" -t "$table") || return 1
  transaction=$(printf '%s\n#pulumi-iptables:end-of-live-tables\n' "$live" | cat - "$rules" |
    awk -v only="$table" '
function markerId(line,    rest, token, id) {
  # The marker is the last --comment that looks like one, as the library writes it last.
  id = ""
  rest = line
  while (match(rest, /--comment "?pulumi-iptables:[A-Za-z0-9_.\/-]+:-?[0-9]+/)) {
    token = substr(rest, RSTART, RLENGTH)
    rest = substr(rest, RSTART + RLENGTH)
    sub(/^--comment "?pulumi-iptables:/, "", token)
    sub(/:-?[0-9]+$/, "", token)
    id = token
  }
  return id
}
function fail(message) {
  print "pulumi-iptables: " message > "/dev/stderr"
  failed = 1
  exit 1
}
function emit(    i, words, chain, position) {
  print "*" table
  for (i = 1; i <= chainCount; i++)
    if (!((table, chains[i]) in liveChain)) print "-N " chains[i]
  for (i = 1; i <= liveCount[table]; i++)
    if (liveId[table, i] in wanted) print "-D" substr(liveRule[table, i], 3)
  split("", position)
  for (i = 1; i <= ruleCount; i++) {
    split(rules[i], words, " ")
    chain = words[2]
    position[chain]++
    print "-I " chain " " position[chain] substr(rules[i], length(chain) + 4)
  }
  print "COMMIT"
}
!inRules && $0 == "#pulumi-iptables:end-of-live-tables" { inRules = 1; table = ""; next }
!inRules {
  if (substr($0, 1, 1) == "*") {
    table = substr($0, 2)
  } else if (substr($0, 1, 1) == ":") {
    split(substr($0, 2), words, " ")
    liveChain[table, words[1]] = 1
  } else if (substr($0, 1, 3) == "-A ") {
    id = markerId($0)
    if (id != "") {
      n = ++liveCount[table]
      liveRule[table, n] = $0
      liveId[table, n] = id
    }
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
  id = markerId($0)
  if (id == "") fail("line " lineNumber " of the rules file has no pulumi-iptables marker")
  rules[++ruleCount] = $0
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
') || return 1
  if [ -z "$transaction" ]; then
    return 0
  fi
  if ! printf '%s\n' "$transaction" | "$@"; then
    echo "pulumi-iptables: $* rejected this input for the $table table, built from $rules; the table was not changed:" >&2
    printf '%s\n' "$transaction" | awk '{ printf "%4d  %s\n", NR, $0 }' >&2
    return 1
  fi
}

status=0
for table in $tables; do
  # A subshell per table releases the table's lock when it ends.
  ( restore_table "$table" "$@" ) || status=1
done
exit "$status"
