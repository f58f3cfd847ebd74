/**
 * A lab host with a kernel of its own: a qemu VM (software emulation) booting the boot root of
 * nspawn.ts with Debian's cloud kernel, for what a network namespace cannot show: conntrack
 * sizing, module loading and a real reboot.
 *
 * The VM's disk is a copy-on-write qcow2 layer over an ext4 image of the cached tree, made once
 * per machine and kept beside the tree. Networking is qemu's user mode with `restrict=on`: the
 * guest reaches nothing outside qemu, and the only way in is sshd forwarded to 127.0.0.1 on a
 * free port. Software emulation needs no /dev/kvm; `tb-size=128` keeps qemu's translation cache
 * at 128 MB instead of a large share of the machine's memory.
 */
import { spawn, type ChildProcess } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { IptablesError, tailLines } from "../errors";
import { runLocal, type LocalOptions, type LocalResult } from "./exec";
import {
  bootStateDir,
  sleep,
  waitForSshBanner,
  withLock,
  withTimeout,
  type BootRoot,
} from "./nspawn";

const QEMU = "/usr/bin/qemu-system-x86_64";
const QEMU_IMG = "/usr/bin/qemu-img";

/**
 * The address range of qemu's internal user-mode network, inside the lab's IPv4 range. It exists
 * only inside the qemu process: nothing on this machine routes it.
 */
const GUEST_NETWORK = "198.19.255.0/24";

/** Size of the VM's root file system; the image file is sparse. */
const IMAGE_SIZE = "2G";

export interface VmOptions {
  readonly root: BootRoot;
  /** Unique among VMs running at once; names the state folder. */
  readonly name: string;
  /** Guest memory in MiB. @default 512 */
  readonly memoryMiB?: number;
}

/** How long a boot took, in milliseconds from the start of qemu or of the reboot. */
export interface VmBootTiming {
  readonly sshMs: number;
  readonly bootedMs: number;
}

/**
 * Returns the ext4 image of the boot root, making it first when missing. Concurrent callers wait
 * for one build.
 */
export async function ensureVmImage(root: BootRoot): Promise<string> {
  const image = join(root.dir, "disk.ext4");
  if (existsSync(image)) return image;
  await withLock(`${image}.lock`, async () => {
    if (existsSync(image)) return;
    const building = `${image}.building`;
    rmSync(building, { force: true });
    try {
      await runLocal(
        ["mkfs.ext4", "-q", "-F", "-L", "boot-root", "-d", root.tree, building, IMAGE_SIZE],
        {
          timeoutMs: 10 * 60_000,
        },
      );
      renameSync(building, image);
    } catch (error) {
      rmSync(building, { force: true });
      throw error;
    }
  });
  return image;
}

/**
 * A qemu VM booting the boot root. `start()` boots it, `reboot()` runs `systemctl reboot` in the
 * guest and waits for the next boot (same qemu process, same disk), `stop()` ends qemu and removes
 * the disk layer.
 */
export class BootVm {
  readonly name: string;
  readonly root: BootRoot;
  readonly host = "127.0.0.1";
  readonly user = "root";
  readonly stateDir: string;
  readonly consolePath: string;
  private readonly memoryMiB: number;
  private portNumber: number | undefined;
  private child: ChildProcess | undefined;
  private exited: Promise<number> | undefined;

  constructor(options: VmOptions) {
    if (!/^[a-z0-9][a-z0-9-]{0,40}$/.test(options.name)) {
      throw new IptablesError(
        "LAB_SETUP",
        `VM name "${options.name}" is invalid: use lowercase letters, digits and "-"`,
      );
    }
    this.name = options.name;
    this.root = options.root;
    this.memoryMiB = options.memoryMiB ?? 512;
    this.stateDir = join(bootStateDir(), `vm-${options.name}`);
    this.consolePath = join(this.stateDir, "console.log");
  }

