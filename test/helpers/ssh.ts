/** A minimal ssh2 client for lab tests that must not depend on the product's host layer. */
import { connect as connectTcp } from "node:net";
import { Client } from "ssh2";

export interface SshTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly privateKey: string;
}

/** Opens an SSH connection with TCP_NODELAY set, as the product does. */
export function openSsh(target: SshTarget, options: { noDelay?: boolean } = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host: target.host, port: target.port });
    socket.setNoDelay(options.noDelay ?? true);
    const client = new Client();
    client.once("ready", () => resolve(client));
    client.once("error", reject);
    socket.once("connect", () =>
      client.connect({
        sock: socket,
        username: target.user,
        privateKey: target.privateKey,
        readyTimeout: 10_000,
      }),
    );
    socket.once("error", reject);
  });
}

/** Runs a shell command over `client` and returns its output and exit code. */
export function sshExec(
  client: Client,
  command: string,
): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, channel) => {
      if (error) return reject(error);
      let stdout = "";
      let stderr = "";
      channel.on("data", (data: Buffer) => (stdout += data.toString()));
      channel.stderr.on("data", (data: Buffer) => (stderr += data.toString()));
      channel.on("close", (code: number | null) => resolve({ stdout, stderr, code: code ?? -1 }));
    });
  });
}
