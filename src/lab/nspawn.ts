/**
 * Lab hosts that really boot: a Debian 12 root tree, built once per machine with debootstrap,
 * booted as a systemd-nspawn container with systemd as PID 1 and sshd inside.
 *
 * The tree is cached under /var/cache/pulumi-iptables/roots/<hash of the recipe>, so later runs
 * on the same machine reuse it; a new machine builds it in about a minute. Each container boots
 * the cached tree through its own overlay, so the cache stays clean, and a reboot boots the same
 * overlay again with a fresh network namespace: rules in kernel memory are gone, files written
 * to /etc stay. The container sits on a lab bridge with a lab address, behind the lab's guard
 * routes, and reaches nothing but the bridge. The same tree, with its kernel, boots in the qemu
 * VM of vm.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  closeSync,
} from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { IptablesError, tailLines } from "../errors";
import { runLocal, type LocalOptions, type LocalResult } from "./exec";
import type { Lab } from "./lab";
import { bridgeName, hostIpv4, hostIpv6, MAX_HOSTS_PER_LAB } from "./network";

/** The Debian release of the boot root. */
export const BOOT_SUITE = "bookworm";

/**
 * Packages of the boot root on top of debootstrap's minbase. The kernel and initramfs-tools
 * are there for the VM; the container ignores them.
 */
export const BOOT_PACKAGES: readonly string[] = [
  "systemd",
  "systemd-sysv",
  "udev",
  "dbus",
  "openssh-server",
  "iptables",
  "conntrack",
  "kmod",
  "iproute2",
  "procps",
  "linux-image-cloud-amd64",
  "initramfs-tools",
];

/** Programs this module runs on the machine, with the Debian package that has each. */
const REQUIRED_PROGRAMS: Readonly<Record<string, string>> = {
  "/usr/sbin/debootstrap": "debootstrap",
  "/usr/bin/systemd-nspawn": "systemd-container",
  "/usr/bin/setpriv": "util-linux",
  "/usr/bin/ssh-keygen": "openssh-client",
};

/** The hostname of every boot host. */
const BOOT_HOSTNAME = "boot-host";

/** Files the recipe writes into the tree after debootstrap, by path inside the tree. */
const ROOT_FILES: Readonly<Record<string, string>> = {
  "/etc/hostname": `${BOOT_HOSTNAME}\n`,
  "/etc/hosts": `127.0.0.1 localhost\n127.0.1.1 ${BOOT_HOSTNAME}\n::1 localhost\n`,
  "/etc/ssh/sshd_config.d/lab.conf":
    "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n",
  // The VM's NIC; the container's host0 gets a static lab address per boot instead.
  "/etc/systemd/network/20-vm.network":
    "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
  "/etc/systemd/journald.conf.d/lab.conf": "[Journal]\nStorage=volatile\n",
  // A small initramfs that mounts the VM's virtio disk; "most" would be 50 MB to unpack in TCG.
  "/etc/initramfs-tools/conf.d/lab.conf": "MODULES=list\nCOMPRESS=gzip\n",
  "/etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\n",
};

/** Units that only slow the boot or log noise on a disposable host. */
const MASKED_UNITS = [
  "e2scrub_reap.service",
  "apt-daily.timer",
  "apt-daily-upgrade.timer",
  "dpkg-db-backup.timer",
  "e2scrub_all.timer",
  "fstrim.timer",
  "systemd-networkd-wait-online.service",
];

/** Bump to rebuild every cached root after a change of the recipe that the hash does not see. */
const RECIPE_VERSION = 1;

/** A built, cached boot root. */
export interface BootRoot {
  /** The cache folder of this recipe. */
  readonly dir: string;
  /** The root tree. Never boot it directly: boot an overlay of it. */
  readonly tree: string;
  /** The private key authorized for root in the tree (OpenSSH format, no passphrase). */
  readonly privateKey: string;
  readonly privateKeyPath: string;
  /** The tree's ed25519 host key, in authorized_keys format, for pinning. */
  readonly hostKey: string;
  /** The VM kernel and initramfs inside the tree. */
  readonly kernelPath: string;
  readonly initrdPath: string;
}

/** Returns the cache folder of boot roots and VM images (PULUMI_IPTABLES_BOOT_CACHE overrides it). */
export function bootCacheDir(): string {
  return process.env.PULUMI_IPTABLES_BOOT_CACHE ?? "/var/cache/pulumi-iptables";
}

