/**
 * The pooled SSH connection of one target: opened on first use, shared by every operation of
 * the process, limited to a number of concurrent channels, and closed when idle.
 *
 * While no channel is open the TCP socket is unref'd and the idle timer too, so a pooled
 * connection never keeps the Node.js process alive.
 */
import type { ResolvedConnection } from "./connection";
import { dial, type Transport } from "./dial";
import type { HostEvent } from "./events";
import { ChannelError, execOnClient, type CommandResult, type ExecOptions } from "./exec";
import { Semaphore } from "./locks";

export interface PoolSettings {
  /**
   * Channels open at once on the connection. sshd refuses more than MaxSessions (10 by
   * default); further commands wait for a free channel.
   */
  readonly maxChannels: number;
  /** Milliseconds without an open channel after which the connection is closed. */
  readonly idleTimeoutMs: number;
}

export const DEFAULT_POOL_SETTINGS: PoolSettings = { maxChannels: 8, idleTimeoutMs: 15_000 };

/** Attempts to open a channel that the server refused, before giving up. */
const CHANNEL_OPEN_ATTEMPTS = 5;

export class PooledConnection {
  private transport: Transport | undefined;
  private connecting: Promise<Transport> | undefined;
  private readonly channels: Semaphore;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Counts the connections opened so far; facts are read again for each new one. */
  generation = 0;

  constructor(
    readonly conn: ResolvedConnection,
    private readonly settings: PoolSettings,
    private readonly onClose: () => void,
  ) {
    this.channels = new Semaphore(settings.maxChannels);
  }

  /** Returns the open connection, dialing when there is none. */
  async connected(emit: (event: HostEvent) => void): Promise<Transport> {
    if (this.transport !== undefined) return this.transport;
    if (this.connecting === undefined) {
      this.connecting = this.open(emit).finally(() => {
        this.connecting = undefined;
      });
    }
    return this.connecting;
  }

  /**
   * Runs a command on a channel of this connection, waiting for a free channel first. A channel
   * the server refused is retried (the command had not started); a command that started is
   * never run twice.
   */
  async exec(
    command: string,
    options: ExecOptions,
    emit: (event: HostEvent) => void,
  ): Promise<CommandResult> {
    const release = await this.channels.acquire();
    this.markBusy();
    try {
      for (let attempt = 1; ; attempt++) {
        const transport = await this.connected(emit);
        try {
          return await execOnClient(transport.client, command, options);
        } catch (error) {
          const openFailed = error instanceof ChannelError && error.failure.kind === "open-failed";
          if (!openFailed || attempt >= CHANNEL_OPEN_ATTEMPTS) throw error;
          if (this.transport === transport) {
            // The connection is up but refused the channel: sshd's MaxSessions is below ours.
            this.channels.shrinkTo(this.channels.inUse - 1);
            await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
          }
        }
      }
    } finally {
      release();
      if (this.channels.inUse === 0) this.markIdle();
    }
  }

  /** Closes the connection; the next operation on this pool entry opens a new one. */
  close(): void {
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.transport?.close();
    this.transport = undefined;
  }

  private async open(emit: (event: HostEvent) => void): Promise<Transport> {
    this.closed = false;
    const transport = await dial(this.conn, { purpose: "pool", emit });
    transport.client.on("close", () => {
      if (this.transport === transport) this.transport = undefined;
      this.onClose();
    });
    transport.client.on("error", () => {
      // The close event follows; operations in flight fail with their channel.
    });
    this.transport = transport;
    this.generation++;
    if (this.channels.inUse === 0) this.markIdle();
    return transport;
  }

  private markBusy(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.transport?.socket.ref();
  }

  private markIdle(): void {
    if (this.closed || this.transport === undefined) return;
    this.transport.socket.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.channels.inUse === 0) this.close();
    }, this.settings.idleTimeoutMs);
    this.idleTimer.unref();
  }
}
