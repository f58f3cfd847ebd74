import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
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
import { forgetSeenHostKeys } from "../../src/host/dial";
import { createLab, type Lab, type LabHost } from "../../src/lab";
import { startClient } from "./spawn-client";

const LAB_NAME = "host-transport";
const PASSPHRASE = "correct horse battery staple 7";

let lab: Lab;
let nft: LabHost;
let legacy: LabHost;
let keyDir: string;
let encryptedKey: string;
let agent: ChildProcess | undefined;
let agentSocket: string;
const events: HostEvent[] = [];
const errors: unknown[] = [];

beforeAll(async () => {
  lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
  [nft, legacy] = lab.hosts;
  setHostEventSink((event) => events.push(event));

  // A key with a passphrase, authorized for every host of the lab (sshd reads one shared file).
  keyDir = mkdtempSync(join(tmpdir(), "host-transport-"));
  const keyPath = join(keyDir, "id_passphrase");
  execFileSync("ssh-keygen", [
    "-q",
    "-t",
    "ed25519",
    "-N",
    PASSPHRASE,
    "-C",
    "passphrase-test",
    "-f",
    keyPath,
  ]);
  encryptedKey = readFileSync(keyPath, "utf8");
  appendFileSync(
    join(dirname(nft.privateKeyPath), "authorized_keys"),
    readFileSync(`${keyPath}.pub`),
  );

  // A real ssh-agent in the foreground (-D), so its PID is ours to kill.
  agentSocket = join(keyDir, "agent.sock");
  agent = spawn("ssh-agent", ["-D", "-a", agentSocket], { stdio: "ignore" });
  for (let i = 0; i < 100 && !existsSync(agentSocket); i++)
    await new Promise((r) => setTimeout(r, 20));
  execFileSync("ssh-add", ["-q", nft.privateKeyPath], {
    env: { ...process.env, SSH_AUTH_SOCK: agentSocket },
  });
});

afterAll(async () => {
  setHostEventSink(undefined);
  closeAllHosts();
  if (agent?.pid !== undefined) process.kill(agent.pid, "SIGTERM");
  if (keyDir !== undefined) rmSync(keyDir, { recursive: true, force: true });
  await lab?.destroy();
});

function rootConnection(host: LabHost, extra: Partial<HostConnection> = {}): HostConnection {
  return { host: host.ipv4, privateKey: host.privateKey, hostKey: host.hostKey, ...extra };
}

/** Runs `promise`, expecting an IptablesError, and records it for the secrets check. */
async function failure(
  promise: Promise<unknown>,
): Promise<Error & { code?: string; details?: Record<string, unknown> }> {
  try {
    await promise;
  } catch (error) {
    errors.push(error);
    return error as Error;
  }
  throw new Error("expected the operation to fail");
}