/** Returns the folder of running containers' and VMs' overlays and logs. */
export function bootStateDir(): string {
  return process.env.PULUMI_IPTABLES_BOOT_STATE ?? "/var/lib/pulumi-iptables-boot";
}

/** The hash that names a recipe's cache folder: packages, files, masks and version. */
export function bootRecipeKey(): string {
  const recipe = JSON.stringify({
    suite: BOOT_SUITE,
    packages: BOOT_PACKAGES,
    files: ROOT_FILES,
    masked: MASKED_UNITS,
    version: RECIPE_VERSION,
  });
  return createHash("sha256").update(recipe).digest("hex").slice(0, 16);
}

/**
 * Returns the cached boot root, building it first when this machine has none. Concurrent callers
 * (test files in parallel workers) wait for one build. Needs root and the Debian mirror.
 *
 * Throws LAB_SETUP when a program is missing or the build fails; a failed build leaves no cache.
 */
export async function ensureBootRoot(
  options: { log?: (line: string) => void } = {},
): Promise<BootRoot> {
  checkPrograms(REQUIRED_PROGRAMS);
  const key = bootRecipeKey();
  const dir = join(bootCacheDir(), "roots", key);
  if (!existsSync(join(dir, "ready"))) {
    await withLock(`${dir}.lock`, async () => {
      if (existsSync(join(dir, "ready"))) return;
      options.log?.(`building the boot root ${dir} with debootstrap (about a minute)`);
      await buildRoot(dir);
    });
  }
  return openRoot(dir);
}

function openRoot(dir: string): BootRoot {
  const tree = join(dir, "tree");
  const kernel = readdirSync(join(tree, "boot")).find((name) => name.startsWith("vmlinuz-"));
  if (kernel === undefined) {
    throw new IptablesError("LAB_SETUP", `the boot root ${tree} has no kernel in /boot`);
  }
  const version = kernel.slice("vmlinuz-".length);
  const privateKeyPath = join(dir, "id_ed25519");
  const hostKeyLine = readFileSync(join(tree, "etc/ssh/ssh_host_ed25519_key.pub"), "utf8");
  return {
    dir,
    tree,
    privateKey: readFileSync(privateKeyPath, "utf8"),
    privateKeyPath,
    hostKey: hostKeyLine.trim().split(" ").slice(0, 2).join(" "),
    kernelPath: join(tree, "boot", kernel),
    initrdPath: join(tree, "boot", `initrd.img-${version}`),
  };
}

