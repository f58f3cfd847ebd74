/**
 * The floor: the least any tool can do over SSH. A first apply is one SSH session per host that
 * pipes the finished rules into one `iptables-restore --noflush`. The no-change case is one SSH
 * session per host that runs `iptables-save` once and finds the rules already there.
 */
import { connect as connectTcp } from "node:net";
import { Client } from "ssh2";
import type { LabHost } from "../../src/lab";
import { managedLines } from "./hosts";
import { CHAIN, expectedLines, ruleArgs, type Variant } from "./recipe";
import type { ApplyReport, Pass, Tool } from "./tool";

/** Renders the restore script: declare the chain, then append every rule in chain order. */
export function restoreScript(target: Variant): string {
  const lines = ["*filter", `:${CHAIN} - [0:0]`];
  for (const rule of target.rules) lines.push(`-A ${rule.chain} ${ruleArgs(rule)}`);
  lines.push("COMMIT", "");
  return lines.join("\n");
}

export function floorTool(): Tool {
  return {
    key: "floor",
    name: "floor (ssh2 + iptables-restore)",

    expectedLines: (target) => expectedLines(target),

    async reset() {
      // Nothing is kept between runs: each apply opens and closes its own sessions.
    },

    async apply(_lab, hosts, target, pass: Pass): Promise<ApplyReport> {
      if (pass === "first") {
        const script = restoreScript(target);
        await Promise.all(
          hosts.map((host) => runOnce(host, "iptables-restore --noflush -w", script)),
        );
        return { unchanged: false, summary: "restored" };
      }

      const expected = expectedLines(target);
      const saves = await Promise.all(
        hosts.map((host) => runOnce(host, "iptables-save -t filter")),
      );
      const stale = saves.filter((save) => managedLines(save).join("\n") !== expected.join("\n"));
      return {
        unchanged: stale.length === 0,
        summary: stale.length === 0 ? "read, in place" : `read, ${stale.length} hosts differ`,
      };
    },

    async close() {},
  };
}

/**
 * Opens one SSH session to `host` (TCP_NODELAY on, host key pinned to the lab's), runs
 * `command` with `input` on its standard input, closes the session, and returns standard
 * output. Raises when the command exits non-zero.
 */
export function runOnce(host: LabHost, command: string, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host: host.ipv4, port: host.port });
    socket.setNoDelay(true);
    const client = new Client();
    const fail = (error: Error): void => {
      client.end();
      reject(new Error(`floor: ${command} on ${host.name}: ${error.message}`, { cause: error }));
    };
    client.once("error", fail);
    socket.once("error", fail);
    client.once("ready", () => {
      client.exec(command, (error, channel) => {
        if (error) return fail(error);
        let stdout = "";
        let stderr = "";
        channel.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
        channel.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
        channel.on("close", (code: number | null) => {
          client.end();
          if (code === 0) resolve(stdout);
          else fail(new Error(`exit code ${code}: ${stderr.trim()}`));
        });
        channel.end(input ?? "");
      });
    });
    socket.once("connect", () =>
      client.connect({
        sock: socket,
        username: host.user,
        privateKey: host.privateKey,
        readyTimeout: 15_000,
        hostVerifier: (key: Buffer) => key.equals(hostKeyBlob(host)),
      }),
    );
  });
}

/** Decodes the host's public key from its authorized_keys line into the SSH wire blob. */
function hostKeyBlob(host: LabHost): Buffer {
  return Buffer.from(host.hostKey.split(" ")[1], "base64");
}