describe("authentication", () => {
  it("works with a private key", async () => {
    const host = await getHost(rootConnection(nft));
    const result = await host.run(["id", "-un"]);
    expect(result.stdout.trim()).toBe("root");
    expect(result.code).toBe(0);
  });

  it("works over IPv6", async () => {
    const host = await getHost({
      host: nft.ipv6,
      privateKey: nft.privateKey,
      hostKey: nft.hostKey,
    });
    expect(host.address).toBe(`[${nft.ipv6}]:22`);
    expect((await host.run(["id", "-un"])).stdout.trim()).toBe("root");
  });

  it("works with an encrypted private key", async () => {
    const host = await getHost({
      host: nft.ipv4,
      privateKey: encryptedKey,
      privateKeyPassword: PASSPHRASE,
    });
    expect((await host.run(["id", "-un"])).stdout.trim()).toBe("root");
  });

  it("rejects a wrong passphrase", async () => {
    const error = await failure(
      getHost({
        host: nft.ipv4,
        privateKey: encryptedKey,
        privateKeyPassword: "wrong passphrase 1",
      }),
    );
    expect(hasErrorCode(error, "SSH_AUTH")).toBe(true);
    expect(error.message).toContain(
      "connection.privateKeyPassword does not decrypt connection.privateKey",
    );
  });

  it("rejects an encrypted key without passphrase", async () => {
    const error = await failure(getHost({ host: nft.ipv4, privateKey: encryptedKey }));
    expect(hasErrorCode(error, "SSH_AUTH")).toBe(true);
    expect(error.message).toContain("set connection.privateKeyPassword");
  });

  it("works with a password", async () => {
    const host = await getHost({
      host: legacy.ipv4,
      user: nft.sudoUser,
      password: nft.sudoPassword,
    });
    expect((await host.run(["id", "-un"])).stdout.trim()).toBe(nft.sudoUser);
  });

  it("rejects a wrong password", async () => {
    const error = await failure(
      getHost({
        host: legacy.ipv4,
        user: nft.sudoUser,
        password: "wrong-password-42",
        dialErrorLimit: 1,
      }),
    );
    expect(hasErrorCode(error, "SSH_AUTH")).toBe(true);
    expect(error.message).toContain(
      `ssh to ${legacy.ipv4}:22 as "deploy" failed during authentication`,
    );
    expect(error.message).toContain("tried: password");
  });

  it("works with an ssh-agent socket", async () => {
    const host = await getHost({ host: legacy.ipv4, agentSocketPath: agentSocket });
    expect((await host.run(["id", "-un"])).stdout.trim()).toBe("root");
  });

  it("works through a jump host", async () => {
    const host = await getHost({
      host: legacy.ipv4,
      privateKey: legacy.privateKey,
      proxy: { host: nft.ipv4, privateKey: nft.privateKey },
    });
    // The target reports the connection as coming from the jump host's address.
    const result = await host.run(["sh", "-c", 'echo "$SSH_CLIENT"']);
    expect(result.stdout.split(" ")[0]).toBe(nft.ipv4);
    const connect = events.find(
      (event) => event.kind === "connect" && event.via === `${nft.ipv4}:22`,
    );
    expect(connect).toBeDefined();
  });

  it("fails through a jump host that cannot reach the target", async () => {
    const error = await failure(
      getHost({
        host: legacy.ipv4,
        port: 2,
        privateKey: legacy.privateKey,
        dialErrorLimit: 1,
        proxy: { host: nft.ipv4, privateKey: nft.privateKey },
      }),
    );
    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toContain("via jump host");
  });
});

describe("sudo", () => {
  it("runs commands as root through sudo -n", async () => {
    const host = await getHost({
      host: nft.ipv4,
      user: nft.sudoUser,
      privateKey: nft.privateKey,
      sudo: true,
    });
    expect((await host.run(["id", "-u"])).stdout.trim()).toBe("0");
    const facts = await host.facts();
    expect(facts.backend).toBe("nft");
    expect(await host.readTable("ipv4", "filter")).toBeDefined();
  });

  it("fails without sudo and says how to fix it", async () => {
    const host = await getHost({ host: nft.ipv4, user: nft.sudoUser, privateKey: nft.privateKey });
    const error = await failure(host.run(["/usr/sbin/iptables-save"]));
    expect(hasErrorCode(error, "COMMAND_FAILED")).toBe(true);
    expect(error.message).toContain("set connection.sudo");
  });
});

describe("host keys", () => {
  it("exposes the key the server presented", async () => {
    const host = await getHost({ host: nft.ipv4, privateKey: nft.privateKey });
    expect(host.hostKey).toBe(nft.hostKey);
  });

  it("rejects a wrong pinned key and shows the fix", async () => {
    const otherKey = join(keyDir, "other_host_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", otherKey]);
    const pinned = readFileSync(`${otherKey}.pub`, "utf8").trim();
    closeAllHosts();
    const error = await failure(getHost(rootConnection(nft, { hostKey: pinned })));
    expect(hasErrorCode(error, "SSH_HOST_KEY")).toBe(true);
    expect(error.message).toContain(`set connection.hostKey to "${nft.hostKey}"`);
    expect(error.details?.retryable).toBe(false);
  });

  it("keeps a pinned connection apart from an unpinned one", async () => {
    const otherKey = readFileSync(join(keyDir, "other_host_key.pub"), "utf8");
    await getHost({ host: nft.ipv4, privateKey: nft.privateKey });
    const error = await failure(
      getHost({ host: nft.ipv4, privateKey: nft.privateKey, hostKey: otherKey }),
    );
    expect(hasErrorCode(error, "SSH_HOST_KEY")).toBe(true);
    await expect(getHost({ host: nft.ipv4, privateKey: nft.privateKey })).resolves.toBeDefined();
  });

  it("rejects a key that differs from the first one seen", async () => {
    // The lab's hosts share one host key, so two extra sshds with keys of their own, one after
    // the other on one port, stand in for a host reinstalled under the same address.
    forgetSeenHostKeys();
    const first = await startExtraSshd(legacy, "first");
    await getHost({ host: legacy.ipv4, port: EXTRA_PORT, privateKey: legacy.privateKey });
    closeAllHosts();
    await first.stop();

    const second = await startExtraSshd(legacy, "second");
    try {
      const error = await failure(
        getHost({ host: legacy.ipv4, port: EXTRA_PORT, privateKey: legacy.privateKey }),
      );
      expect(hasErrorCode(error, "SSH_HOST_KEY")).toBe(true);
      expect(error.message).toContain("does not match the key this process saw first");
      expect(error.message).toContain(`set connection.hostKey to "${second.hostKey}"`);
    } finally {
      await second.stop();
    }
  });
});