async function buildRoot(dir: string): Promise<void> {
  const building = `${dir}.building`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true });
  const tree = join(building, "tree");
  const long: LocalOptions = { timeoutMs: 15 * 60_000 };
  try {
    const result = await runLocal(
      [
        "debootstrap",
        "--variant=minbase",
        `--include=${BOOT_PACKAGES.join(",")}`,
        BOOT_SUITE,
        tree,
        debianMirror(),
      ],
      { ...long, allowFailure: true },
    );
    writeFileSync(join(building, "debootstrap.log"), result.stdout + result.stderr);
    if (result.code !== 0) {
      throw new IptablesError(
        "LAB_SETUP",
        `debootstrap of the boot root failed with exit code ${result.code}: ` +
          tailLines(result.stdout + result.stderr, 10),
      );
    }

    const keyPath = join(building, "id_ed25519");
    await runLocal([
      "ssh-keygen",
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "pulumi-iptables-boot",
      "-f",
      keyPath,
    ]);
    for (const [path, content] of Object.entries(ROOT_FILES)) {
      mkdirSync(join(tree, path, ".."), { recursive: true });
      writeFileSync(join(tree, path), content);
    }
    mkdirSync(join(tree, "root/.ssh"), { recursive: true, mode: 0o700 });
    writeFileSync(join(tree, "root/.ssh/authorized_keys"), readFileSync(`${keyPath}.pub`), {
      mode: 0o600,
    });
    await runLocal(["chroot", tree, "systemctl", "enable", "systemd-networkd"], long);
    await runLocal(["chroot", tree, "systemctl", "mask", ...MASKED_UNITS], long);
    await runLocal(["chroot", tree, "update-initramfs", "-u", "-k", "all"], long);

    writeFileSync(join(building, "ready"), `${new Date().toISOString()}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(building, dir);
  } catch (error) {
    rmSync(building, { recursive: true, force: true });
    throw error;
  }
  removeOldRoots(dir);
}

/**
 * Removes the cached roots of earlier recipes (about 2.5 GB each with the VM image), except
 * those a live process is building or locking.
 */
function removeOldRoots(current: string): void {
  const roots = join(current, "..");
  for (const entry of readdirSync(roots)) {
    const path = join(roots, entry);
    if (path === current || !/^[0-9a-f]{16}$/.test(entry)) continue;
    if (existsSync(`${path}.lock`) && lockOwnerAlive(`${path}.lock`)) continue;
    rmSync(path, { recursive: true, force: true });
  }
}

/**
 * Returns the Debian mirror this machine's apt uses (the first deb822 or one-line source of the
 * Debian archive), so the build reaches only what apt already reaches.
 */
export function debianMirror(): string {
  const files = ["/etc/apt/sources.list"];
  const dir = "/etc/apt/sources.list.d";
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith(".sources") || name.endsWith(".list")) files.push(join(dir, name));
    }
  }
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, "utf8");
    const uris = [
      ...text.matchAll(/^URIs:\s*(\S+)/gm),
      ...text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm),
    ];
    const mirror = uris.map((match) => match[1]).find((uri) => /\/debian\/?$/.test(uri));
    if (mirror !== undefined) return mirror;
  }
  throw new IptablesError(
    "LAB_SETUP",
    "no Debian archive source found in /etc/apt/sources.list or /etc/apt/sources.list.d: " +
      "configure apt with a Debian mirror",
  );
}

function checkPrograms(programs: Readonly<Record<string, string>>): void {
  const missing = Object.entries(programs).filter(([path]) => !existsSync(path));
  if (missing.length > 0) {
    throw new IptablesError(
      "LAB_SETUP",
      `boot hosts need ${missing.map(([path]) => path).join(", ")}: install them with ` +
        `"apt-get install ${[...new Set(missing.map(([, pkg]) => pkg))].join(" ")}"`,
    );
  }
}

/**
 * Runs `action` while holding a lock folder. A lock whose owner process is gone is taken over,
 * so a crashed build never blocks the next one.
 */
export async function withLock<T>(
  path: string,
  action: () => Promise<T>,
  timeoutMs = 20 * 60_000,
): Promise<T> {
  mkdirSync(join(path, ".."), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(path);
      writeFileSync(join(path, "pid"), String(process.pid));
      break;
    } catch {
      if (!lockOwnerAlive(path)) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new IptablesError(
          "LAB_SETUP",
          `timed out after ${timeoutMs} ms waiting for the lock ${path}`,
        );
      }
      await sleep(1000);
    }
  }
  try {
    return await action();
  } finally {
    rmSync(path, { recursive: true, force: true });
  }
}

function lockOwnerAlive(path: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(join(path, "pid"), "utf8"));
  } catch {
    // The owner has made the folder but not yet written its PID.
    return true;
  }
  return processAlive(pid);
}

/** Tells whether a process runs; a zombie does not. */
export function processAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The lab host indexes that boot containers use: above every index a lab gives its hosts. */
const FIRST_CONTAINER_INDEX = MAX_HOSTS_PER_LAB;
const CONTAINER_SLOTS = 5;

export interface ContainerOptions {
  readonly root: BootRoot;
  /** The lab whose bridge the container joins; its guard routes cover the container's address. */
  readonly lab: Lab;
  /** Index of the lab's container address to take, 0 to 4. @default 0 */
  readonly slot?: number;
}

/** How long a boot took, in milliseconds from the start of systemd-nspawn. */
export interface BootTiming {
  /** Until sshd sent its banner. */
  readonly sshMs: number;
  /** Until `systemctl is-system-running --wait` returned. */
  readonly bootedMs: number;
}

/**
 * A systemd-nspawn container booting the boot root. `start()` boots it, `reboot()` runs
 * `systemctl reboot` inside and boots the same overlay again, `stop()` shuts it down and removes
 * its state. The container's network namespace is new on every boot.
 */
export class BootContainer {
  readonly name: string;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly port = 22;
  readonly user = "root";
  readonly root: BootRoot;
  readonly stateDir: string;
  readonly consolePath: string;
  private readonly bridge: string;
  private child: ChildProcess | undefined;
  private exited: Promise<number> | undefined;

  constructor(options: ContainerOptions) {
    const slot = options.slot ?? 0;
    if (!Number.isInteger(slot) || slot < 0 || slot >= CONTAINER_SLOTS) {
      throw new IptablesError(
        "LAB_SETUP",
        `container slot ${slot} is invalid: use 0 to ${CONTAINER_SLOTS - 1}`,
      );
    }
    const index = FIRST_CONTAINER_INDEX + slot;
    this.root = options.root;
    this.name = `pib-${options.lab.slot}-${slot}`;
    this.ipv4 = hostIpv4(options.lab.slot, index);
    this.ipv6 = hostIpv6(options.lab.slot, index);
    this.bridge = bridgeName(options.lab.slot);
    this.stateDir = join(bootStateDir(), this.name);
    this.consolePath = join(this.stateDir, "console.log");
  }

  /** Boots the container from a new, empty overlay and waits until systemd reports the boot done. */
  async start(): Promise<BootTiming> {
    await stopStale(this.stateDir);
    rmSync(this.stateDir, { recursive: true, force: true });
    for (const sub of ["upper", "work", "merged"])
      mkdirSync(join(this.stateDir, sub), { recursive: true });
    const network = join(this.stateDir, "upper/etc/systemd/network");
    mkdirSync(network, { recursive: true });
    writeFileSync(join(network, "10-host0.network"), this.networkConfig());
    return this.boot();
  }

  /** Reboots with `systemctl reboot` inside and waits for the next boot to finish. */
  async reboot(): Promise<BootTiming> {
    const exited = this.exited;
    if (exited === undefined)
      throw new IptablesError("LAB_SETUP", `container ${this.name} is not running`);
    await this.exec(["systemctl", "reboot"]);
    const code = await withTimeout(
      exited,
      60_000,
      `container ${this.name} to shut down for reboot`,
    );
    // systemd-nspawn exits with 133 when the container asked for a reboot (systemd-nspawn(1)).
    if (code !== 133) {
      throw new IptablesError(
        "LAB_SETUP",
        `container ${this.name} exited with ${code} instead of 133 (reboot); console: ${this.consoleTail()}`,
      );
    }
    return this.boot();
  }

  /** Runs `argv` inside the container's namespaces as root, without SSH. */
  async exec(argv: readonly string[], options: LocalOptions = {}): Promise<LocalResult> {
    const leader = this.leaderPid();
    return runLocal(
      [
        "nsenter",
        `--target=${leader}`,
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--",
        ...argv,
      ],
      {
        allowFailure: true,
        ...options,
      },
    );
  }

  /** Shuts the container down (SIGKILL after 20 s) and removes its overlay and logs. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  private async boot(): Promise<BootTiming> {
    const started = Date.now();
    const pidPath = join(this.stateDir, "nspawn.pid");
    const consoleFd = openSync(this.consolePath, "a");
    const script = [
      "set -e",
      `mount -t overlay overlay -o lowerdir=${this.root.tree},upperdir=${this.stateDir}/upper,` +
        `workdir=${this.stateDir}/work ${this.stateDir}/merged`,
      `echo $$ > ${pidPath}`,
      [
        "exec systemd-nspawn --boot --register=no --keep-unit --quiet",
        `--machine=${this.name} --hostname=${BOOT_HOSTNAME}`,
        `--directory=${this.stateDir}/merged --network-bridge=${this.bridge}`,
        "--console=read-only",
      ].join(" "),
    ].join("\n");
    // The overlay lives in a private mount namespace, so it disappears with the container.
    // PDEATHSIG stops the container when the test process dies without calling stop().
    const child = spawn(
      "setpriv",
      [
        "--pdeathsig",
        "TERM",
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
      ],
      { stdio: ["ignore", consoleFd, consoleFd] },
    );
    closeSync(consoleFd);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1))),
    );

    try {
      await waitForSshBanner(this.ipv4, this.port, 60_000, () => this.child?.exitCode !== null);
      const sshMs = Date.now() - started;
      const state = await this.exec(["systemctl", "is-system-running", "--wait"], {
        timeoutMs: 120_000,
      });
      const bootedMs = Date.now() - started;
      if (!["running", "degraded"].includes(state.stdout.trim())) {
        throw new IptablesError(
          "LAB_SETUP",
          `container ${this.name} ended its boot as "${state.stdout.trim()}"`,
        );
      }
      return { sshMs, bootedMs };
    } catch (error) {
      throw new IptablesError(
        "LAB_SETUP",
        `container ${this.name} did not boot: ${(error as Error).message}; console: ${this.consoleTail()}`,
        { cause: error },
      );
    }
  }

  private networkConfig(): string {
    return [
      "[Match]",
      "Name=host0",
      "",
      "[Network]",
      `Address=${this.ipv4}/24`,
      `Address=${this.ipv6}/64`,
      "LinkLocalAddressing=no",
      "IPv6AcceptRA=no",
      "IPv6DuplicateAddressDetection=0",
      "",
    ].join("\n");
  }

  /** Returns the PID, in this machine's PID namespace, of the container's PID 1 (systemd). */
  private leaderPid(): number {
    const nspawn = this.child?.pid;
    if (nspawn === undefined || this.child?.exitCode !== null) {
      throw new IptablesError("LAB_SETUP", `container ${this.name} is not running`);
    }
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const status = readFileSync(`/proc/${entry}/status`, "utf8");
        const parent = /^PPid:\s+(\d+)/m.exec(status)?.[1];
        const nspid = /^NSpid:\s+(.+)$/m.exec(status)?.[1].trim().split(/\s+/);
        if (Number(parent) === nspawn && nspid !== undefined && nspid[nspid.length - 1] === "1") {
          return Number(entry);
        }
      } catch {
        // The process ended while being read.
      }
    }
    throw new IptablesError("LAB_SETUP", `container ${this.name} has no PID 1 yet`);
  }

  private async kill(): Promise<void> {
    const child = this.child;
    const exited = this.exited;
    this.child = undefined;
    this.exited = undefined;
    if (
      child === undefined ||
      exited === undefined ||
      child.exitCode !== null ||
      child.signalCode !== null
    )
      return;
    // SIGTERM makes systemd-nspawn ask the container to power off.
    child.kill("SIGTERM");
    const done = await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!done) {
      child.kill("SIGKILL");
      await exited;
    }
  }

  private consoleTail(): string {
    return existsSync(this.consolePath)
      ? tailLines(readFileSync(this.consolePath, "utf8"), 15)
      : "(no console log)";
  }
}

/** Kills a container left running by an earlier process that died (its PID file is in the state folder). */
async function stopStale(stateDir: string): Promise<void> {
  const pidPath = join(stateDir, "nspawn.pid");
  if (!existsSync(pidPath)) return;
  const pid = Number(readFileSync(pidPath, "utf8"));
  if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return;
  const command = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  if (!command.startsWith("systemd-nspawn")) return;
  process.kill(pid, "SIGKILL");
  for (let attempt = 0; attempt < 100 && processAlive(pid); attempt++) await sleep(50);
  appendFileSync(join(stateDir, "console.log"), `killed stale systemd-nspawn ${pid}\n`);
}

/**
 * Waits until `address:port` sends an SSH banner, which sshd sends only once it is ready to
 * authenticate. Gives up early when `gaveUp()` returns true (the boot process exited).
 */
export async function waitForSshBanner(
  address: string,
  port: number,
  timeoutMs: number,
  gaveUp: () => boolean = () => false,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gaveUp())
      throw new IptablesError(
        "LAB_SETUP",
        "the boot process exited before sshd accepted connections",
      );
    if (await readsSshBanner(address, port)) return;
    await sleep(100);
  }
  throw new IptablesError(
    "LAB_SETUP",
    `sshd on ${address}:${port} sent no banner within ${timeoutMs} ms`,
  );
}

function readsSshBanner(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port, timeout: 2000 });
    let received = "";
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.on("data", (data: Buffer) => {
      received += data.toString("latin1");
      if (received.startsWith("SSH-")) finish(true);
    });
    socket.once("error", () => finish(false));
    socket.once("timeout", () => finish(false));
    socket.once("close", () => finish(received.startsWith("SSH-")));
  });
}

/** Resolves with `promise`, or raises LAB_SETUP after `timeoutMs` naming what was awaited. */
export async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new IptablesError("LAB_SETUP", `timed out after ${timeoutMs} ms waiting for ${what}`),
        ),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
