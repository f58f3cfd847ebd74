/**
 * Puppet (Debian's puppet 7.23 with puppetlabs-firewall 3.4.0): `puppet apply` of one manifest
 * on each host, inside the host's namespaces, as an agent runs the catalog it receives. Each
 * host gets its own confdir, vardir and friends, because the hosts share this machine's /var.
 *
 * Rules are `firewall` resources named with a number that orders them within their chain (the
 * module's convention), and the chain is a `firewallchain`. The module defaults `proto` to tcp,
 * so every rule sets `proto => 'all'` to match the recipe. After each change the module also
 * tries to save the rules for boot with `service iptables-persistent save`. Lab hosts have no
 * such service, so that step fails with a warning, as on a host without iptables-persistent.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Lab, LabHost } from "../../src/lab";
import {
  BURST,
  CHAIN,
  exemptSource,
  expectedLines,
  HASHLIMIT_NAME,
  LOG_PREFIX,
  LOG_RATE,
  RATE,
  variant,
  type BenchRule,
  type Variant,
} from "./recipe";
import type { ApplyReport, Tool } from "./tool";

const MODULE_PATH = "/usr/share/puppet/modules";
/** Exit codes of `puppet apply --detailed-exitcodes`: 0 no change, 2 changes, 4 or 6 failures. */
const NO_CHANGES = 0;
const CHANGES = 2;

export function puppetTool(): Tool {
  const dir = mkdtempSync(join(tmpdir(), "bench-puppet-"));
  for (const name of ["recipe", "large"] as const) {
    writeFileSync(join(dir, `${name}.pp`), manifest(variant(name)));
  }

  return {
    key: "puppet",
    name: "Puppet (puppetlabs-firewall)",

    expectedLines: (target) => expectedLines(target, resourceName),

    async reset(_lab, hosts) {
      // A fresh vardir per host: the agent starts without state from an earlier run.
      for (const host of hosts) {
        rmSync(join(dir, host.name), { recursive: true, force: true });
        mkdirSync(join(dir, host.name));
      }
    },

    async apply(lab, hosts, target): Promise<ApplyReport> {
      const results = await Promise.all(hosts.map((host) => applyOn(lab, host, dir, target)));
      const changed = results.filter((r) => r.code === CHANGES).length;
      const changes = results.reduce((sum, r) => sum + r.changes, 0);
      const exits =
        changed === 0 ? `exit 0 on all ${hosts.length}` : `exit 2 on ${changed} of ${hosts.length}`;
      return { unchanged: changed === 0, summary: `${exits}, ${changes} changes` };
    },

    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Names a rule's `firewall` resource. The module sorts the rules of a chain by name. */
function resourceName(rule: BenchRule): string {
  switch (rule.kind) {
    case "jump":
      return `100 send new connections to ${CHAIN}`;
    case "exempt":
      return `500 exempt ${String(rule.index).padStart(3, "0")} ${exemptSource(rule.index)}`;
    case "hashlimit":
      return "800 accept new connections within the rate";
    case "log":
      return "850 log what is over the rate";
    case "reject":
      return "900 reject what is over the rate";
  }
}

function manifest(target: Variant): string {
  const blocks = [`firewallchain { '${CHAIN}:filter:IPv4':\n  ensure => present,\n}`];
  for (const rule of target.rules) {
    const params = [`chain => '${rule.chain}'`, "proto => 'all'", ...ruleParams(rule)];
    blocks.push(
      `firewall { '${resourceName(rule)}':\n${params.map((p) => `  ${p},`).join("\n")}\n}`,
    );
  }
  return `${blocks.join("\n")}\n`;
}

function ruleParams(rule: BenchRule): string[] {
  switch (rule.kind) {
    case "jump":
      return ["ctstate => ['NEW']", `jump => '${CHAIN}'`];
    case "exempt":
      return [`source => '${exemptSource(rule.index)}'`, "jump => 'RETURN'"];
    case "hashlimit":
      return [
        `hashlimit_name => '${HASHLIMIT_NAME}'`,
        `hashlimit_upto => '${RATE}'`,
        `hashlimit_burst => ${BURST}`,
        "hashlimit_mode => 'srcip'",
        "action => 'accept'",
      ];
    case "log":
      return [`limit => '${LOG_RATE}'`, "jump => 'LOG'", `log_prefix => '${LOG_PREFIX}'`];
    case "reject":
      return ["action => 'reject'"];
  }
}

async function applyOn(
  lab: Lab,
  host: LabHost,
  dir: string,
  target: Variant,
): Promise<{ code: number; changes: number }> {
  const base = join(dir, host.name);
  const argv = [
    "puppet",
    "apply",
    "--detailed-exitcodes",
    "--color=false",
    ...["confdir", "vardir", "codedir", "logdir", "rundir", "publicdir"].flatMap((name) => [
      `--${name}`,
      join(base, name),
    ]),
    "--modulepath",
    MODULE_PATH,
    join(dir, `${target.name}.pp`),
  ];
  const result = await lab.exec(host, argv, { timeoutMs: 60 * 60_000 });
  if (result.code !== NO_CHANGES && result.code !== CHANGES) {
    const tail = `${result.stdout}\n${result.stderr}`.trim().split("\n").slice(-15).join("\n");
    throw new Error(`puppet apply on ${host.name} exited with ${result.code}:\n${tail}`);
  }
  return { code: result.code, changes: changeCount(join(base, "publicdir")) };
}

/** Reads `changes: total:` from the run summary Puppet writes after each run. */
function changeCount(publicdir: string): number {
  const summary = readFileSync(join(publicdir, "last_run_summary.yaml"), "utf8");
  const match = /^changes:\s*\n\s+total:\s*(\d+)/m.exec(summary);
  return match === null ? 0 : Number(match[1]);
}
