/**
 * Disposable Linux hosts on this machine for tests, examples and benchmarks.
 *
 * A lab host is a network namespace on a per-lab bridge in the root namespace. Its own sshd runs
 * in a private mount and UTS namespace. There /etc is a copy-on-write overlay of this machine's
 * /etc, so a file written on one host is visible to no other host and not to this machine. /run
 * and /root are private tmpfs mounts, and /etc/alternatives selects the host's iptables backend.
 * The kernel, /proc/sys outside net.* and module parameters stay shared with this machine, so
 * nothing here writes them.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { IptablesError } from "../errors";
import type { Backend } from "../netfilter/types";
import { runLocal, type LocalOptions, type LocalResult } from "./exec";
import {
  DEFAULT_LAB_NAME,
  inventoryPath,
  labBaseDir,
  labDir,
  type Inventory,
  type InventoryHost,
} from "./inventory";
import {
  bridgeName,
  gatewayIpv4,
  gatewayIpv6,
  hostIpv4,
  hostIpv6,
  installGuardRoutes,
  MAX_HOSTS_PER_LAB,
  MAX_SLOT,
  MIN_SLOT,
  netnsName,
  vethName,
} from "./network";

export interface LabHostSpec {
  /** The iptables backend `iptables` selects on this host. @default "nft" */
  readonly backend?: Backend;
}

export interface LabOptions {
  /** Lab name, unique among labs running at once; also its state folder name. @default "default" */
  readonly name?: string;
  /** How many nft hosts, or one spec per host. */
  readonly hosts: number | readonly LabHostSpec[];
}

/** A running lab host, with its private key loaded. */
export interface LabHost extends InventoryHost {
  readonly privateKey: string;
}

const SUDO_USER = "deploy";
const REQUIRED_PROGRAMS = [
  "/usr/sbin/ip",
  "/usr/bin/unshare",
  "/usr/bin/nsenter",
  "/usr/sbin/sshd",
  "/usr/bin/ssh-keygen",
  "/usr/sbin/iptables-nft",
  "/usr/sbin/iptables-legacy",
  "/usr/sbin/useradd",
];

/** The alternatives a backend selects; the names are Debian's update-alternatives groups. */
const ALTERNATIVES = [
  "iptables",
  "iptables-restore",
  "iptables-save",
  "ip6tables",
  "ip6tables-restore",
  "ip6tables-save",
];

export class Lab {
  readonly name: string;
  readonly slot: number;
  readonly hosts: readonly LabHost[];
  readonly gatewayIpv4: string;
  readonly gatewayIpv6: string;
  readonly inventoryPath: string;

  constructor(inventory: Inventory) {
    this.name = inventory.name;
    this.slot = inventory.slot;
    this.gatewayIpv4 = inventory.gatewayIpv4;
    this.gatewayIpv6 = inventory.gatewayIpv6;
    this.inventoryPath = inventoryPath(inventory.name);
    this.hosts = inventory.hosts.map((host) => ({
      ...host,
      privateKey: readFileSync(host.privateKeyPath, "utf8"),
    }));
  }

  /**
   * Runs `argv` inside a host's network, mount and UTS namespaces, as root, without SSH.
   * Returns the exit code instead of raising on failure.
   */
  exec(
    host: LabHost | number,
    argv: readonly string[],
    options: LocalOptions = {},
  ): Promise<LocalResult> {
    const target = typeof host === "number" ? this.hosts[host] : host;
    return runLocal(
      ["nsenter", `--target=${target.sshdPid}`, "--net", "--mount", "--uts", "--", ...argv],
      { allowFailure: true, ...options },
    );
  }

  /** Removes every namespace, veth, bridge, process and file of this lab. */
  destroy(): Promise<void> {
    return destroyLab(this.name);
  }
}

/** Creates a lab, replacing any leftovers of an earlier lab of the same name. */
export async function createLab(options: LabOptions): Promise<Lab> {
  const name = options.name ?? DEFAULT_LAB_NAME;
  const specs =
    typeof options.hosts === "number"
      ? Array.from({ length: options.hosts }, () => ({}) as LabHostSpec)
      : options.hosts;
  validateOptions(name, specs);
  checkPrerequisites();

  // The guard routes go in before any namespace exists, so a packet for a lab address that is
  // not up yet is rejected here instead of leaving by the default route.
  await installGuardRoutes();
  await destroyLab(name);

  const dir = labDir(name);
  // Other users must traverse these folders: sshd reads authorized_keys as the user logging in.
  mkdirSync(join(dir, "hosts"), { recursive: true });
  chmodSync(labBaseDir(), 0o711);
  chmodSync(dir, 0o711);
  const slot = claimSlot(name);
  try {
    const keys = await generateKeys(dir);
    await createBridge(slot);
    const password = randomBytes(12).toString("base64url");
    const hosts = await Promise.all(
      specs.map((spec, index) => startHost({ dir, slot, index, spec, keys, password })),
    );
    const inventory: Inventory = {
      name,
      slot,
      gatewayIpv4: gatewayIpv4(slot),
      gatewayIpv6: gatewayIpv6(slot),
      hosts,
    };
    writeFileSync(inventoryPath(name), `${JSON.stringify(inventory, null, 2)}\n`, { mode: 0o600 });
    return new Lab(inventory);
  } catch (error) {
    await destroyLab(name);
    throw error;
  }
}

