/**
 * The provider of `Chain`: one user-defined chain in one table and family.
 *
 * The Pulumi provider process loads this module at call time (the serialised provider is a
 * thin shim that requires it), so nothing here is captured into state.
 */
import { z } from "zod";
import { hasErrorCode, IptablesError, quoteForMessage } from "../../errors";
import { ruleMarker, ruleTarget } from "../../netfilter/managed";
import { BUILTIN_CHAINS, type Family, type SaveTable, type TableName } from "../../netfilter/types";
import { checkConnection, connectionAddress } from "../connection";
import { invalid, zodFailures, type CheckFailure } from "../failures";
import { chainNameSchema, familySchema, orUnknown, tableSchema, TARGET_NAMES } from "../fields";
import { applyOptions, openHost } from "../host-access";
import { containsUnknown } from "../unknown";
import { resolveInit } from "./persistence-unit";

type Props = Record<string, unknown>;

const chainSchema = z
  .object({
    connection: z.unknown(),
    name: orUnknown(chainNameSchema),
    family: orUnknown(familySchema),
    table: orUnknown(tableSchema),
    purgeUnmanaged: orUnknown(z.boolean({ error: "use true or false" })),
    adopt: orUnknown(z.boolean({ error: "use true or false" })),
    requireBootRestore: orUnknown(z.boolean({ error: "use true or false" })).optional(),
    requireChains: orUnknown(z.array(chainNameSchema)).optional(),
  })
  .strict();

/** Values of inputs left out. */
const CHAIN_DEFAULTS: Readonly<Props> = {
  family: "ipv4",
  table: "filter",
  purgeUnmanaged: false,
  adopt: false,
};

/** Inputs whose change means another chain: the resource is replaced. */
const REPLACE_KEYS = ["name", "family", "table"];

/** Validates and normalises the inputs of a `Chain`, contacting no host. */
export function checkChain(news: Props): { inputs: Props; failures: CheckFailure[] } {
  const input: Props = { ...CHAIN_DEFAULTS };
  for (const [key, value] of Object.entries(news)) {
    if (key !== "__provider" && value !== undefined) input[key] = value;
  }
  const failures: CheckFailure[] = [];
  if (!containsUnknown(input.connection)) failures.push(...checkConnection(input.connection));

  const parsed = chainSchema.safeParse(input);
  if (!parsed.success)
    return { inputs: news, failures: [...failures, ...zodFailures(parsed.error, input)] };
  const inputs = parsed.data as Props;
  const name = inputs.name as string;
  if (!containsUnknown([name, inputs.table])) {
    if (BUILTIN_CHAINS[inputs.table as TableName].includes(name)) {
      failures.push(
        invalid(
          "name",
          name,
          `${name} is a built-in chain of table ${String(inputs.table)}: pick another name`,
        ),
      );
    } else if (TARGET_NAMES.has(name)) {
      failures.push(
        invalid("name", name, `iptables reserves ${name} for a target: pick another name`),
      );
    }
  }
  return { inputs, failures };
}

/** The provider of `Chain`. */
export const chainProvider = {
  async check(_olds: Props, news: Props): Promise<{ inputs: Props; failures: CheckFailure[] }> {
    return checkChain(news);
  },

  async diff(_id: string, olds: Props, news: Props) {
    const replaces = REPLACE_KEYS.filter(
      (key) => containsUnknown(news[key]) || olds[key] !== news[key],
    );
    if (
      containsUnknown(news.connection) ||
      connectionAddress(olds.connection) !== connectionAddress(news.connection)
    ) {
      replaces.unshift("connection");
    }
    // Refresh counts foreign rules in the chain; with purgeUnmanaged, any is drift to remove.
    const foreignToPurge = news.purgeUnmanaged === true && Number(olds.foreignRules ?? 0) > 0;
    const changes =
      replaces.length > 0 ||
      foreignToPurge ||
      olds.purgeUnmanaged !== news.purgeUnmanaged ||
      olds.adopt !== news.adopt ||
      JSON.stringify(olds.connection) !== JSON.stringify(news.connection);
    // A new chain of the same name on the same host can only be created after the old one is gone.
    const sameSlot =
      !replaces.includes("connection") &&
      olds.family === news.family &&
      olds.table === news.table &&
      olds.name === news.name;
    return { changes, replaces, deleteBeforeReplace: replaces.length > 0 && sameSlot };
  },

  async create(inputs: Props): Promise<{ id: string; outs: Props }> {
    const host = await openHost(inputs.connection);
    const family = inputs.family as Family;
    const table = inputs.table as TableName;
    const name = inputs.name as string;
    if (inputs.requireBootRestore === true) resolveInit("auto", await host.facts(), host.address);

    // Without adopt the chain must be new, checked in the same transaction that creates it, so
    // two resources creating one chain at once cannot both succeed.
    const requireChains = (inputs.requireChains as string[] | undefined) ?? [];
    const change =
      inputs.adopt === true
        ? { createChains: [name], requireChains }
        : { newChains: [name], requireChains };
    let created: Awaited<ReturnType<typeof host.applyTableChange>>;
    try {
      created = await host.applyTableChange(family, table, change, applyOptions(inputs.connection));
    } catch (error) {
      if (!hasErrorCode(error, "PLAN_CONFLICT") || error.details.chain !== name) throw error;
      throw new IptablesError(
        "APPLY_CONFLICT",
        `${describe(inputs)} already exists on ${connectionAddress(inputs.connection)}, so another ` +
          "tool, stack or resource may own it; nothing was changed. Pick another name, or set " +
          "adopt: true to manage the existing chain",
        { cause: error, details: { chain: name } },
      );
    }
    const after = inputs.purgeUnmanaged === true ? await purge(host, inputs) : created.after;

    // Output foreignRules at create too, so the first refresh does not report a change.
    const facts = await host.facts();
    return {
      id: resourceId(inputs),
      outs: {
        ...inputs,
        foreignRules: foreignRules(after, name),
        backend: facts.backend,
        hostKey: host.hostKey,
      },
    };
  },

  async read(id: string, props: Props): Promise<{ id: string; props: Props }> {
    const host = await openHost(props.connection, props.hostKey);
    const table = await host.readTable(props.family as Family, props.table as TableName);
    if (!table?.chains.some((chain) => chain.name === props.name)) return { id: "", props: {} };
    const facts = await host.facts();
    return {
      id,
      props: {
        ...props,
        foreignRules: foreignRules(table, props.name as string),
        backend: facts.backend,
      },
    };
  },

  async update(_id: string, olds: Props, news: Props): Promise<{ outs: Props }> {
    const host = await openHost(news.connection, olds.hostKey);
    const table =
      news.purgeUnmanaged === true
        ? await purge(host, news)
        : await host.readTable(news.family as Family, news.table as TableName);
    const facts = await host.facts();
    return {
      outs: {
        ...news,
        foreignRules: foreignRules(table, news.name as string),
        backend: facts.backend,
        hostKey: host.hostKey,
      },
    };
  },

  async delete(_id: string, props: Props): Promise<void> {
    const host = await openHost(props.connection, props.hostKey);
    const family = props.family as Family;
    const table = props.table as TableName;
    const name = props.name as string;

    const live = await host.readTable(family, table);
    if (live === undefined || !live.chains.some((chain) => chain.name === name)) return;
    assertDeletable(live, props);

    const purgeUnmanaged = props.purgeUnmanaged === true ? [name] : [];
    await host.applyTableChange(
      family,
      table,
      { deleteChains: [name], purgeUnmanaged },
      applyOptions(props.connection),
    );
  },
};

