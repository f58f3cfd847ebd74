/**
 * The provider of `PersistenceUnit`: one boot job that restores managed rules at boot.
 *
 * The Pulumi provider process loads this module at call time (the serialised provider is a
 * thin shim that requires it), so nothing here is captured into state.
 */
import { z } from "zod";
import { IptablesError, isIptablesError, tailLines } from "../../errors";
import type { Host, HostFacts } from "../../host";
import type { Family, TableName } from "../../netfilter/types";
import {
  renderPersistence,
  type FamilyCommands,
  type PersistencePlan,
} from "../../persist/boot-job";
import { persistPaths } from "../../persist/paths";
import { restoreArgv } from "../../persist/restore-script";
import { renderRulesFile, type PersistedTable } from "../../persist/rules-file";
import { connectionAddress } from "../connection";
import { errorFailure, type CheckFailure } from "../failures";
import {
  chainNameSchema,
  familySchema,
  markerIdSchema,
  orUnknown,
  orderSchema,
  tableSchema,
} from "../fields";
import { openHost } from "../host-access";
import { containsUnknown } from "../unknown";
import { parseInputs } from "../check-inputs";

type Props = Record<string, unknown>;

const chainSchema = z
  .object({ family: familySchema, table: tableSchema, name: chainNameSchema })
  .strict();

const ruleSchema = z
  .object({
    family: familySchema,
    table: tableSchema,
    chain: chainNameSchema,
    markerId: markerIdSchema,
    order: orderSchema,
    rule: z.string({ error: "use the rule line of a Rule or HashlimitRule" }),
  })
  .strict();

const unitSchema = z
  .object({
    connection: z.unknown(),
    init: orUnknown(
      z.enum(["auto", "systemd", "upstart"], { error: 'use "auto", "systemd" or "upstart"' }),
    ),
    jobName: orUnknown(
      z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, {
        error: 'use 1 to 40 lowercase letters, digits and "-", starting with a letter or digit',
      }),
    ),
    chains: orUnknown(z.array(orUnknown(chainSchema))),
    rules: orUnknown(z.array(orUnknown(ruleSchema))),
  })
  .strict();

const DEFAULTS: Readonly<Props> = { init: "auto", chains: [], rules: [] };

/** Outputs the provider adds to the inputs. */
const OUTPUT_KEYS = ["resolvedInit", "unitName", "files", "skippedRules", "inSync", "hostKey"];

/** The provider of `PersistenceUnit`. */
export const persistenceUnitProvider = {
  async check(_olds: Props, news: Props): Promise<{ inputs: Props; failures: CheckFailure[] }> {
    const parsed = parseInputs(news, DEFAULTS, OUTPUT_KEYS, unitSchema);
    const failures = parsed.failures;
    if (parsed.inputs === undefined) return { inputs: news, failures };
    const inputs = parsed.inputs;

    // The rules files are rendered here too when every value is known, so a rule the boot job
    // could not restore fails the preview instead of the update.
    if (!containsUnknown([inputs.chains, inputs.rules])) {
      for (const family of ["ipv4", "ipv6"] as const) {
        try {
          renderRulesFile(family, tablesOf(inputs, family));
        } catch (error) {
          failures.push(errorFailure(error, "rules"));
        }
      }
    }
    return { inputs, failures };
  },

  async diff(_id: string, olds: Props, news: Props) {
    const replaces =
      containsUnknown(news.jobName) || olds.jobName !== news.jobName ? ["jobName"] : [];
    if (
      containsUnknown(news.connection) ||
      connectionAddress(olds.connection) !== connectionAddress(news.connection)
    ) {
      replaces.unshift("connection");
    }
    const changes =
      replaces.length > 0 ||
      olds.inSync === false ||
      ["init", "chains", "rules", "connection"].some(
        (key) =>
          containsUnknown(news[key]) || JSON.stringify(olds[key]) !== JSON.stringify(news[key]),
      );
    return { changes, replaces, deleteBeforeReplace: false };
  },

  async create(inputs: Props): Promise<{ id: string; outs: Props }> {
    const host = await openHost(inputs.connection);
    let outs: Props;
    try {
      outs = await install(host, inputs, undefined);
    } catch (error) {
      // A failed create is not recorded in state, so no delete would ever remove its files.
      const facts = await host.facts().catch(() => undefined);
      const init = inputs.init === "upstart" || facts?.init === "upstart" ? "upstart" : "systemd";
      await removeJob(host, init, inputs.jobName as string).catch(() => undefined);
      throw error;
    }
    return { id: `${connectionAddress(inputs.connection)}/${String(inputs.jobName)}`, outs };
  },

  async read(id: string, props: Props): Promise<{ id: string; props: Props }> {
    const host = await openHost(props.connection, props.hostKey);
    const facts = await host.facts();
    const plan = planFor(props, facts, props.resolvedInit as string);

    const present = await Promise.all(
      plan.allPaths.map(async (path) => [path, await host.readFile(path)] as const),
    );
    if (present.every(([, content]) => content === undefined)) return { id: "", props: {} };
    const contents = new Map(present);
    const filesMatch =
      plan.files.every((file) => contents.get(file.path) === file.content) &&
      plan.allPaths.every(
        (path) => contents.get(path) === undefined || plan.files.some((file) => file.path === path),
      );
    const enabled = plan.files.length === 0 || (await jobEnabled(host, plan));
    return { id, props: { ...props, inSync: filesMatch && enabled } };
  },

  async update(_id: string, olds: Props, news: Props): Promise<{ outs: Props }> {
    const host = await openHost(news.connection, olds.hostKey);
    return { outs: await install(host, news, olds) };
  },

  async delete(_id: string, props: Props): Promise<void> {
    const host = await openHost(props.connection, props.hostKey);
    const init = props.resolvedInit === "upstart" ? "upstart" : "systemd";
    await removeJob(host, init, props.jobName as string);
  },
};

