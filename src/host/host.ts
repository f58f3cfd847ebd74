/**
 * The host handle: everything the resources do on a machine goes through `getHost`.
 *
 * Handles are cheap views over state shared per process: one pooled SSH connection per target
 * (host, port, user, jump host and credentials), and per target and sudo mode the host facts
 * and the last snapshot of each table.
 */
import { IptablesError } from "../errors";
import type { TableChange } from "../netfilter/plan";
import type { Family, SaveTable, TableName } from "../netfilter/types";
import {
  applyTableChange,
  readTableSnapshot,
  type ApplyOptions,
  type ApplyResult,
  type TableState,
} from "./apply";
import { runCommand, runScript, type HostContext } from "./commands";
import {
  connectionPoolKey,
  connectionSecrets,
  describeTarget,
  formatAddress,
  resolveConnection,
  type HostConnection,
} from "./connection";
import { dialError } from "./dial-errors";
import { eventEmitter, secretRedactor, type HostEventListener } from "./events";
import type { CommandResult } from "./exec";
import { FACTS_SCRIPT, isPosixShell, parseFacts, type HostFacts } from "./facts";
import { readFile, writeFileAtomic } from "./files";
import { fingerprint, formatPublicKey, parsePublicKey, sameKey } from "./host-key";
import { DEFAULT_POOL_SETTINGS, PooledConnection } from "./pool";

export interface GetHostOptions {
  /** Receives this handle's events (the module sink of `setHostEventSink` receives them too). */
  readonly onEvent?: HostEventListener;
  /**
   * Channels open at once on the pooled connection; applies when this call creates it.
   * @default 8 (sshd's default MaxSessions is 10)
   */
  readonly maxChannels?: number;
  /**
   * Milliseconds without a command after which the pooled connection closes; applies when this
   * call creates it.
   * @default 15000
   */
  readonly idleTimeoutMs?: number;
}

export interface RunOptions {
  /** Bytes for the command's standard input, which is closed after them. */
  readonly input?: string | Buffer;
  /** @default 60000 */
  readonly timeoutMs?: number;
  /** Return a non-zero exit status instead of raising COMMAND_FAILED. */
  readonly allowFailure?: boolean;
}

/** A machine reached over SSH. */
export interface Host {
  /** `host:port` of the target. */
  readonly address: string;
  /** The key the server presented, in authorized_keys format, for trust on first use. */
  readonly hostKey: string;
  /** Returns the host facts, read once per connection. */
  facts(): Promise<HostFacts>;
  /**
   * Runs argv with each argument quoted for the login shell (through `sudo -n` when the
   * connection has `sudo`). Raises COMMAND_FAILED on a non-zero exit unless `allowFailure`.
   */
  run(argv: readonly string[], options?: RunOptions): Promise<CommandResult>;
  /** Reads one table with the backend's `save -c -t TABLE`; undefined when it is absent. */
  readTable(family: Family, table: TableName): Promise<SaveTable | undefined>;
  /** Applies a change to one table atomically; see `ApplyOptions` for the dead-man switch. */
  applyTableChange(
    family: Family,
    table: TableName,
    change: TableChange,
    options?: ApplyOptions,
  ): Promise<ApplyResult>;
  /** Reads a text file; undefined when it does not exist. */
  readFile(path: string): Promise<string | undefined>;
  /** Replaces a file atomically when content or mode differ; returns whether it changed. */
  writeFileAtomic(path: string, content: string, mode?: number): Promise<boolean>;
}

interface SharedHost {
  readonly pool: PooledConnection;
  readonly state: TableState;
  readonly loginShell: { posix: boolean };
  facts?: { readonly connection: number; readonly value: Promise<HostFacts> };
}

const pools = new Map<string, PooledConnection>();
const sharedHosts = new Map<string, SharedHost>();

/**
 * Returns a handle for the host, opening the pooled connection if needed. Raises the SSH_*
 * errors of the dial, and SSH_HOST_KEY when the pinned `hostKey` differs from the key of an
 * already open connection.
 */