function validateOptions(name: string, specs: readonly LabHostSpec[]): void {
  if (!/^[a-z0-9][a-z0-9-]{0,40}$/.test(name)) {
    throw new IptablesError(
      "LAB_SETUP",
      `lab name "${name}" is invalid: use 1 to 41 lowercase letters, digits and "-"`,
    );
  }
  if (specs.length < 1 || specs.length > MAX_HOSTS_PER_LAB) {
    throw new IptablesError(
      "LAB_SETUP",
      `a lab needs 1 to ${MAX_HOSTS_PER_LAB} hosts, not ${specs.length}`,
    );
  }
}

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) {
    throw new IptablesError(
      "LAB_SETUP",
      "lab hosts need root (network namespaces, veth links, mounts): run as root",
    );
  }
  const missing = REQUIRED_PROGRAMS.filter((path) => !existsSync(path));
  if (missing.length > 0) {
    throw new IptablesError(
      "LAB_SETUP",
      `lab hosts need ${missing.join(", ")}: install them with ` +
        `"apt-get install iptables openssh-server openssh-client iproute2 util-linux passwd"`,
    );
  }
}

/**
 * Takes the lowest free slot. A claim is a file holding the lab name, written to a temporary
 * path and hard-linked into place: link() fails when the claim exists, so two processes never
 * take one slot, and a claim is never seen without its name.
 */
function claimSlot(name: string): number {
  const slotsDir = join(labBaseDir(), ".slots");
  mkdirSync(slotsDir, { recursive: true });
  const draft = join(slotsDir, `.draft-${process.pid}-${randomBytes(4).toString("hex")}`);
  writeFileSync(draft, name);
  try {
    for (let slot = MIN_SLOT; slot <= MAX_SLOT; slot++) {
      try {
        linkSync(draft, join(slotsDir, String(slot)));
        return slot;
      } catch {
        continue;
      }
    }
  } finally {
    rmSync(draft, { force: true });
  }
  throw new IptablesError(
    "LAB_SETUP",
    `all ${MAX_SLOT} lab slots are taken: remove labs with "npm run lab -- down --all"`,
  );
}

interface LabKeys {
  readonly hostKeyPath: string;
  readonly hostKey: string;
  readonly clientKeyPath: string;
  readonly authorizedKeysPath: string;
}

/** Generates the lab's host key (shared by all its sshds) and the client key it authorizes. */
async function generateKeys(dir: string): Promise<LabKeys> {
  const hostKeyPath = join(dir, "ssh_host_ed25519_key");
  const clientKeyPath = join(dir, "id_ed25519");
  const authorizedKeysPath = join(dir, "authorized_keys");
  for (const path of [hostKeyPath, clientKeyPath]) {
    await runLocal([
      "ssh-keygen",
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "pulumi-iptables-lab",
      "-f",
      path,
    ]);
  }
  writeFileSync(authorizedKeysPath, readFileSync(`${clientKeyPath}.pub`), { mode: 0o644 });
  const hostKey = readFileSync(`${hostKeyPath}.pub`, "utf8")
    .trim()
    .split(" ")
    .slice(0, 2)
    .join(" ");
  return { hostKeyPath, hostKey, clientKeyPath, authorizedKeysPath };
}

async function createBridge(slot: number): Promise<void> {
  const bridge = bridgeName(slot);
  await runLocal(["ip", "link", "add", bridge, "type", "bridge"]);
  await runLocal(["ip", "addr", "add", `${gatewayIpv4(slot)}/24`, "dev", bridge]);
  await runLocal(["ip", "addr", "add", `${gatewayIpv6(slot)}/64`, "dev", bridge, "nodad"]);
  await runLocal(["ip", "link", "set", bridge, "up"]);
}

interface StartHostRequest {
  readonly dir: string;
  readonly slot: number;
  readonly index: number;
  readonly spec: LabHostSpec;
  readonly keys: LabKeys;
  readonly password: string;
}

