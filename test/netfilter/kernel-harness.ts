/**
 * Applies rules with the real iptables of a lab host and reads back what iptables-save prints,
 * for the differential tests and the fixture recorder.
 */
import type { Lab, LabHost } from "../../src/lab";
import type { Backend, Family, TableName } from "../../src/netfilter/types";

/** What the kernel did with one rule: the saved lines, or the error iptables printed. */
export type KernelResult =
  | { readonly accepted: true; readonly lines: readonly string[] }
  | { readonly accepted: false; readonly error: string };

/** User chains every table gets before the rules are applied, so rules can jump to them. */
export const USER_CHAINS = ["USR", "f2b-sshd"];

/** Returns the iptables binary prefix for a backend and family, such as "ip6tables-legacy". */
export function iptablesBinary(backend: Backend, family: Family): string {
  return `${family === "ipv4" ? "iptables" : "ip6tables"}-${backend}`;
}

// Each rule is applied alone: flush the table, load the rule with iptables-restore (whose
// tokenizer the rule text follows), print the table's rules, and report the result.
const SCRIPT = `
ipt="$1"; table="$2"; shift 2
for chain in "$@"; do "$ipt" -t "$table" -N "$chain" 2>/dev/null; done
i=0
while IFS= read -r spec; do
  "$ipt" -t "$table" -F
  if err=$(printf '*%s\\n%s\\nCOMMIT\\n' "$table" "$spec" | "$ipt-restore" --noflush 2>&1); then
    echo "@@ $i ok"
    "$ipt-save" -t "$table" 2>/dev/null | grep '^-A ' || true
  else
    echo "@@ $i err"
    printf '%s\\n' "$err" | tr '\\n' ' '
    echo
  fi
  i=$((i+1))
done
"$ipt" -t "$table" -F
`;

/**
 * Applies each rule alone in `table` of a lab host and returns what the backend's iptables-save
 * printed for it. The rules must be single lines of iptables-restore syntax ("-A CHAIN ...").
 */
export async function applyEach(
  lab: Lab,
  host: LabHost,
  backend: Backend,
  family: Family,
  table: TableName,
  specs: readonly string[],
): Promise<KernelResult[]> {
  if (specs.length === 0) return [];
  const binary = iptablesBinary(backend, family);
  const result = await lab.exec(
    host,
    ["bash", "-c", SCRIPT, "apply", binary, table, ...USER_CHAINS],
    {
      input: `${specs.join("\n")}\n`,
      timeoutMs: 600_000,
    },
  );
  if (result.code !== 0) {
    throw new Error(`applying rules with ${binary} failed (${result.code}): ${result.stderr}`);
  }

  const results: KernelResult[] = [];
  let current: { index: number; ok: boolean; lines: string[] } | undefined;
  const flush = (): void => {
    if (current === undefined) return;
    results[current.index] = current.ok
      ? { accepted: true, lines: current.lines }
      : { accepted: false, error: current.lines.join(" ").trim() };
  };
  for (const line of result.stdout.split("\n")) {
    const header = /^@@ (\d+) (ok|err)$/.exec(line);
    if (header !== null) {
      flush();
      current = { index: Number(header[1]), ok: header[2] === "ok", lines: [] };
    } else if (current !== undefined && line !== "") {
      current.lines.push(line);
    }
  }
  flush();
  if (results.length !== specs.length) {
    throw new Error(`expected ${specs.length} results from ${binary}, got ${results.length}`);
  }
  return results;
}
