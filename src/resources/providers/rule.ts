/**
 * The provider of `Rule` and `HashlimitRule`: one managed rule, found on its host by its
 * marker comment.
 *
 * The Pulumi provider process loads this module at call time (the serialised provider is a
 * thin shim that requires it), so nothing here is captured into state.
 */
import { IptablesError, quoteForMessage } from "../../errors";
import { ruleMarker } from "../../netfilter/managed";
import { compareMarkers } from "../../netfilter/marker";
import { sameRule } from "../../netfilter/canonical";
import type { DesiredRule } from "../../netfilter/plan";
import type { Backend, Family, SaveRule, SaveTable, TableName } from "../../netfilter/types";
import { connectionAddress } from "../connection";
import { warnWhenTableFilling } from "../hashlimit-pressure";
import {
  hashlimitTablePath,
  moveToTemporaryTable,
  needsTableSwap,
  rulesSharingTable,
  sharedTableWarning,
} from "../hashlimit-swap";
import { applyOptions, openHost } from "../host-access";
import { checkRule, type RuleKind } from "../rule-check";
import { UNKNOWN, containsUnknown } from "../unknown";
import type { CheckFailure } from "../failures";

type Props = Record<string, unknown>;

/** Outputs that the provider adds to the inputs; read() removes them to rebuild inputs. */
const OUTPUT_KEYS = ["packets", "bytes", "backend", "hostKey", "placement", "entries"];

/** Inputs whose change moves the rule to another host, family, table, chain or identity. */
const REPLACE_KEYS = ["family", "table", "chain", "markerId"];

/** `placement` output: whether the rule sits in its order among the managed rules of its chain. */
export type Placement = "in-order" | "out-of-order";

export interface RuleProvider {
  check(olds: Props, news: Props): Promise<{ inputs: Props; failures: CheckFailure[] }>;
  diff(
    id: string,
    olds: Props,
    news: Props,
  ): Promise<{ changes: boolean; replaces: string[]; deleteBeforeReplace: boolean }>;
  create(inputs: Props): Promise<{ id: string; outs: Props }>;
  read(id: string, props: Props): Promise<{ id: string; props: Props; inputs?: Props }>;
  update(id: string, olds: Props, news: Props): Promise<{ outs: Props }>;
  delete(id: string, props: Props): Promise<void>;
}

/** Builds the provider of one kind of rule resource. */
export function ruleProvider(kind: RuleKind): RuleProvider {
  return {
    async check(_olds, news) {
      return checkRule(kind, news);
    },

    async diff(_id, olds, news) {
      const replaces = REPLACE_KEYS.filter(
        (key) => containsUnknown(news[key]) || olds[key] !== news[key],
      );
      if (
        containsUnknown(news.connection) ||
        connectionAddress(olds.connection) !== connectionAddress(news.connection)
      ) {
        replaces.unshift("connection");
      }
      const changes =
        replaces.length > 0 ||
        olds.order !== news.order ||
        olds.placement === "out-of-order" ||
        JSON.stringify(olds.connection) !== JSON.stringify(news.connection) ||
        ruleChanged(olds, news);
      // A replacement in the same table keeps the marker id. The old rule must go first, because
      // deleting it afterwards by marker would delete the new one.
      const sameSlot =
        olds.markerId === news.markerId &&
        olds.family === news.family &&
        olds.table === news.table &&
        !replaces.includes("connection");
      return { changes, replaces, deleteBeforeReplace: replaces.length > 0 && sameSlot };
    },

    async create(inputs) {
      const host = await openHost(inputs.connection);
      const outs = await applyRule(host, inputs, inputs.adopt !== true);
      return { id: resourceId(inputs), outs: { ...outs, hostKey: host.hostKey } };
    },

    async read(id, props) {
      const host = await openHost(props.connection, props.hostKey);
      const family = props.family as Family;
      const table = (await host.readTable(family, props.table as TableName)) ?? emptyTable(props);
      const facts = await host.facts();

      const found = findManaged(table, props.markerId as string);
      if (found === undefined) return { id: "", props: {} };

      const outs = withoutUndefined({
        ...props,
        ...liveOutputs(found.rule, facts.backend, found.placement),
        entries: await readEntries(host, props),
      });
      const changed =
        found.rule.chain !== props.chain ||
        found.marker.order !== props.order ||
        typeof props.rule !== "string" ||
        !sameRule(found.rule.text, props.rule, {
          family,
          table: props.table as TableName,
          backend: facts.backend,
        });
      if (!changed && found.placement === "in-order") return { id, props: outs };

      // Drift: the live rule becomes the inputs, so the next preview shows the way back.
      const inputs: Props = Object.fromEntries(
        Object.entries(props).filter(([key]) => !OUTPUT_KEYS.includes(key)),
      );
      return {
        id,
        props: outs,
        inputs: {
          ...inputs,
          chain: found.rule.chain,
          order: found.marker.order,
          rule: found.rule.text,
        },
      };
    },

    async update(_id, olds, news) {
      const host = await openHost(news.connection, olds.hostKey);
      if (needsTableSwap(olds, news)) await moveToTemporaryTable(host, news);
      const outs = await applyRule(host, news);
      return { outs: { ...outs, hostKey: host.hostKey } };
    },

    async delete(_id, props) {
      const host = await openHost(props.connection, props.hostKey);
      await host.applyTableChange(
        props.family as Family,
        props.table as TableName,
        { deleteRules: [props.markerId as string] },
        applyOptions(props.connection),
      );
    },
  };
}

