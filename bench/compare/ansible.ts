/**
 * Ansible (Debian's ansible-core 2.14): one task per rule with `ansible.builtin.iptables`,
 * forks = number of hosts, OpenSSH with Ansible's defaults (ControlMaster, ControlPersist 60 s)
 * plus pipelining, and no fact gathering, which is the fastest common setup.
 *
 * `ansible.builtin.iptables` in ansible-core 2.14 has no hashlimit options, so the hashlimit
 * rule is an `ansible.builtin.shell` task that checks with `iptables -C` and appends only when
 * the rule is missing, the usual workaround. The chain is created as the module's
 * documentation shows, with `chain_management: true` and no rule. In 2.14 that also appends an
 * empty rule (`-A RATE-LIMIT`) to the chain, which the line comparison reports.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LabHost } from "../../src/lab";
import {
  CHAIN,
  exemptSource,
  expectedLines,
  LOG_PREFIX,
  LOG_RATE,
  ruleArgs,
  variant,
  type BenchRule,
  type Variant,
} from "./recipe";
import type { ApplyReport, Tool } from "./tool";

export function ansibleTool(allHosts: readonly LabHost[]): Tool {
  const dir = mkdtempSync(join(tmpdir(), "bench-ansible-"));
  writeFiles(dir, allHosts);
  let runs = 0;

  return {
    key: "ansible",
    name: "Ansible (ansible.builtin.iptables)",

    expectedLines: (target) => expectedLines(target),

    async reset() {},

    async apply(_lab, hosts, target): Promise<ApplyReport> {
      runs += 1;
      // A control directory per run: no run reuses another run's SSH connections.
      const controlDir = join(dir, `cp${runs}`);
      mkdirSync(controlDir);
      try {
        const output = await runPlaybook(dir, controlDir, hosts, target);
        const changed = sumRecap(output, "changed");
        return { unchanged: changed === 0, summary: `changed=${changed}` };
      } finally {
        await closeMasters(controlDir);
      }
    },

    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function writeFiles(dir: string, hosts: readonly LabHost[]): void {
  const knownHosts = hosts.map((host) => `${host.ipv4} ${host.hostKey}`).join("\n");
  writeFileSync(join(dir, "known_hosts"), `${knownHosts}\n`);

  const inventory = [
    "[lab]",
    ...hosts.map((host) => `${host.name} ansible_host=${host.ipv4} ansible_port=${host.port}`),
    "[lab:vars]",
    `ansible_user=${hosts[0].user}`,
    `ansible_ssh_private_key_file=${hosts[0].privateKeyPath}`,
    // Strict checking against the lab's own host key, in a file of our own.
    `ansible_ssh_common_args='-o UserKnownHostsFile=${join(dir, "known_hosts")} -o StrictHostKeyChecking=yes'`,
    "ansible_python_interpreter=/usr/bin/python3",
  ];
  writeFileSync(join(dir, "inventory.ini"), `${inventory.join("\n")}\n`);

  const config = [
    "[defaults]",
    `inventory = ${join(dir, "inventory.ini")}`,
    `local_tmp = ${join(dir, "local")}`,
    `remote_tmp = ${join(dir, "remote")}`,
    "retry_files_enabled = False",
    "nocolor = True",
    "[ssh_connection]",
    "pipelining = True",
  ];
  writeFileSync(join(dir, "ansible.cfg"), `${config.join("\n")}\n`);

  for (const name of ["recipe", "large"] as const) {
    writeFileSync(join(dir, `${name}.yml`), playbook(name));
  }
}

/** Renders the playbook: the chain, then one task per rule in chain order, then INPUT's jump. */
function playbook(name: Variant["name"]): string {
  const tasks = [
    task("create the RATE-LIMIT chain", "ansible.builtin.iptables", [
      `chain: ${CHAIN}`,
      "chain_management: true",
    ]),
    ...variant(name).rules.map(ruleTask),
  ];
  return ["- hosts: all", "  gather_facts: false", "  tasks:", ...tasks].join("\n") + "\n";
}

function ruleTask(rule: BenchRule): string {
  switch (rule.kind) {
    case "exempt":
      return task(`exempt ${exemptSource(rule.index)}`, "ansible.builtin.iptables", [
        `chain: ${CHAIN}`,
        `source: ${exemptSource(rule.index)}`,
        "jump: RETURN",
      ]);
    case "hashlimit": {
      const args = ruleArgs(rule);
      const command =
        `iptables -w -C ${CHAIN} ${args} 2>/dev/null && echo present || ` +
        `{ iptables -w -A ${CHAIN} ${args} && echo added; }`;
      return [
        "    - name: accept new connections within the rate",
        `      ansible.builtin.shell: ${JSON.stringify(command)}`,
        "      register: hashlimit",
        `      changed_when: "'added' in hashlimit.stdout"`,
      ].join("\n");
    }
    case "log":
      return task("log what is over the rate", "ansible.builtin.iptables", [
        `chain: ${CHAIN}`,
        `limit: ${LOG_RATE}`,
        "jump: LOG",
        `log_prefix: ${JSON.stringify(LOG_PREFIX)}`,
      ]);
    case "reject":
      return task("reject what is over the rate", "ansible.builtin.iptables", [
        `chain: ${CHAIN}`,
        "jump: REJECT",
      ]);
    case "jump":
      return task("send new connections to RATE-LIMIT", "ansible.builtin.iptables", [
        "chain: INPUT",
        "ctstate: [NEW]",
        `jump: ${CHAIN}`,
      ]);
  }
}

function task(name: string, module: string, params: readonly string[]): string {
  return [`    - name: ${name}`, `      ${module}:`, ...params.map((p) => `        ${p}`)].join(
    "\n",
  );
}

function runPlaybook(
  dir: string,
  controlDir: string,
  hosts: readonly LabHost[],
  target: Variant,
): Promise<string> {
  const args = [
    "--forks",
    String(hosts.length),
    "--limit",
    hosts.map((host) => host.name).join(","),
    join(dir, `${target.name}.yml`),
  ];
  const env = {
    ...process.env,
    ANSIBLE_CONFIG: join(dir, "ansible.cfg"),
    ANSIBLE_HOME: join(dir, "home"),
    ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir,
  };
  return new Promise((resolve, reject) => {
    execFile(
      "ansible-playbook",
      args,
      { env, maxBuffer: 64 * 1024 * 1024, timeout: 30 * 60_000 },
      (error, stdout, stderr) => {
        if (error) {
          const tail = `${stdout}\n${stderr}`.trim().split("\n").slice(-15).join("\n");
          reject(new Error(`ansible-playbook failed (${error.message.split("\n")[0]}):\n${tail}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** Sums one counter (`changed`, `failed`, ...) over the PLAY RECAP lines of every host. */
export function sumRecap(output: string, counter: string): number {
  const recap = output.slice(output.lastIndexOf("PLAY RECAP"));
  const pattern = new RegExp(`\\b${counter}=(\\d+)`, "g");
  let total = 0;
  for (const match of recap.matchAll(pattern)) total += Number(match[1]);
  return total;
}

/** Asks each SSH control master the run left behind to exit. */
async function closeMasters(controlDir: string): Promise<void> {
  const sockets = readdirSync(controlDir);
  await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<void>((resolve) =>
          execFile(
            "ssh",
            ["-o", `ControlPath=${join(controlDir, socket)}`, "-O", "exit", "lab-host"],
            { timeout: 10_000 },
            () => resolve(),
          ),
        ),
    ),
  );
}