describe("connection errors", () => {
  it("fails fast on a closed port", async () => {
    const error = await failure(getHost(rootConnection(nft, { port: 2, dialErrorLimit: 1 })));
    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    expect(error.message).toBe(
      `ssh to ${nft.ipv4}:2 as "root" failed during the TCP connect: the connection to port 2 was ` +
        `refused (ECONNREFUSED); check that sshd runs and listens on port 2, and that no firewall rejects it`,
    );
  });

  it("retries with backoff up to dialErrorLimit", async () => {
    const before = events.length;
    const error = await failure(getHost(rootConnection(nft, { port: 3, dialErrorLimit: 3 })));
    expect(hasErrorCode(error, "SSH_CONNECT")).toBe(true);
    const retries = events
      .slice(before)
      .filter((event) => event.kind === "retry" && event.host === `${nft.ipv4}:3`);
    expect(retries.length).toBe(2);
  });

  it("times out on a port that drops packets", async () => {
    await lab.exec(nft, ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2223", "-j", "DROP"]);
    const started = Date.now();
    const error = await failure(
      getHost(rootConnection(nft, { port: 2223, perDialTimeout: 1, dialErrorLimit: 1 })),
    );
    expect(hasErrorCode(error, "SSH_TIMEOUT")).toBe(true);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.message).toContain("raise connection.perDialTimeout");
  });

  it("rejects an unknown user", async () => {
    const error = await failure(
      getHost({ host: nft.ipv4, user: "nobody-here", privateKey: nft.privateKey }),
    );
    expect(hasErrorCode(error, "SSH_AUTH")).toBe(true);
  });
});

describe("pooled connection", () => {
  it("runs 20 commands at once over one connection", async () => {
    closeAllHosts();
    const before = events.length;
    const host = await getHost(rootConnection(legacy));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => host.run(["sh", "-c", `sleep 0.2; echo ${i}`])),
    );
    expect(results.map((result) => result.stdout.trim())).toEqual(
      Array.from({ length: 20 }, (_, i) => String(i)),
    );
    const connects = events
      .slice(before)
      .filter((event) => event.kind === "connect" && event.host === `${legacy.ipv4}:22`);
    expect(connects.length).toBe(1);
  });

  it("lets the process exit while a connection is idle", async () => {
    const started = Date.now();
    const run = startClient({
      connection: { host: nft.ipv4, hostKey: nft.hostKey, privateKeyPath: nft.privateKeyPath },
      operation: "run",
      argv: ["true"],
    });
    const outcome = await run.done;
    expect(outcome.code).toBe(0);
    expect(outcome.lines).toContainEqual({ result: { code: 0, stdout: "" } });
    // The idle timeout is 15 s: ending well before it shows the connection did not hold the process.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("passes standard input and reports exit codes", async () => {
    const host = await getHost(rootConnection(nft));
    const echoed = await host.run(["cat"], { input: "line 1\nline 2\n" });
    expect(echoed.stdout).toBe("line 1\nline 2\n");
    const failed = await host.run(["sh", "-c", "echo oops >&2; exit 3"], { allowFailure: true });
    expect(failed.code).toBe(3);
    expect(failed.stderr).toBe("oops\n");
  });

  it("fails a command that exits non-zero with its stderr", async () => {
    const host = await getHost(rootConnection(nft));
    const error = await failure(host.run(["sh", "-c", "echo 'no such chain' >&2; exit 4"]));
    expect(hasErrorCode(error, "COMMAND_FAILED")).toBe(true);
    expect(error.message).toContain("exited with 4: no such chain");
  });

  it("stops a command at its timeout", async () => {
    const host = await getHost(rootConnection(nft));
    const error = await failure(host.run(["sleep", "5"], { timeoutMs: 300 }));
    expect(hasErrorCode(error, "COMMAND_TIMEOUT")).toBe(true);
  });

  it("passes hostile arguments literally", async () => {
    const host = await getHost(rootConnection(nft));
    const hostile = [
      "$(touch /run/pwned-run)",
      "`touch /run/pwned-run`",
      "a;touch /run/pwned-run",
      "x\ny",
      "'\"",
    ];
    const result = await host.run(["printf", "%s|", ...hostile]);
    expect(result.stdout).toBe(`${hostile.join("|")}|`);
    expect((await lab.exec(nft, ["test", "-e", "/run/pwned-run"])).code).toBe(1);
  });
});