export async function getHost(
  connection: HostConnection,
  options: GetHostOptions = {},
): Promise<Host> {
  const conn = resolveConnection(connection);
  const redact = secretRedactor(connectionSecrets(conn));
  const emit = eventEmitter(options.onEvent, redact);

  const poolKey = connectionPoolKey(conn);
  let pool = pools.get(poolKey);
  if (pool === undefined) {
    pool = new PooledConnection(
      conn,
      {
        maxChannels: options.maxChannels ?? DEFAULT_POOL_SETTINGS.maxChannels,
        idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_POOL_SETTINGS.idleTimeoutMs,
      },
      () => undefined,
    );
    pools.set(poolKey, pool);
  }
  const sharedKey = `${poolKey}${conn.sudo ? " sudo" : ""}`;
  let shared = sharedHosts.get(sharedKey);
  if (shared === undefined) {
    shared = { pool, state: { snapshots: new Map() }, loginShell: { posix: false } };
    sharedHosts.set(sharedKey, shared);
  }

  const transport = await pool.connected(emit);
  if (conn.hostKey !== undefined) {
    const pinned = parsePublicKey(conn.hostKey);
    if (!sameKey(pinned, transport.hostKey)) {
      throw dialError(
        conn,
        "host-key",
        `the open connection's host key ${transport.hostKey.type} ${fingerprint(transport.hostKey)} ` +
          `does not match the pinned connection.hostKey (${pinned.type} ${fingerprint(pinned)})`,
        `if the host was reinstalled and you have checked the new key out of band, set ` +
          `connection.hostKey to "${formatPublicKey(transport.hostKey)}"`,
      );
    }
  }

  const ctx: HostContext = { conn, pool, emit, redact, loginShell: shared.loginShell };
  const hostState = shared;
  return {
    address: formatAddress(conn.host, conn.port),
    hostKey: formatPublicKey(transport.hostKey),
    facts: () => loadFacts(ctx, hostState),
    run: (argv, runOptions = {}) => runCommand(ctx, argv, runOptions),
    readTable: async (family, table) => {
      const facts = await loadFacts(ctx, hostState);
      return (await readTableSnapshot(ctx, facts, hostState.state, family, table)).table;
    },
    applyTableChange: async (family, table, change, applyOptions) => {
      const facts = await loadFacts(ctx, hostState);
      requireTools(ctx, facts);
      return applyTableChange(ctx, facts, hostState.state, family, table, change, applyOptions);
    },
    readFile: (path) => readFile(ctx, path),
    writeFileAtomic: (path, content, mode) => writeFileAtomic(ctx, path, content, mode),
  };
}

/** Closes every pooled connection and drops the cached facts and snapshots. */
export function closeAllHosts(): void {
  for (const pool of pools.values()) pool.close();
  pools.clear();
  sharedHosts.clear();
}

async function loadFacts(ctx: HostContext, shared: SharedHost): Promise<HostFacts> {
  await shared.pool.connected(ctx.emit);
  const connection = shared.pool.generation;
  if (shared.facts !== undefined && shared.facts.connection === connection)
    return shared.facts.value;

  const value = fetchFacts(ctx);
  shared.facts = { connection, value };
  value.catch(() => {
    if (shared.facts?.value === value) shared.facts = undefined;
  });
  return value;
}

async function fetchFacts(ctx: HostContext): Promise<HostFacts> {
  const result = await runScript(ctx, "read facts", FACTS_SCRIPT, []);
  const facts = parseFacts(result.stdout, describeTarget(ctx.conn));
  ctx.loginShell.posix = isPosixShell(facts.loginShell);
  if (facts.otherBackendHasRules) {
    const other = facts.backend === "nft" ? "iptables-legacy" : "iptables-nft";
    ctx.emit({
      kind: "warning",
      host: formatAddress(ctx.conn.host, ctx.conn.port),
      user: ctx.conn.user,
      message:
        `${describeTarget(ctx.conn)} uses iptables-${facts.backend}, but ${other} also holds ` +
        `rules; they still filter packets and are invisible to iptables-${facts.backend}-save. ` +
        `Check them with ${other}-save and remove them or move them to one backend`,
    });
  }
  return facts;
}

function requireTools(ctx: HostContext, facts: HostFacts): void {
  const missing = (["flock", "setsid", "sha256sum"] as const).filter((tool) => !facts.tools[tool]);
  if (missing.length > 0) {
    throw new IptablesError(
      "HOST_UNSUPPORTED",
      `${describeTarget(ctx.conn)} lacks ${missing.join(", ")}, which table changes need: install ` +
        `util-linux and coreutils`,
      { details: { host: ctx.conn.host, missing } },
    );
  }
}
