/**
 * How long a dial tries before it gives up, by kind of failure, against real lab conditions.
 * The conditions are the lab's guard `unreachable` route, an address of the lab's bridge where
 * no host responds, a host whose sshd was stopped, a host whose sshd hangs, a port that drops
 * packets, and rejected credentials.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode, isIptablesError } from "../../src/errors";
import {
  closeAllHosts,
  getHost,
  setHostEventSink,
  type HostConnection,
  type HostEvent,
} from "../../src/host";
import { resolveConnection } from "../../src/host/connection";
import { dial } from "../../src/host/dial";
import { createLab, type Lab, type LabHost } from "../../src/lab";

const LAB_NAME = "host-dial";
/** The extra sshd's port on the first host, for the restart test. */
const EXTRA_PORT = 2022;
/** A port of the first host whose packets a DROP rule swallows, for the timeout test. */
const DROPPED_PORT = 2224;

let lab: Lab;
let alive: LabHost;
let stopped: LabHost;
let hung: LabHost;
let keyDir: string;
const events: HostEvent[] = [];
const errors: unknown[] = [];

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: 3 });
  [alive, stopped, hung] = lab.hosts;
  setHostEventSink((event) => events.push(event));
  keyDir = mkdtempSync(join(tmpdir(), "host-dial-"));

  // The second host plays a host whose sshd was stopped: only this lab's sshd, by its PID.
  process.kill(stopped.sshdPid, "SIGTERM");
  await waitFor(async () => !processExists(stopped.sshdPid));
  await lab.exec(alive, [
    "iptables",
    "-A",
    "INPUT",
    "-p",
    "tcp",
    "--dport",
    String(DROPPED_PORT),
    "-j",
    "DROP",
  ]);
});

afterAll(async () => {
  if (hung !== undefined && processExists(hung.sshdPid)) process.kill(hung.sshdPid, "SIGCONT");
  setHostEventSink(undefined);
  closeAllHosts();
  if (keyDir !== undefined) rmSync(keyDir, { recursive: true, force: true });
  await lab?.destroy();
});

/** Dials `connection`, expecting a failure; returns it with the time taken and the retries. */
async function failedDial(connection: HostConnection): Promise<{
  error: Error & { code?: string; details?: Record<string, unknown> };
  elapsedMs: number;
  retries: number;
}> {
  closeAllHosts();
  const before = events.length;
  const started = Date.now();
  try {
    await getHost(connection);
  } catch (error) {
    errors.push(error);
    const elapsedMs = Date.now() - started;
    const retries = events
      .slice(before)
      .filter((event) => event.kind === "retry" && event.operation === "dial").length;
    return { error: error as Error, elapsedMs, retries };
  }
  throw new Error(`expected the dial to ${connection.host}:${connection.port ?? 22} to fail`);
}

/** Returns an address of this lab's /24 that the lab never gives a host (hosts are .10 to .249). */
function unusedBridgeAddress(): string {
  return `${alive.ipv4.split(".").slice(0, 3).join(".")}.253`;
}

describe("unreachable addresses", () => {
  it("fails at once on the guard route (IPv4)", async () => {
    // 198.19.0.0/16 is inside the lab range, but no lab slot uses it: only the guard route.
    const { error, elapsedMs, retries } = await failedDial({
      host: "198.19.254.7",
      privateKey: alive.privateKey,
    });

    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toBe(
      'ssh to 198.19.254.7:22 as "root" failed during the TCP connect: the address is ' +
        "unreachable from this machine (EHOSTUNREACH); check connection.host and the routes " +
        "of this machine",
    );
    expect(error.details?.retry).toBe("never");
    expect(retries).toBe(0);
    expect(elapsedMs).toBeLessThan(1_000);
  });

  it("fails at once on the guard route (IPv6)", async () => {
    const { error, elapsedMs, retries } = await failedDial({
      host: "fd6c:6162:0:ffff::7",
      privateKey: alive.privateKey,
    });

    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toMatch(/\(E(HOST|NET)UNREACH\)/);
    expect(error.message).toContain("[fd6c:6162:0:ffff::7]:22");
    expect(retries).toBe(0);
    expect(elapsedMs).toBeLessThan(1_000);
  });

  it("retries briefly where no host responds on the bridge", async () => {
    const host = unusedBridgeAddress();
    const { error, elapsedMs, retries } = await failedDial({ host, privateKey: alive.privateKey });

    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toContain(`ssh to ${host}:22 as "root" failed during the TCP connect`);
    expect(error.message).toContain("no host responded at this address (EHOSTUNREACH after");
    expect(error.message).toContain("check that the host is up");
    expect(error.details?.retry).toBe("briefly");
    // Each neighbour lookup takes about 3 s: two attempts fit the 5 s window, not ten.
    expect(retries).toBe(1);
    expect(elapsedMs).toBeLessThan(10_000);
  });
});