  /** The port on 127.0.0.1 that qemu forwards to the guest's sshd. */
  get port(): number {
    if (this.portNumber === undefined)
      throw new IptablesError("LAB_SETUP", `VM ${this.name} is not running`);
    return this.portNumber;
  }

  /** Boots the VM from a new disk layer and waits until systemd reports the boot done. */
  async start(): Promise<VmBootTiming> {
    for (const program of [QEMU, QEMU_IMG]) {
      if (!existsSync(program)) {
        throw new IptablesError(
          "LAB_SETUP",
          `the VM needs ${program}: install it with "apt-get install --no-install-recommends qemu-system-x86 qemu-utils"`,
        );
      }
    }
    const image = await ensureVmImage(this.root);
    await stopStale(this.stateDir);
    rmSync(this.stateDir, { recursive: true, force: true });
    mkdirSync(this.stateDir, { recursive: true });
    const disk = join(this.stateDir, "disk.qcow2");
    await runLocal([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, disk]);
    this.portNumber = await freeLoopbackPort();
    writeFileSync(
      join(this.stateDir, "known_hosts"),
      `[${this.host}]:${this.portNumber} ${this.root.hostKey}\n`,
    );

    const started = Date.now();
    const consoleFd = openSync(this.consolePath, "a");
    const args = [
      "--pdeathsig",
      "KILL",
      "--",
      QEMU,
      "-name",
      this.name,
      "-accel",
      "tcg,tb-size=128",
      "-machine",
      "pc",
      "-smp",
      "1",
      "-m",
      String(this.memoryMiB),
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-monitor",
      "none",
      "-serial",
      "stdio",
      "-kernel",
      this.root.kernelPath,
      "-initrd",
      this.root.initrdPath,
      "-append",
      "root=/dev/vda rw console=ttyS0 quiet",
      "-drive",
      `file=${disk},if=virtio,format=qcow2,cache=unsafe`,
      "-netdev",
      `user,id=net0,restrict=on,net=${GUEST_NETWORK},hostfwd=tcp:${this.host}:${this.portNumber}-:22`,
      "-device",
      "virtio-net-pci,netdev=net0",
    ];
    // PDEATHSIG ends qemu when the test process dies without calling stop().
    const child = spawn("setpriv", args, { stdio: ["ignore", consoleFd, consoleFd] });
    closeSync(consoleFd);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1))),
    );
    writeFileSync(join(this.stateDir, "qemu.pid"), String(child.pid));
    return this.waitForBoot(started, undefined);
  }

  /** Reboots the guest with `systemctl reboot` and waits until the new boot is done. */
  async reboot(): Promise<VmBootTiming> {
    const before = await this.bootId();
    const started = Date.now();
    // The connection may drop before ssh reports the exit status, so the status is not checked.
    await this.exec(["systemctl", "reboot"], { timeoutMs: 30_000 });
    // The shared connection dies with the guest; a new one must not wait on the old one.
    await this.closeSsh();
    return this.waitForBoot(started, before);
  }

  /**
   * Runs `argv` in the guest as root over ssh. Arguments are quoted for the guest's shell, so
   * each reaches the program unchanged. Calls share one SSH connection (OpenSSH connection
   * sharing), because a new handshake takes seconds under software emulation.
   */
  async exec(argv: readonly string[], options: LocalOptions = {}): Promise<LocalResult> {
    const command = argv.map(shellQuote).join(" ");
    return runLocal([...this.sshArgv(), `${this.user}@${this.host}`, command], {
      allowFailure: true,
      timeoutMs: 60_000,
      ...options,
    });
  }

  private sshArgv(): string[] {
    return [
      "ssh",
      "-q",
      "-i",
      this.root.privateKeyPath,
      "-p",
      String(this.port),
      "-o",
      "BatchMode=yes",
      "-o",
      "ConnectTimeout=10",
      "-o",
      "ServerAliveInterval=5",
      "-o",
      "ServerAliveCountMax=2",
      "-o",
      `UserKnownHostsFile=${join(this.stateDir, "known_hosts")}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "ControlMaster=auto",
      "-o",
      `ControlPath=${join(this.stateDir, "ssh.sock")}`,
      "-o",
      "ControlPersist=120",
    ];
  }

  /** Ends the shared SSH connection, if one is open. */
  private async closeSsh(): Promise<void> {
    if (this.portNumber === undefined || !existsSync(join(this.stateDir, "ssh.sock"))) return;
    await runLocal([...this.sshArgv(), "-O", "exit", `${this.user}@${this.host}`], {
      allowFailure: true,
      timeoutMs: 10_000,
    });
  }

  /** Ends qemu (SIGTERM, then SIGKILL after 10 s) and removes the disk layer and logs. */
  async stop(): Promise<void> {
    await this.closeSsh();
    const child = this.child;
    const exited = this.exited;
    this.child = undefined;
    this.exited = undefined;
    if (
      child !== undefined &&
      exited !== undefined &&
      child.exitCode === null &&
      child.signalCode === null
    ) {
      child.kill("SIGTERM");
      const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  private async bootId(): Promise<string> {
    const result = await this.exec(["cat", "/proc/sys/kernel/random/boot_id"]);
    if (result.code !== 0) {
      throw new IptablesError(
        "LAB_SETUP",
        `VM ${this.name}: reading the boot id failed: ${tailLines(result.stderr)}`,
      );
    }
    return result.stdout.trim();
  }

  private async waitForBoot(
    started: number,
    previousBootId: string | undefined,
  ): Promise<VmBootTiming> {
    const exited = (): boolean => this.child?.exitCode !== null;
    try {
      const deadline = started + 180_000;
      for (;;) {
        await waitForSshBanner(this.host, this.port, Math.max(1000, deadline - Date.now()), exited);
        const id = await this.exec(["cat", "/proc/sys/kernel/random/boot_id"], {
          timeoutMs: 20_000,
        });
        if (id.code === 0 && id.stdout.trim() !== previousBootId) break;
        if (Date.now() > deadline)
          throw new IptablesError("LAB_SETUP", "the guest did not come back with a new boot id");
        await sleep(500);
      }
      const sshMs = Date.now() - started;
      const state = await this.exec(["systemctl", "is-system-running", "--wait"], {
        timeoutMs: 120_000,
      });
      const bootedMs = Date.now() - started;
      if (!["running", "degraded"].includes(state.stdout.trim())) {
        throw new IptablesError(
          "LAB_SETUP",
          `the guest ended its boot as "${state.stdout.trim()}"`,
        );
      }
      return { sshMs, bootedMs };
    } catch (error) {
      throw new IptablesError(
        "LAB_SETUP",
        `VM ${this.name} did not boot: ${(error as Error).message}; console: ${this.consoleTail()}`,
        { cause: error },
      );
    }
  }

  private consoleTail(): string {
    return existsSync(this.consolePath)
      ? tailLines(readFileSync(this.consolePath, "utf8"), 15)
      : "(no console log)";
  }
}

/** Quotes an argument for a POSIX shell. */
function shellQuote(value: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") resolve(address.port);
        else reject(new IptablesError("LAB_SETUP", "no free port on 127.0.0.1"));
      });
    });
  });
}

/** Kills a qemu left running by an earlier process that died (its PID file is in the state folder). */
async function stopStale(stateDir: string): Promise<void> {
  const pidPath = join(stateDir, "qemu.pid");
  if (!existsSync(pidPath)) return;
  const pid = Number(readFileSync(pidPath, "utf8"));
  if (!Number.isInteger(pid) || pid <= 1 || !existsSync(`/proc/${pid}`)) return;
  if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith(QEMU)) return;
  process.kill(pid, "SIGKILL");
  await withTimeout(
    (async () => {
      while (existsSync(`/proc/${pid}`)) await sleep(50);
    })(),
    5000,
    `stale qemu ${pid} to exit`,
  );
}
