/**
 * New settings for a hashlimit table that keeps its name.
 *
 * xt_hashlimit keeps one kernel table per name (and family), created by the first rule that
 * names it, with that rule's rate, burst, mode, masks and sizes. A rule that replaces it in one
 * transaction is checked while the old rule still uses the table, so it joins the old table and
 * the kernel keeps enforcing the old settings, although iptables-save prints the new ones.
 *
 * So an update that changes the settings but not the name goes through a temporary name:
 *   1. the rule is replaced by the new rule under a temporary hashlimit name, which makes a fresh
 *      table with the new settings (the rule keeps its place, so traffic is limited throughout),
 *   2. the old table goes once its last rule is gone (at once with iptables-legacy, shortly
 *      after the transaction with iptables-nft, which frees rules in the background),
 *   3. the rule is replaced by the new rule under its own name, which creates a fresh table.
 * Buckets start empty again, as with any change of settings. When step 3 fails, the host holds
 * the new rule under the temporary name; the next update or refresh sees it as drift.
 */
import { createHash } from "node:crypto";
import { quoteForMessage } from "../errors";
import type { Host } from "../host";
import { applyOptions } from "./host-access";
import { splitArgs } from "../netfilter/tokenize";
import { ruleMarker } from "../netfilter/managed";
import type { Family, SaveTable, TableName } from "../netfilter/types";

type Props = Record<string, unknown>;

/** How long step 2 waits for the old table to go, in 20 ms polls. */
const TABLE_GONE_POLLS = 150;

/**
 * Returns the hashlimit options of a canonical rule line that shape its table (every
 * `--hashlimit-*` option but the name), or undefined when the line has no hashlimit match.
 */
export function hashlimitSettings(line: string): string | undefined {
  const args = splitArgs(line);
  const start = args.findIndex((arg, i) => arg === "-m" && args[i + 1] === "hashlimit");
  if (start === -1) return undefined;
  const settings: string[] = [];
  for (let i = start + 2; i < args.length; i += 2) {
    const option = args[i]!;
    if (!option.startsWith("--hashlimit-")) break;
    if (option !== "--hashlimit-name") settings.push(option, args[i + 1] ?? "");
  }
  return settings.join(" ");
}

/** Tells whether an update keeps the hashlimit name but changes the table's settings. */
export function needsTableSwap(olds: Props, news: Props): boolean {
  if (typeof olds.hashlimitName !== "string" || olds.hashlimitName !== news.hashlimitName) {
    return false;
  }
  if (typeof olds.rule !== "string" || typeof news.rule !== "string") return false;
  return hashlimitSettings(olds.rule) !== hashlimitSettings(news.rule);
}

/** Returns the temporary hashlimit name of step 1: 15 characters derived from the marker id. */
export function temporaryHashlimitName(markerId: string): string {
  return `pi${createHash("sha256").update(markerId).digest("hex").slice(0, 13)}`;
}

/** Returns `line` with its `--hashlimit-name` value replaced. */
export function withHashlimitName(line: string, from: string, to: string): string {
  const option = ` --hashlimit-name ${from}`;
  const at = line.indexOf(`${option} `);
  if (at === -1) throw new Error(`the rule has no "--hashlimit-name ${from}": ${line}`);
  return `${line.slice(0, at)} --hashlimit-name ${to}${line.slice(at + option.length)}`;
}

/** Returns the /proc file of a hashlimit table. */
export function hashlimitTablePath(family: Family, name: string): string {
  return `/proc/net/${family === "ipv6" ? "ip6t_hashlimit" : "ipt_hashlimit"}/${name}`;
}

/**
 * Steps 1 and 2 above: moves the rule onto a fresh table under the temporary name and waits for
 * the old table to go. The caller then applies the rule under its own name (step 3). Warns when
 * the old table stays, because another rule shares its name.
 */
export async function moveToTemporaryTable(host: Host, news: Props): Promise<void> {
  const family = news.family as Family;
  const table = news.table as TableName;
  const name = news.hashlimitName as string;
  const markerId = news.markerId as string;
  const line = withHashlimitName(news.rule as string, name, temporaryHashlimitName(markerId));
  await host.applyTableChange(
    family,
    table,
    {
      upsertRules: [
        {
          marker: { id: markerId, order: news.order as number },
          chain: news.chain as string,
          line,
        },
      ],
    },
    applyOptions(news.connection),
  );

  const waited = await host.run(
    [
      "sh",
      "-c",
      'i=0; while [ -e "$1" ]; do i=$((i+1)); [ "$i" -ge "$2" ] && exit 1; sleep 0.02; done',
      "sh",
      hashlimitTablePath(family, name),
      String(TABLE_GONE_POLLS),
    ],
    { allowFailure: true },
  );
  if (waited.code !== 0) {
    console.log(
      `warning: ${host.address}: hashlimit table ${quoteForMessage(name)} (${family}) is still ` +
        "used by another rule, so the kernel keeps the settings it was created with, not this " +
        "rule's new ones; give each rule its own hashlimitName, unless sharing buckets is intended",
    );
  }
}

/**
 * Describes the other rules of `table` that use the hashlimit table `name`, which share buckets
 * with the rule carrying `markerId`: by marker id and chain, never by their text, which may hold
 * a secret comment.
 */
export function rulesSharingTable(
  table: SaveTable | undefined,
  name: string,
  markerId: string,
): string[] {
  if (table === undefined) return [];
  const needle = ` --hashlimit-name ${name} `;
  const others: string[] = [];
  for (const rule of table.rules) {
    if (!`${rule.text} `.includes(needle)) continue;
    const id = ruleMarker(rule)?.id;
    if (id === markerId) continue;
    others.push(
      id === undefined
        ? `a foreign rule in ${rule.chain}`
        : `rule ${quoteForMessage(id)} in ${rule.chain}`,
    );
  }
  return others;
}

/** Builds the warning for a hashlimit rule whose table other rules use too. */
export function sharedTableWarning(
  address: string,
  family: Family,
  name: string,
  others: readonly string[],
): string {
  return (
    `warning: ${address}: hashlimit table ${quoteForMessage(name)} (${family}) is also used by ` +
    `${others.join(", ")}; the rules share per-source buckets, and the kernel keeps the ` +
    "settings of the rule that created the table. Give each rule its own hashlimitName, unless " +
    "sharing is intended"
  );
}