async function startHost(request: StartHostRequest): Promise<InventoryHost> {
  const { dir, slot, index, spec, keys, password } = request;
  const backend = spec.backend ?? "nft";
  const netns = netnsName(slot, index);
  const veth = vethName(slot, index);
  const ipv4 = hostIpv4(slot, index);
  const ipv6 = hostIpv6(slot, index);
  const name = `h${index}`;

  // The host gets no default route: it reaches the lab bridge and nothing else.
  await runLocal(["ip", "netns", "add", netns]);
  await runLocal([
    "ip",
    "link",
    "add",
    veth,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    netns,
  ]);
  await runLocal(["ip", "link", "set", veth, "master", bridgeName(slot), "up"]);
  await runLocal(["ip", "-n", netns, "link", "set", "lo", "up"]);
  await runLocal(["ip", "-n", netns, "addr", "add", `${ipv4}/24`, "dev", "eth0"]);
  await runLocal(["ip", "-n", netns, "addr", "add", `${ipv6}/64`, "dev", "eth0", "nodad"]);
  await runLocal(["ip", "-n", netns, "link", "set", "eth0", "up"]);

  const hostDir = join(dir, "hosts", name);
  for (const sub of ["upper", "work"]) mkdirSync(join(hostDir, sub), { recursive: true });
  const configPath = join(hostDir, "sshd_config");
  writeFileSync(configPath, renderSshdConfig({ ipv4, ipv6, keys }));
  const logPath = join(hostDir, "sshd.log");

  const sshdPid = await spawnSshd({ netns, hostDir, configPath, logPath, name, backend, password });
  await waitForPort(ipv4, 22, 10_000, logPath);

  return {
    index,
    name,
    netns,
    ipv4,
    ipv6,
    port: 22,
    user: "root",
    privateKeyPath: keys.clientKeyPath,
    hostKey: keys.hostKey,
    backend,
    sudoUser: SUDO_USER,
    sudoPassword: password,
    sshdPid,
  };
}

function renderSshdConfig(args: { ipv4: string; ipv6: string; keys: LabKeys }): string {
  return [
    `ListenAddress ${args.ipv4}:22`,
    `ListenAddress [${args.ipv6}]:22`,
    `HostKey ${args.keys.hostKeyPath}`,
    `AuthorizedKeysFile ${args.keys.authorizedKeysPath}`,
    "PidFile /run/sshd.pid",
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication yes",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    // The lab's files live in a root-owned folder that sshd's ownership checks would reject.
    "StrictModes no",
    "AllowTcpForwarding yes",
    "AllowAgentForwarding yes",
    "X11Forwarding no",
    "PrintMotd no",
    "MaxStartups 100:30:200",
    "LogLevel ERROR",
    "Subsystem sftp internal-sftp",
    "",
  ].join("\n");
}

interface SpawnSshdRequest {
  readonly netns: string;
  readonly hostDir: string;
  readonly configPath: string;
  readonly logPath: string;
  readonly name: string;
  readonly backend: Backend;
  readonly password: string;
}

/**
 * Starts the host's sshd inside its network namespace and a new mount and UTS namespace, after
 * mounting the host's /etc overlay and /run tmpfs there. Returns the sshd PID: every `exec` in
 * the chain replaces the process, so the PID is sshd's and its namespaces are the host's.
 */
async function spawnSshd(request: SpawnSshdRequest): Promise<number> {
  const { hostDir, backend } = request;
  const alternatives = ALTERNATIVES.map((group) => {
    const program = group.replace(/^(ip6?tables)/, `$1-${backend}`);
    return `ln -sfn /usr/sbin/${program} /etc/alternatives/${group}`;
  });
  const script = [
    "set -e",
    `mount -t overlay overlay -o lowerdir=/etc,upperdir=${hostDir}/upper,workdir=${hostDir}/work /etc`,
    "mount -t tmpfs -o mode=0755 tmpfs /run",
    // A fresh home for root: this machine's own shell start-up files (a pyenv rehash, say) must
    // not run, or contend for locks, in every SSH session of every lab host.
    "mount -t tmpfs -o mode=0700 tmpfs /root",
    // sshd exits at once unless its privilege separation folder exists.
    "mkdir -p /run/sshd /run/home",
    `hostname ${request.name}`,
    // sudo warns on every call unless the hostname resolves.
    `echo "127.0.1.1 ${request.name}" >> /etc/hosts`,
    ...alternatives,
    `useradd -M -d /run/home/${SUDO_USER} -s /bin/sh ${SUDO_USER} 2>/dev/null || true`,
    `mkdir -p /run/home/${SUDO_USER} && chown ${SUDO_USER} /run/home/${SUDO_USER}`,
    `echo "${SUDO_USER}:${request.password}" | chpasswd`,
    "mkdir -p /etc/sudoers.d",
    `echo "${SUDO_USER} ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/${SUDO_USER}`,
    `chmod 0440 /etc/sudoers.d/${SUDO_USER}`,
    `exec /usr/sbin/sshd -D -f ${request.configPath} -E ${request.logPath}`,
  ].join("\n");

  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      request.netns,
      "unshare",
      "--mount",
      "--uts",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
    ],
    { detached: true, stdio: "ignore" },
  );
  child.unref();
  if (child.pid === undefined) {
    throw new IptablesError("LAB_SETUP", `failed to start sshd for lab host ${request.name}`);
  }
  return child.pid;
}