describe("facts", () => {
  it("reads an nft host", async () => {
    const facts = await (await getHost(rootConnection(nft))).facts();
    expect(facts.backend).toBe("nft");
    expect(facts.iptablesVersion).toMatch(/^1\.8\.\d+$/);
    expect(facts.binaries.ipv4.save).toMatch(/iptables-nft-save$/);
    expect(facts.init).toBe("other");
    expect(facts.hashlimitModule).toBe(true);
    expect(facts.conntrackModule).toBe(true);
    expect(facts.conntrackSizingWritable).toBe(false);
    expect(facts.ip6tables).toBe(true);
  });

  it("reads a legacy host", async () => {
    const facts = await (await getHost(rootConnection(legacy))).facts();
    expect(facts.backend).toBe("legacy");
    expect(facts.binaries.ipv4.restore).toMatch(/iptables-legacy-restore$/);
    expect(facts.conntrackSizingWritable).toBe(false);
  });

  it("warns when the other backend holds rules", async () => {
    await lab.exec(nft, ["iptables-legacy", "-A", "INPUT", "-s", "198.18.250.1", "-j", "DROP"]);
    try {
      closeAllHosts();
      const warnings: HostEvent[] = [];
      const host = await getHost(rootConnection(nft), { onEvent: (event) => warnings.push(event) });
      const facts = await host.facts();
      expect(facts.otherBackendHasRules).toBe(true);
      const warning = warnings.find((event) => event.kind === "warning");
      expect(warning).toBeDefined();
      expect(warning?.kind === "warning" ? warning.message : "").toContain(
        "iptables-legacy also holds rules",
      );
    } finally {
      await lab.exec(nft, ["iptables-legacy", "-D", "INPUT", "-s", "198.18.250.1", "-j", "DROP"]);
    }
  });
});

describe("secrets", () => {
  it("never appear in errors or events", () => {
    const secrets = [
      PASSPHRASE,
      nft.sudoPassword,
      "wrong passphrase 1",
      "wrong-password-42",
      ...[nft.privateKey, encryptedKey].flatMap((key) =>
        key.split("\n").filter((line) => line.length >= 16),
      ),
    ];
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

const EXTRA_PORT = 2022;

/** Starts a daemonized sshd on EXTRA_PORT of `host` with a new host key; stop() kills it by PID. */
async function startExtraSshd(
  host: LabHost,
  name: string,
): Promise<{ hostKey: string; stop(): Promise<void> }> {
  const keyPath = join(keyDir, `host_key_${name}`);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyPath]);
  const configPath = join(keyDir, `sshd_config_${name}`);
  const pidFile = `/run/sshd-${name}.pid`;
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
  const started = await lab.exec(host, ["/usr/sbin/sshd", "-f", configPath]);
  expect(started.code, started.stderr).toBe(0);
  const pid = Number((await lab.exec(host, ["cat", pidFile])).stdout.trim());
  expect(pid).toBeGreaterThan(1);
  return {
    hostKey: readFileSync(`${keyPath}.pub`, "utf8").split(" ").slice(0, 2).join(" "),
    stop: async () => {
      process.kill(pid, "SIGTERM");
      for (
        let i = 0;
        i < 100 && (await lab.exec(host, ["test", "-e", `/proc/${pid}`])).code === 0;
        i++
      ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
  };
}