/**
 * Writes the boot job for `inputs` and returns the outputs. The rules files are checked with
 * the host's own restore program (`--test`) before anything is replaced, so a file the host
 * rejects never reaches the boot job.
 */
async function install(host: Host, inputs: Props, olds: Props | undefined): Promise<Props> {
  const facts = await host.facts();
  const init = resolveInit(inputs.init as string, facts, host.address);
  const plan = planFor(inputs, facts, init);
  for (const skipped of plan.skipped) {
    console.log(
      `warning: ${host.address}: rule ${skipped.markerId} (${skipped.table} ${skipped.chain}) is not ` +
        `persisted: ${skipped.reason}`,
    );
  }

  const oldInit = olds?.resolvedInit;
  if ((oldInit === "systemd" || oldInit === "upstart") && oldInit !== init) {
    await removeJob(host, oldInit, inputs.jobName as string);
  }
  if (plan.files.length === 0) {
    await removeJob(host, init, inputs.jobName as string);
  } else {
    await checkRulesFiles(host, plan, facts);
    let jobChanged = false;
    for (const file of plan.files) {
      const changed = await host.writeFileAtomic(file.path, file.content, file.mode);
      if (file.path === plan.jobPath) jobChanged = changed;
    }
    const stale = plan.allPaths.filter((path) => !plan.files.some((file) => file.path === path));
    if (stale.length > 0) await host.run(["rm", "-f", "--", ...stale]);
    await enableJob(host, plan, jobChanged);
  }

  return {
    ...inputs,
    resolvedInit: init,
    unitName: plan.jobName,
    files: plan.files.map((file) => file.path),
    skippedRules: plan.skipped.map((rule) => `${rule.table}/${rule.chain}/${rule.markerId}`),
    inSync: true,
    hostKey: host.hostKey,
  };
}

/**
 * Returns the init system to install the restore for: `init` when given, else the one the host
 * runs. Raises INIT_UNSUPPORTED for a host that runs neither.
 */
export function resolveInit(
  init: string,
  facts: HostFacts,
  address: string,
): "systemd" | "upstart" {
  if (init === "systemd" || init === "upstart") return init;
  const detected = facts.init;
  if (detected === "other") {
    throw new IptablesError(
      "INIT_UNSUPPORTED",
      `${address} runs neither systemd nor upstart (no /run/systemd/system, no upstart initctl), ` +
        `so pulumi-iptables cannot install a boot-time restore there: set persist: false (or drop ` +
        `the PersistenceUnit) and restore the rules with the host's own mechanism, or set init ` +
        `to "systemd" or "upstart" if the host boots with it but is not running it now`,
      { details: { field: "init", host: address } },
    );
  }
  return detected;
}

function planFor(inputs: Props, facts: HostFacts, init: string): PersistencePlan {
  const commands: Partial<Record<Family, FamilyCommands>> = {};
  const wait = supportsWait(facts.iptablesVersion);
  commands.ipv4 = {
    saveCommand: facts.binaries.ipv4.save,
    restoreCommand: facts.binaries.ipv4.restore,
    wait,
  };
  if (facts.binaries.ipv6 !== undefined) {
    commands.ipv6 = {
      saveCommand: facts.binaries.ipv6.save,
      restoreCommand: facts.binaries.ipv6.restore,
      wait,
    };
  }
  return renderPersistence({
    name: inputs.jobName as string,
    init: init as "systemd" | "upstart" | "other",
    tables: { ipv4: tablesOf(inputs, "ipv4"), ipv6: tablesOf(inputs, "ipv6") },
    commands,
  });
}

