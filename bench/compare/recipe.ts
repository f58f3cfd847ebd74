/**
 * The configuration every tool applies: the rate-limit recipe, and a large variant of it.
 *
 * Rules are described once, as data, and each tool turns them into its own syntax (an Ansible
 * task, a Puppet resource, a restore line, a Pulumi resource). `savedRule` returns the line
 * iptables-save (iptables 1.8.9, nft backend) prints for a rule, without any comment a tool
 * adds. Each tool's expected lines are built from it by hand, never taken from the tool itself.
 */

export const CHAIN = "RATE-LIMIT";
export const HASHLIMIT_NAME = "bench-rate";
export const RATE = "50/sec";
export const BURST = 20;
export const LOG_RATE = "1/sec";
export const LOG_PREFIX = "rate-limit: ";
/** How many exemption rules the large variant adds before the hashlimit rule. */
export const EXTRA_RULES = 200;

export type BenchRule =
  /** INPUT sends new connections to the rate-limit chain. */
  | { readonly kind: "jump"; readonly chain: "INPUT" }
  /** A source exempt from the rate limit (large variant only); RETURN goes back to INPUT. */
  | { readonly kind: "exempt"; readonly chain: typeof CHAIN; readonly index: number }
  /** Accepts up to RATE new connections per source address, with BURST. */
  | { readonly kind: "hashlimit"; readonly chain: typeof CHAIN }
  /** Logs what is over the limit, at most LOG_RATE. */
  | { readonly kind: "log"; readonly chain: typeof CHAIN }
  /** Rejects what is over the limit. */
  | { readonly kind: "reject"; readonly chain: typeof CHAIN };

export type VariantName = "recipe" | "large";

export interface Variant {
  readonly name: VariantName;
  /** Rules in the order they sit in their chains; INPUT's jump comes last, after its chain. */
  readonly rules: readonly BenchRule[];
}

export function variant(name: VariantName): Variant {
  const extras: BenchRule[] =
    name === "large"
      ? Array.from({ length: EXTRA_RULES }, (_, i) => ({
          kind: "exempt" as const,
          chain: CHAIN,
          index: i + 1,
        }))
      : [];
  return {
    name,
    rules: [
      ...extras,
      { kind: "hashlimit", chain: CHAIN },
      { kind: "log", chain: CHAIN },
      { kind: "reject", chain: CHAIN },
      { kind: "jump", chain: "INPUT" },
    ],
  };
}

/** Returns the source of exemption rule `index` (1 to 200), from TEST-NET-2 (RFC 5737). */
export function exemptSource(index: number): string {
  return `198.51.100.${index}/32`;
}

/** Renders the rule's matches and target as iptables takes them (all after `-A CHAIN`). */
export function ruleArgs(rule: BenchRule): string {
  switch (rule.kind) {
    case "jump":
      return `-m conntrack --ctstate NEW -j ${CHAIN}`;
    case "exempt":
      return `-s ${exemptSource(rule.index)} -j RETURN`;
    case "hashlimit":
      return (
        `-m hashlimit --hashlimit-upto ${RATE} --hashlimit-burst ${BURST} ` +
        `--hashlimit-mode srcip --hashlimit-name ${HASHLIMIT_NAME} -j ACCEPT`
      );
    case "log":
      return `-m limit --limit ${LOG_RATE} -j LOG --log-prefix "${LOG_PREFIX}"`;
    case "reject":
      return "-j REJECT";
  }
}

/**
 * Renders the rule as iptables-save prints it, split where a tool's comment goes: `matches` ends before
 * `-j`, `target` starts with `-j`.
 */
export function savedRule(rule: BenchRule): { readonly matches: string; readonly target: string } {
  switch (rule.kind) {
    case "jump":
      return { matches: "-A INPUT -m conntrack --ctstate NEW", target: `-j ${CHAIN}` };
    case "exempt":
      return { matches: `-A ${CHAIN} -s ${exemptSource(rule.index)}`, target: "-j RETURN" };
    case "hashlimit":
      return {
        matches:
          `-A ${CHAIN} -m hashlimit --hashlimit-upto ${RATE} --hashlimit-burst ${BURST} ` +
          `--hashlimit-mode srcip --hashlimit-name ${HASHLIMIT_NAME}`,
        target: "-j ACCEPT",
      };
    case "log":
      return {
        matches: `-A ${CHAIN} -m limit --limit ${LOG_RATE}`,
        target: `-j LOG --log-prefix "${LOG_PREFIX}"`,
      };
    case "reject":
      // iptables-save always prints the reject type; icmp-port-unreachable is the default.
      return { matches: `-A ${CHAIN}`, target: "-j REJECT --reject-with icmp-port-unreachable" };
  }
}

/**
 * Lists the filter-table lines a tool leaves on a clean host: the chain declaration, then every rule
 * in chain order (INPUT first, as iptables-save prints built-in chains first). `comment` gives
 * the comment the tool adds to a rule, if any, placed as iptables-save places it: last before
 * the target.
 */
export function expectedLines(
  target: Variant,
  comment: (rule: BenchRule) => string | undefined = () => undefined,
): string[] {
  const lines = [`:${CHAIN}`];
  const ordered = [
    ...target.rules.filter((rule) => rule.chain === "INPUT"),
    ...target.rules.filter((rule) => rule.chain === CHAIN),
  ];
  for (const rule of ordered) {
    const { matches, target: jump } = savedRule(rule);
    const text = comment(rule);
    lines.push(
      text === undefined
        ? `${matches} ${jump}`
        : `${matches} -m comment --comment ${quoteComment(text)} ${jump}`,
    );
  }
  return lines;
}

/** Quotes a comment as iptables-save does: always in double quotes, with `"` and `\` escaped. */
function quoteComment(text: string): string {
  return `"${text.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}