describe("refused connections", () => {
  it("fails within seconds when sshd is stopped", async () => {
    const { error, elapsedMs, retries } = await failedDial({
      host: stopped.ipv4,
      privateKey: stopped.privateKey,
    });

    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toContain(
      `ssh to ${stopped.ipv4}:22 as "root" failed during the TCP connect: the connection to ` +
        "port 22 was refused (ECONNREFUSED)",
    );
    expect(error.details?.retry).toBe("briefly");
    expect(retries).toBeGreaterThanOrEqual(3);
    expect(retries).toBeLessThanOrEqual(5);
    expect(elapsedMs).toBeLessThan(8_000);
  });

  it("stops at dialErrorLimit inside the window", async () => {
    const { retries, elapsedMs } = await failedDial({
      host: stopped.ipv4,
      privateKey: stopped.privateKey,
      dialErrorLimit: 2,
    });

    expect(retries).toBe(1);
    expect(elapsedMs).toBeLessThan(2_000);
  });

  it("connects once a restarted sshd listens", async () => {
    closeAllHosts();
    const before = events.length;
    const sshd = startExtraSshdAfter(alive, 300);
    try {
      const host = await getHost({
        host: alive.ipv4,
        port: EXTRA_PORT,
        privateKey: alive.privateKey,
      });
      expect((await host.run(["id", "-un"])).stdout.trim()).toBe("root");
      const retries = events
        .slice(before)
        .filter((event) => event.kind === "retry" && event.host === `${alive.ipv4}:${EXTRA_PORT}`);
      expect(retries.length).toBeGreaterThanOrEqual(1);
    } finally {
      closeAllHosts();
      await (await sshd).stop();
    }
  });

  it("retries a refused tunnel briefly", async () => {
    const { error, elapsedMs, retries } = await failedDial({
      host: alive.ipv4,
      port: 2,
      privateKey: alive.privateKey,
      proxy: { host: alive.ipv4, privateKey: alive.privateKey },
    });

    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toContain("via jump host");
    expect(error.message).toContain("Connection refused");
    expect(error.details?.retry).toBe("briefly");
    expect(retries).toBeGreaterThanOrEqual(1);
    expect(elapsedMs).toBeLessThan(8_000);
  });
});

describe("hung sshd", () => {
  // SIGSTOP on the third host's sshd (by the lab's PID): the kernel still completes TCP
  // handshakes on its listening socket, but sshd never sends its version line.
  beforeAll(() => process.kill(hung.sshdPid, "SIGSTOP"));
  afterAll(() => process.kill(hung.sshdPid, "SIGCONT"));

  it("says how many attempts timed out and what to do", async () => {
    const { error, elapsedMs, retries } = await failedDial({
      host: hung.ipv4,
      privateKey: hung.privateKey,
      perDialTimeout: 0.5,
      dialErrorLimit: 3,
    });

    expect(hasErrorCode(error, "SSH_TIMEOUT")).toBe(true);
    expect(retries).toBe(2);
    expect(error.details?.attempts).toBe(3);
    expect(error.details?.stop).toBe("limit");
    expect(error.message).toContain(
      `ssh to ${hung.ipv4}:22 as "root" failed during the SSH handshake: the server accepted ` +
        "the TCP connection but sent nothing, not even the SSH version line, within 0.5 s of " +
        "the attempt's start",
    );
    expect(error.message).toMatch(
      /\. Gave up after 3 attempts over \d+(\.\d)? s, the limit set by/,
    );
    expect(error.message).toContain(
      "connection.dialErrorLimit (3), each attempt lasting up to connection.perDialTimeout " +
        "(0.5 s) with backoff between attempts",
    );
    expect(error.message).toContain(
      `check that sshd on ${hung.ipv4}:22 responds (a stopped or hung sshd still accepts ` +
        "connections)",
    );
    expect(error.message).toMatch(
      /To fail sooner, lower connection\.dialErrorLimit or connection\.perDialTimeout$/,
    );
    expect(elapsedMs).toBeGreaterThanOrEqual(1_500);
  });

  it("gives a late attempt at least one second", async () => {
    const conn = resolveConnection({
      host: hung.ipv4,
      privateKey: hung.privateKey,
      perDialTimeout: 15,
    });
    const started = Date.now();
    let error: unknown;
    try {
      await dial(conn, {
        purpose: "confirm",
        deadline: {
          at: started + 5,
          purpose: "confirming the change",
          setting: "connection.confirmTimeoutSeconds",
        },
        emit: () => {},
      });
    } catch (caught) {
      error = caught;
    }
    const elapsedMs = Date.now() - started;

    expect(hasErrorCode(error, "SSH_TIMEOUT")).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(
      "within 1 s of the attempt's start (set by the deadline for confirming the change)",
    );
    expect(message).toContain("or raise connection.confirmTimeoutSeconds");
    expect(message).toMatch(
      /Gave up after 1 attempt over 1(\.\d)? s, because too little time was left before the deadline for confirming the change to start another attempt$/,
    );
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    expect(elapsedMs).toBeLessThan(3_000);
  });
});