/** Groups the chains and rules of one family by table. */
function tablesOf(inputs: Props, family: Family): PersistedTable[] {
  const chains = (inputs.chains ?? []) as { family: Family; table: TableName; name: string }[];
  const rules = (inputs.rules ?? []) as {
    family: Family;
    table: TableName;
    chain: string;
    markerId: string;
    order: number;
    rule: string;
  }[];
  const tables = new Map<
    TableName,
    { ownedChains: string[]; rules: PersistedTable["rules"][number][] }
  >();
  const tableOf = (table: TableName) => {
    let entry = tables.get(table);
    if (entry === undefined) {
      entry = { ownedChains: [], rules: [] };
      tables.set(table, entry);
    }
    return entry;
  };
  for (const chain of chains)
    if (chain.family === family) tableOf(chain.table).ownedChains.push(chain.name);
  for (const rule of rules) {
    if (rule.family !== family) continue;
    tableOf(rule.table).rules.push({
      marker: { id: rule.markerId, order: rule.order },
      chain: rule.chain,
      line: rule.rule,
    });
  }
  return [...tables].map(([table, entry]) => ({ table, ...entry }));
}

/** `iptables-restore --wait` exists from iptables 1.6.2 on. */
function supportsWait(version: string): boolean {
  const [major = 0, minor = 0, patch = 0] = version.split(".").map(Number);
  return major > 1 || (major === 1 && (minor > 6 || (minor === 6 && patch >= 2)));
}

/**
 * Runs the restore script with `--test` on copies of the new rules files, against the live
 * tables, and removes the copies. Raises APPLY_REJECTED with the restore program's message.
 */
async function checkRulesFiles(host: Host, plan: PersistencePlan, facts: HostFacts): Promise<void> {
  const script = plan.files.find((file) => file.path === plan.paths.script);
  if (script === undefined) return;
  const checkScript = `${plan.dir}/.check-restore.sh`;
  await host.writeFileAtomic(checkScript, script.content, 0o755);
  try {
    for (const family of ["ipv4", "ipv6"] as const) {
      const rules = plan.files.find((file) => file.path === plan.paths.rules[family]);
      const binaries = facts.binaries[family];
      if (rules === undefined || binaries === undefined) continue;
      const checkRules = `${plan.dir}/.check-rules.${family === "ipv4" ? "v4" : "v6"}`;
      await host.writeFileAtomic(checkRules, rules.content, 0o644);
      const argv = restoreArgv(
        {
          family,
          rulesPath: checkRules,
          saveCommand: binaries.save,
          restoreCommand: binaries.restore,
          wait: supportsWait(facts.iptablesVersion),
        },
        checkScript,
      );
      const result = await host.run([...argv, "--test"], { allowFailure: true });
      if (result.code !== 0) {
        throw new IptablesError(
          "APPLY_REJECTED",
          `${host.address}: ${binaries.restore} rejected the ${family} rules file of boot job ` +
            `${plan.jobName}; no persistence file was changed: ${tailLines(result.stderr || result.stdout, 12)}`,
          { details: { host: host.address, family } },
        );
      }
    }
  } finally {
    await host.run(
      ["rm", "-f", "--", checkScript, `${plan.dir}/.check-rules.v4`, `${plan.dir}/.check-rules.v6`],
      {
        allowFailure: true,
      },
    );
  }
}

async function jobEnabled(host: Host, plan: PersistencePlan): Promise<boolean> {
  if (plan.init === "upstart") return true;
  const result = await host.run(["systemctl", "is-enabled", plan.jobName], { allowFailure: true });
  return result.stdout.trim() === "enabled";
}

/** Makes the init system pick up the job: reload when the file changed, and enable the unit. */
async function enableJob(host: Host, plan: PersistencePlan, changed: boolean): Promise<void> {
  if (plan.init === "upstart") {
    if (changed) await host.run(["initctl", "reload-configuration"], { allowFailure: true });
    return;
  }
  if (changed) await systemctl(host, ["daemon-reload"]);
  if (!(await jobEnabled(host, plan))) await systemctl(host, ["enable", "--quiet", plan.jobName]);
}

/** Disables and removes a boot job's unit or job file and its folder; live rules stay. */
async function removeJob(host: Host, init: "systemd" | "upstart", jobName: string): Promise<void> {
  const paths = persistPaths(jobName);
  if (init === "systemd") {
    const present = await host.readFile(paths.systemdUnitPath);
    if (present !== undefined) {
      await systemctl(host, ["disable", "--quiet", paths.systemdUnitName], true);
      await host.run(["rm", "-f", "--", paths.systemdUnitPath]);
      await systemctl(host, ["daemon-reload"], true);
    }
  } else {
    await host.run(["rm", "-f", "--", paths.upstartJobPath]);
  }
  await host.run(["rm", "-rf", "--", paths.dir]);
}

async function systemctl(host: Host, args: string[], allowFailure = false): Promise<void> {
  try {
    await host.run(["systemctl", ...args]);
  } catch (error) {
    if (allowFailure && isIptablesError(error)) return;
    throw error;
  }
}