type HostHandle = Awaited<ReturnType<typeof openHost>>;

/**
 * Upserts the rule in one transaction and returns the outputs read back from the host. With
 * `create`, a different live rule carrying the same marker id fails the apply (PLAN_CONFLICT).
 */
async function applyRule(host: HostHandle, inputs: Props, create = false): Promise<Props> {
  if (containsUnknown(inputs)) {
    throw new IptablesError(
      "INVALID_INPUT",
      "a rule cannot be applied while an input is still unknown",
    );
  }
  const family = inputs.family as Family;
  const table = inputs.table as TableName;
  const desired: DesiredRule = {
    marker: { id: inputs.markerId as string, order: inputs.order as number },
    chain: inputs.chain as string,
    line: inputs.rule as string,
    create,
  };

  const result = await host.applyTableChange(
    family,
    table,
    { upsertRules: [desired] },
    applyOptions(inputs.connection),
  );
  const facts = await host.facts();

  const found = findManaged(result.after ?? emptyTable(inputs), desired.marker.id);
  if (found === undefined) {
    throw new IptablesError(
      "APPLY_CONFLICT",
      `${family} table ${table}: the rule ${quoteForMessage(desired.marker.id)} was applied but is ` +
        "missing from the table read back afterwards; another process changed the table at the " +
        "same time, so run the update again",
      { details: { markerId: desired.marker.id } },
    );
  }
  if (typeof inputs.hashlimitName === "string") {
    const name = inputs.hashlimitName;
    const others = rulesSharingTable(result.after, name, desired.marker.id);
    if (others.length > 0) console.log(sharedTableWarning(host.address, family, name, others));
  }
  return withoutUndefined({
    ...inputs,
    ...liveOutputs(found.rule, facts.backend, found.placement),
    entries: await readEntries(host, inputs),
  });
}

/** Drops undefined values, which a protobuf Struct cannot carry. */
function withoutUndefined(props: Props): Props {
  return Object.fromEntries(Object.entries(props).filter(([, value]) => value !== undefined));
}

function liveOutputs(rule: SaveRule, backend: Backend, placement: Placement): Props {
  return {
    rule: rule.text,
    packets: Number(rule.counters?.packets ?? 0n),
    bytes: Number(rule.counters?.bytes ?? 0n),
    backend,
    placement,
  };
}

/** Number of live entries of a HashlimitRule's table (lines of /proc/net/ip*t_hashlimit/NAME). */
async function readEntries(host: HostHandle, inputs: Props): Promise<number | undefined> {
  if (typeof inputs.hashlimitName !== "string") return undefined;
  const path = hashlimitTablePath(inputs.family as Family, inputs.hashlimitName);
  const result = await host.run(["cat", path], { allowFailure: true });
  if (result.code !== 0) return 0;
  const entries = result.stdout.split("\n").filter((line) => line.trim() !== "").length;
  await warnWhenTableFilling(host, inputs, entries);
  return entries;
}

interface FoundRule {
  readonly rule: SaveRule;
  readonly marker: { readonly id: string; readonly order: number };
  readonly placement: Placement;
}

/**
 * Finds the rule carrying `markerId` and reports whether it sits in order among the managed
 * rules of its chain. With several copies, the first one counts.
 */
function findManaged(table: SaveTable, markerId: string): FoundRule | undefined {
  const rule = table.rules.find((candidate) => ruleMarker(candidate)?.id === markerId);
  if (rule === undefined) return undefined;
  const marker = ruleMarker(rule)!;

  const managed = table.rules
    .filter((candidate) => candidate.chain === rule.chain)
    .map((candidate) => ruleMarker(candidate))
    .filter((candidate) => candidate !== undefined);
  const index = managed.findIndex((candidate) => candidate.id === markerId);
  const before = managed.slice(0, index);
  const after = managed.slice(index + 1);
  const inOrder =
    before.every((other) => compareMarkers(other, marker) <= 0) &&
    after.every((other) => compareMarkers(other, marker) >= 0);
  return { rule, marker, placement: inOrder ? "in-order" : "out-of-order" };
}

/** Compares the rule read back earlier with the predicted one, as kernel rules (sameRule). */
function ruleChanged(olds: Props, news: Props): boolean {
  if (news.rule === UNKNOWN || typeof news.rule !== "string" || typeof olds.rule !== "string")
    return true;
  if (olds.rule === news.rule) return false;
  try {
    const backend = (olds.backend as Backend | undefined) ?? "nft";
    return !sameRule(olds.rule, news.rule, {
      family: news.family as Family,
      table: news.table as TableName,
      backend,
    });
  } catch {
    return true;
  }
}

/** Builds a stable, readable id: host, family, table and marker id. */
function resourceId(inputs: Props): string {
  return `${connectionAddress(inputs.connection)}/${String(inputs.family)}/${String(inputs.table)}/${String(inputs.markerId)}`;
}

function emptyTable(props: Props): SaveTable {
  return { name: props.table as string, chains: [], rules: [], line: 0 };
}