describe("other failures", () => {
  it("retries timeouts up to dialErrorLimit", async () => {
    const { error, elapsedMs, retries } = await failedDial({
      host: alive.ipv4,
      port: DROPPED_PORT,
      privateKey: alive.privateKey,
      perDialTimeout: 0.5,
      dialErrorLimit: 3,
    });

    expect(hasErrorCode(error, "SSH_TIMEOUT")).toBe(true);
    expect(error.details?.retry).toBe("up-to-limit");
    expect(retries).toBe(2);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_500);
  });

  it("never retries a rejected key", async () => {
    const keyPath = join(keyDir, "unknown_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyPath]);
    const { error, elapsedMs, retries } = await failedDial({
      host: alive.ipv4,
      privateKey: readFileSync(keyPath, "utf8"),
    });

    expect(hasErrorCode(error, "SSH_AUTH")).toBe(true);
    expect(error.details?.retry).toBe("never");
    expect(retries).toBe(0);
    expect(elapsedMs).toBeLessThan(3_000);
  });

  it("never retries a wrong pinned host key", async () => {
    const keyPath = join(keyDir, "other_host_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyPath]);
    const { error, retries } = await failedDial({
      host: alive.ipv4,
      privateKey: alive.privateKey,
      hostKey: readFileSync(`${keyPath}.pub`, "utf8").trim(),
    });

    expect(hasErrorCode(error, "SSH_HOST_KEY")).toBe(true);
    expect(retries).toBe(0);
  });

  it("puts no secret in errors or events", () => {
    const secrets = alive.privateKey.split("\n").filter((line) => line.length >= 16);
    expect(errors.length).toBeGreaterThan(5);
    const texts = [
      ...events.map((event) => JSON.stringify(event)),
      ...errors.flatMap((error) => errorTexts(error)),
    ];
    for (const text of texts) {
      for (const secret of secrets)
        expect(text.includes(secret), `${text} contains a secret`).toBe(false);
    }
  });
});

/** Collects the message, details and cause chain of an error as text. */
function errorTexts(error: unknown): string[] {
  const texts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    texts.push(current.message, current.stack ?? "");
    if (isIptablesError(current)) texts.push(JSON.stringify(current.details));
    current = current.cause;
  }
  return texts;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Starts a daemonized sshd on EXTRA_PORT of `host` after `delayMs`, with the lab's authorized
 * keys and a host key of its own. stop() kills it by the PID from its pid file.
 */
async function startExtraSshdAfter(
  host: LabHost,
  delayMs: number,
): Promise<{ stop(): Promise<void> }> {
  const keyPath = join(keyDir, "extra_host_key");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyPath]);
  const configPath = join(keyDir, "sshd_config_extra");
  const pidFile = "/run/sshd-dial-extra.pid";
  writeFileSync(
    configPath,
    [
      `ListenAddress ${host.ipv4}:${EXTRA_PORT}`,
      `HostKey ${keyPath}`,
      `AuthorizedKeysFile ${join(dirname(host.privateKeyPath), "authorized_keys")}`,
      `PidFile ${pidFile}`,
      "PermitRootLogin prohibit-password",
      "StrictModes no",
      "UsePAM no",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  const started = await lab.exec(host, ["/usr/sbin/sshd", "-f", configPath]);
  expect(started.code, started.stderr).toBe(0);
  const pid = Number((await lab.exec(host, ["cat", pidFile])).stdout.trim());
  expect(pid).toBeGreaterThan(1);
  return {
    stop: async () => {
      process.kill(pid, "SIGTERM");
      await waitFor(async () => !processExists(pid));
    },
  };
}