/** Removes the foreign rules of the chain and returns the table read back afterwards. */
async function purge(
  host: Awaited<ReturnType<typeof openHost>>,
  inputs: Props,
): Promise<SaveTable | undefined> {
  const name = inputs.name as string;
  const result = await host.applyTableChange(
    inputs.family as Family,
    inputs.table as TableName,
    { purgeUnmanaged: [name] },
    applyOptions(inputs.connection),
  );
  return result.after;
}

/** Counts the rules in the chain that no resource of this library manages. */
function foreignRules(table: SaveTable | undefined, name: string): number {
  return (
    table?.rules.filter((rule) => rule.chain === name && ruleMarker(rule) === undefined).length ?? 0
  );
}

/**
 * Raises CHAIN_IN_USE when rules outside this chain still jump to it, or when foreign rules
 * inside it would have to be removed without `purgeUnmanaged`. The message lists those rules.
 */
function assertDeletable(live: SaveTable, props: Props): void {
  const name = props.name as string;
  const jumps = live.rules.filter((rule) => rule.chain !== name && ruleTarget(rule) === name);
  if (jumps.length > 0) {
    throw new IptablesError(
      "CHAIN_IN_USE",
      `cannot delete ${describe(props)} on ${connectionAddress(props.connection)}: ` +
        `${jumps.length} rule(s) still jump to it: ${jumps.map((rule) => quoteForMessage(rule.text)).join(", ")}; ` +
        "remove those rules (or the resources that manage them) first; nothing was changed",
      { details: { chain: name, rules: jumps.map((rule) => rule.text) } },
    );
  }
  const managed = live.rules.filter(
    (rule) => rule.chain === name && ruleMarker(rule) !== undefined,
  );
  if (managed.length > 0) {
    throw new IptablesError(
      "CHAIN_IN_USE",
      `cannot delete ${describe(props)} on ${connectionAddress(props.connection)}: it still ` +
        `contains ${managed.length} managed rule(s): ` +
        `${managed.map((rule) => quoteForMessage(rule.text)).join(", ")}; delete the resources ` +
        "that own them first (in this stack, make them depend on the chain); nothing was changed",
      { details: { chain: name, rules: managed.map((rule) => rule.text) } },
    );
  }
  const foreign = live.rules.filter(
    (rule) => rule.chain === name && ruleMarker(rule) === undefined,
  );
  if (foreign.length > 0 && props.purgeUnmanaged !== true) {
    throw new IptablesError(
      "CHAIN_IN_USE",
      `cannot delete ${describe(props)} on ${connectionAddress(props.connection)}: it contains ` +
        `${foreign.length} rule(s) this library does not manage: ` +
        `${foreign.map((rule) => quoteForMessage(rule.text)).join(", ")}; remove them, or set ` +
        "purgeUnmanaged: true to let the chain remove them; nothing was changed",
      { details: { chain: name, rules: foreign.map((rule) => rule.text) } },
    );
  }
}

function describe(props: Props): string {
  return `${String(props.family)} chain ${String(props.name)} in table ${String(props.table)}`;
}

function resourceId(inputs: Props): string {
  return `${connectionAddress(inputs.connection)}/${String(inputs.family)}/${String(inputs.table)}/chain/${String(inputs.name)}`;
}