/** Waits until a TCP port accepts connections, or raises LAB_SETUP with sshd's log. */
async function waitForPort(
  address: string,
  port: number,
  timeoutMs: number,
  logPath: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: address, port, timeout: 500 });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
      socket.once("timeout", () => {
        socket.destroy();
        resolve(false);
      });
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const log = existsSync(logPath) ? readFileSync(logPath, "utf8").trim() : "(no log)";
  throw new IptablesError(
    "LAB_SETUP",
    `sshd on lab host ${address}:${port} did not accept connections within ${timeoutMs} ms; sshd log: ${log}`,
  );
}

/**
 * Removes a lab: kills every process in its namespaces, deletes the namespaces (which deletes
 * their veth pairs and ends their mounts), the bridge, the state folder and the slot claim.
 * A lab that does not exist is a no-op.
 */
export async function destroyLab(name: string): Promise<void> {
  const slotsDir = join(labBaseDir(), ".slots");
  const slots = existsSync(slotsDir)
    ? readdirSync(slotsDir).filter(
        (slot) => /^\d+$/.test(slot) && readFileSync(join(slotsDir, slot), "utf8") === name,
      )
    : [];
  for (const slot of slots) {
    await destroySlot(Number(slot));
    rmSync(join(slotsDir, slot), { force: true });
  }
  rmSync(labDir(name), { recursive: true, force: true });
}

/** Removes every lab, including leftovers whose state folder is gone. */
export async function destroyAllLabs(): Promise<void> {
  const base = labBaseDir();
  if (existsSync(base)) {
    for (const entry of readdirSync(base)) {
      if (!entry.startsWith(".")) await destroyLab(entry);
    }
  }
  // Namespaces and links of the lab's naming scheme with no claim left (a crash between steps).
  const namespaces = await listLabNamespaces();
  const orphanSlots = new Set(namespaces.map((ns) => Number(ns.split("-")[1])));
  const links = await runLocal(["ip", "-o", "link", "show"]);
  for (const match of links.stdout.matchAll(/^\d+: pil(?:br)?(\d+)/gm))
    orphanSlots.add(Number(match[1]));
  for (const slot of orphanSlots) await destroySlot(slot);
  rmSync(join(base, ".slots"), { recursive: true, force: true });
}

/** Lists network namespaces of the lab's naming scheme. */
export async function listLabNamespaces(): Promise<string[]> {
  const result = await runLocal(["ip", "netns", "list"]);
  return result.stdout
    .split("\n")
    .map((line) => line.split(" ")[0])
    .filter((ns) => /^pil-\d+-h\d+$/.test(ns));
}

async function destroySlot(slot: number): Promise<void> {
  const prefix = `pil-${slot}-h`;
  for (const ns of await listLabNamespaces()) {
    if (!ns.startsWith(prefix)) continue;
    await killNamespaceProcesses(ns);
    await runLocal(["ip", "netns", "del", ns], { allowFailure: true });
  }
  const links = await runLocal(["ip", "-o", "link", "show"]);
  const ours = new RegExp(`^\\d+: (pil${slot}h\\d+|pilbr${slot})[@:]`, "gm");
  for (const match of links.stdout.matchAll(ours)) {
    await runLocal(["ip", "link", "del", match[1]], { allowFailure: true });
  }
}

/** Kills the processes of a lab namespace (sshd, its sessions, detached helpers) and waits for them. */
async function killNamespaceProcesses(ns: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const result = await runLocal(["ip", "netns", "pids", ns], { allowFailure: true });
    const pids = result.stdout.split("\n").filter(Boolean).map(Number);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new IptablesError(
    "LAB_SETUP",
    `processes in lab namespace ${ns} did not exit after SIGKILL`,
  );
}
