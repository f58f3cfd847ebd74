/**
 * Opening one authenticated SSH connection: TCP (with Nagle's algorithm off) or a tunnel through
 * a jump host, the handshake with host key verification, authentication, and retries with
 * backoff for the failures that can pass.
 */
import { connect as netConnect, type Socket } from "node:net";
import { Client, utils as sshUtils, type AuthenticationType, type ClientChannel } from "ssh2";
import type { Duplex } from "node:stream";
import { IptablesError } from "../errors";
import { formatAddress, type ResolvedConnection } from "./connection";
import {
  dialError,
  dialGaveUp,
  dialRetryOf,
  formatSeconds,
  tcpError,
  type DialRetry,
  type DialStop,
} from "./dial-errors";
import type { HostEvent } from "./events";
import {
  fingerprint,
  formatPublicKey,
  hostKeyAlgorithmsFor,
  parsePublicKey,
  publicKeyFromBlob,
  sameKey,
  type PublicKey,
} from "./host-key";

/** An authenticated SSH connection and what lies under it. */
export interface Transport {
  readonly client: Client;
  readonly hostKey: PublicKey;
  /** The TCP socket that carries the connection (the jump host's, when tunnelled). */
  readonly socket: Socket;
  /** Closes the connection and the jump host connection under it. */
  close(): void;
}

export interface DialOptions {
  readonly purpose: "pool" | "confirm";
  /** A time by which the connection must be open; without it only the attempt limit applies. */
  readonly deadline?: DialDeadline;
  readonly emit: (event: HostEvent) => void;
}

/**
 * The time by which a dial must end. No attempt lasts beyond it, except that the first attempt
 * always gets at least MIN_ATTEMPT_MS. A later attempt starts only when MIN_ATTEMPT_MS are left.
 */
export interface DialDeadline {
  /** Epoch milliseconds. */
  readonly at: number;
  /** The task that must finish by then, as messages name it, such as "confirming the change". */
  readonly purpose: string;
  /** The setting that moves the deadline, as messages name it. */
  readonly setting: string;
}

/** The time one attempt may take, from the TCP connect to the end of authentication. */
interface AttemptBudget {
  readonly timeoutMs: number;
  /** Set when the dial's deadline, not connection.perDialTimeout, limits the attempt. */
  readonly deadline?: DialDeadline;
}

/**
 * Host keys seen first in this process, by `host:port`: without a pinned key, later connections
 * must present the same key (trust on first use).
 */
const firstSeenHostKeys = new Map<string, PublicKey>();

/** Forgets the keys trusted on first use, for tests. */
export function forgetSeenHostKeys(): void {
  firstSeenHostKeys.clear();
}

/**
 * Milliseconds over which failures retried "briefly" (a refused port, a host that does not
 * respond on its link) are retried, from the start of the first attempt of an unbroken run of
 * them. An sshd that restarts listens again well within it, and a stopped sshd or a wrong port
 * fails after about 4 s (attempts at 0, 0.25, 0.75, 1.75 and 3.75 s, before jitter).
 */
const BRIEF_RETRY_WINDOW_MS = 5_000;

/**
 * The shortest attempt a deadline leaves (connection.perDialTimeout when that is shorter). A TCP
 * connect, key exchange and authentication take several round trips and some CPU, so an attempt
 * of a few milliseconds would time out whatever the state of the host.
 */
const MIN_ATTEMPT_MS = 1_000;

/**
 * Opens a connection, making up to `dialErrorLimit` attempts with exponential backoff between
 * them. How a failure is retried depends on its kind (see `DialRetry`). Credentials, host keys
 * and routes that reject the address fail at once. A refused port or a host that does not
 * respond is retried for BRIEF_RETRY_WINDOW_MS. Timeouts and resets are retried up to the limit.
 * Each attempt lasts at most `perDialTimeout`, so at the defaults (10 attempts of 15 s) a host
 * that never responds fails after about 3 minutes. With `deadline`, see `DialDeadline`. Raises
 * the last attempt's error (SSH_* codes), which says how many attempts were made when there
 * were several.
 */
export async function dial(conn: ResolvedConnection, options: DialOptions): Promise<Transport> {
  const limit = conn.dialErrorLimit === -1 ? Number.POSITIVE_INFINITY : conn.dialErrorLimit;
  const minAttemptMs = Math.min(MIN_ATTEMPT_MS, conn.perDialTimeoutMs);
  const started = Date.now();
  let briefRunStarted: number | undefined;
  for (let attempt = 1; ; attempt++) {
    const attemptStarted = Date.now();
    try {
      return await dialOnce(conn, options, attemptBudget(conn, options, minAttemptMs));
    } catch (error) {
      const retry = dialRetryOf(error);
      const delayMs = backoffMs(attempt);
      const nextStart = Date.now() + delayMs;
      if (retry === "briefly") briefRunStarted ??= attemptStarted;
      else briefRunStarted = undefined;

      let stop: DialStop | undefined;
      if (retry === "never") stop = "final";
      else if (attempt >= limit) stop = "limit";
      else if (options.deadline !== undefined && options.deadline.at - nextStart < minAttemptMs) {
        stop = "deadline";
      } else if (
        briefRunStarted !== undefined &&
        nextStart - briefRunStarted > BRIEF_RETRY_WINDOW_MS
      ) {
        stop = "window";
      } else if (limit === Number.POSITIVE_INFINITY && !options.deadline && attempt >= 1000) {
        // dialErrorLimit -1 retries until a deadline, and without one up to this many attempts.
        stop = "limit";
      }
      if (stop !== undefined) {
        throw dialGaveUp(conn, error, {
          attempts: attempt,
          elapsedMs: Date.now() - started,
          stop,
          deadlinePurpose: options.deadline?.purpose,
        });
      }

      options.emit({
        kind: "retry",
        host: formatAddress(conn.host, conn.port),
        user: conn.user,
        operation: "dial",
        attempt,
        delayMs,
        reason: (error as Error).message,
      });
      await sleep(delayMs);
    }
  }
}

/** 250 ms doubling per attempt up to 5 s, with up to 20% jitter so parallel dials spread out. */
function backoffMs(attempt: number): number {
  const base = Math.min(5000, 250 * 2 ** (attempt - 1));
  return Math.round(base * (1 + Math.random() * 0.2));
}

async function dialOnce(
  conn: ResolvedConnection,
  options: DialOptions,
  budget: AttemptBudget,
): Promise<Transport> {
  const started = Date.now();
  const timeoutMs = budget.timeoutMs;
  const privateKey = loadPrivateKey(conn);
  const pinned = conn.hostKey === undefined ? undefined : parsePublicKey(conn.hostKey);

  let jump: Transport | undefined;
  let stream: Duplex;
  let socket: Socket;
  if (conn.proxy === undefined) {
    socket = await connectTcp(conn, budget);
    stream = socket;
  } else {
    jump = await dialJumpHost(conn, conn.proxy, options);
    socket = jump.socket;
    try {
      stream = await openTunnel(jump, conn, budget, timeoutMs - (Date.now() - started));
    } catch (error) {
      jump.close();
      throw error;
    }
  }

  try {
    const remaining = Math.max(1, timeoutMs - (Date.now() - started));
    // Bytes from the server tell a silent server from a slow handshake; a tunnel cannot count them.
    const bytesRead = conn.proxy === undefined ? () => socket.bytesRead : undefined;
    const { client, hostKey } = await handshake(conn, stream, {
      budget,
      remainingMs: remaining,
      privateKey,
      pinned,
      bytesRead,
    });
    const transport: Transport = {
      client,
      hostKey,
      socket,
      close: () => {
        client.end();
        jump?.close();
        if (jump === undefined) socket.destroy();
      },
    };
    options.emit({
      kind: "connect",
      host: formatAddress(conn.host, conn.port),
      user: conn.user,
      purpose: options.purpose,
      via: conn.proxy === undefined ? undefined : formatAddress(conn.proxy.host, conn.proxy.port),
      hostKeyFingerprint: `${hostKey.type} ${fingerprint(hostKey)}`,
      durationMs: Date.now() - started,
    });
    return transport;
  } catch (error) {
    stream.destroy();
    jump?.close();
    throw error;
  }
}

async function dialJumpHost(
  conn: ResolvedConnection,
  proxy: ResolvedConnection,
  options: DialOptions,
): Promise<Transport> {
  try {
    return await dialOnce(
      proxy,
      options,
      attemptBudget(proxy, options, Math.min(MIN_ATTEMPT_MS, proxy.perDialTimeoutMs)),
    );
  } catch (error) {
    if (!(error instanceof IptablesError)) throw error;
    // The same code and details, with a message that names the target the jump host serves.
    throw new IptablesError(
      error.code,
      `jump host for ${formatAddress(conn.host, conn.port)}: ${error.message}`,
      { cause: error, details: { ...error.details, jumpHostFor: conn.host } },
    );
  }
}

function attemptBudget(
  conn: ResolvedConnection,
  options: DialOptions,
  minAttemptMs: number,
): AttemptBudget {
  const deadline = options.deadline;
  const leftMs = deadline === undefined ? Number.POSITIVE_INFINITY : deadline.at - Date.now();
  if (leftMs >= conn.perDialTimeoutMs) return { timeoutMs: conn.perDialTimeoutMs };
  return { timeoutMs: Math.max(minAttemptMs, leftMs), deadline };
}

/**
 * Describes an attempt's timeout for messages: the seconds, what set them when the deadline did,
 * and the setting that allows the attempt more time.
 */
function describeBudget(budget: AttemptBudget): {
  seconds: string;
  limitedBy: string;
  setting: string;
} {
  const seconds = formatSeconds(budget.timeoutMs);
  if (budget.deadline === undefined) {
    return { seconds, limitedBy: "", setting: "connection.perDialTimeout" };
  }
  return {
    seconds,
    limitedBy: ` (set by the deadline for ${budget.deadline.purpose})`,
    setting: budget.deadline.setting,
  };
}

function connectTcp(conn: ResolvedConnection, budget: AttemptBudget): Promise<Socket> {
  const { seconds, limitedBy, setting } = describeBudget(budget);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = netConnect({ host: conn.host, port: conn.port });
    // Without this every command waits for delayed ACKs: about 45 ms more per round trip.
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        dialError(
          conn,
          "tcp-timeout",
          `no answer to the TCP connect within ${seconds}${limitedBy}`,
          `check the address, the port and firewalls on the way, or raise ${setting}`,
          { retry: "up-to-limit" },
        ),
      );
    }, budget.timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(tcpError(conn, error, Date.now() - started));
    });
  });
}

function openTunnel(
  jump: Transport,
  conn: ResolvedConnection,
  budget: AttemptBudget,
  timeoutMs: number,
): Promise<ClientChannel> {
  const { seconds, limitedBy, setting } = describeBudget(budget);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => {
        reject(
          dialError(
            conn,
            "tcp-timeout",
            `the jump host did not open a tunnel within ${seconds} of the attempt's start${limitedBy}`,
            `check that the jump host can reach the target, or raise ${setting}`,
            { retry: "up-to-limit" },
          ),
        );
      },
      Math.max(1, timeoutMs),
    );
    jump.client.forwardOut("127.0.0.1", 0, conn.host, conn.port, (error, channel) => {
      clearTimeout(timer);
      if (error) {
        reject(
          dialError(
            conn,
            "tunnel",
            `the jump host could not connect to the target (${error.message})`,
            "check that the jump host reaches the target's address and port, and that its sshd " +
              "allows TCP forwarding (AllowTcpForwarding)",
            { cause: error, retry: tunnelRetry(error) },
          ),
        );
        return;
      }
      resolve(channel);
    });
  });
}

/**
 * Classifies a refused `direct-tcpip` channel by what the jump host reported: its sshd's
 * connect error text (OpenSSH sends strerror, such as "Connection refused"), or reason 1
 * (administratively prohibited, RFC 4254 section 5.1) when forwarding is turned off.
 */
function tunnelRetry(error: Error & { reason?: number }): DialRetry {
  if (error.reason === 1) return "never";
  if (/refused|no route to host|unreachable/i.test(error.message)) return "briefly";
  return "up-to-limit";
}

type ParsedKey = Exclude<ReturnType<typeof sshUtils.parseKey>, Error>;

/** Parsed keys by connection: decrypting an OpenSSH key runs bcrypt and blocks for a while. */
const parsedKeys = new WeakMap<ResolvedConnection, ParsedKey>();

function loadPrivateKey(conn: ResolvedConnection): ParsedKey | undefined {
  if (conn.privateKey === undefined) return undefined;
  const cached = parsedKeys.get(conn);
  if (cached !== undefined) return cached;
  const parsed = sshUtils.parseKey(conn.privateKey, conn.privateKeyPassword);
  if (!(parsed instanceof Error)) {
    const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed;
    parsedKeys.set(conn, key);
    return key;
  }

  const reason = parsed.message;
  if (/no passphrase/i.test(reason)) {
    throw dialError(
      conn,
      "private-key",
      "connection.privateKey is encrypted and no passphrase was given",
      "set connection.privateKeyPassword",
    );
  }
  if (/passphrase|decrypt|bad decrypt/i.test(reason)) {
    throw dialError(
      conn,
      "private-key",
      "connection.privateKeyPassword does not decrypt connection.privateKey",
      "check the passphrase",
    );
  }
  throw dialError(
    conn,
    "private-key",
    "connection.privateKey is not a private key this client can read",
    "pass an OpenSSH or PEM private key (RSA, ECDSA or Ed25519), the whole file including its " +
      "BEGIN and END lines",
  );
}

interface HandshakeResult {
  readonly client: Client;
  readonly hostKey: PublicKey;
}

interface HandshakeOptions {
  readonly budget: AttemptBudget;
  /** Milliseconds of the attempt's budget that the TCP connect or tunnel left. */
  readonly remainingMs: number;
  readonly privateKey: ParsedKey | undefined;
  readonly pinned: PublicKey | undefined;
  /** Bytes received from the server so far, when the socket is the target's own. */
  readonly bytesRead: (() => number) | undefined;
}

function handshake(
  conn: ResolvedConnection,
  stream: Duplex,
  options: HandshakeOptions,
): Promise<HandshakeResult> {
  const { privateKey, pinned } = options;
  return new Promise((resolve, reject) => {
    const client = new Client();
    const addressKey = formatAddress(conn.host, conn.port);
    const trusted = pinned ?? firstSeenHostKeys.get(addressKey);
    let presented: PublicKey | undefined;
    let hostKeyRejected = false;
    const auth = authSequence(conn, privateKey);
    let settled = false;

    const fail = (error: IptablesError): void => {
      if (settled) return;
      settled = true;
      client.end();
      reject(error);
    };

    client.on("ready", () => {
      if (settled) return;
      settled = true;
      if (!firstSeenHostKeys.has(addressKey) && presented !== undefined && pinned === undefined) {
        firstSeenHostKeys.set(addressKey, presented);
      }
      resolve({ client, hostKey: presented! });
    });
    client.on("error", (error: Error & { level?: string }) => {
      if (hostKeyRejected && presented !== undefined && trusted !== undefined) {
        fail(hostKeyMismatch(conn, presented, trusted, pinned !== undefined));
        return;
      }
      fail(handshakeError(conn, error, auth, options));
    });
    client.on("close", () => {
      fail(
        dialError(
          conn,
          "closed",
          "the server closed the connection before authentication finished",
          "check sshd's logs on the host (MaxStartups, AllowUsers, tcp_wrappers)",
          { retry: "up-to-limit" },
        ),
      );
    });

    client.connect({
      sock: stream as unknown as Socket,
      username: conn.user,
      readyTimeout: options.remainingMs,
      keepaliveInterval: 0,
      algorithms:
        pinned === undefined
          ? undefined
          : { serverHostKey: hostKeyAlgorithmsFor(pinned.type) as never },
      hostVerifier: (blob: Buffer) => {
        presented = publicKeyFromBlob(blob);
        if (trusted !== undefined && !sameKey(presented, trusted)) {
          hostKeyRejected = true;
          return false;
        }
        return true;
      },
      authHandler: (methodsLeft, _partialSuccess, next) => {
        if (methodsLeft) auth.serverMethods = methodsLeft;
        const method = auth.next();
        if (method === undefined) return next(false as never);
        next(method as never);
      },
    });
  });
}

/** The authentication methods to try in order, and what the server offered. */
interface AuthSequence {
  serverMethods: AuthenticationType[] | undefined;
  readonly tried: string[];
  next(): Record<string, unknown> | undefined;
}

function authSequence(conn: ResolvedConnection, privateKey: ParsedKey | undefined): AuthSequence {
  const username = conn.user;
  const candidates: {
    name: string;
    serverName: AuthenticationType;
    method: Record<string, unknown>;
  }[] = [];
  if (privateKey !== undefined) {
    candidates.push({
      name: "publickey",
      serverName: "publickey",
      method: { type: "publickey", username, key: privateKey },
    });
  }
  if (conn.agentSocketPath !== undefined) {
    candidates.push({
      name: "agent",
      serverName: "publickey",
      method: { type: "agent", username, agent: conn.agentSocketPath },
    });
  }
  if (conn.password !== undefined) {
    const password = conn.password;
    candidates.push({
      name: "password",
      serverName: "password",
      method: { type: "password", username, password },
    });
    candidates.push({
      name: "keyboard-interactive",
      serverName: "keyboard-interactive",
      method: {
        type: "keyboard-interactive",
        username,
        // Servers that turn off PasswordAuthentication often still ask for it this way.
        prompt: (
          _name: string,
          _instructions: string,
          _lang: string,
          prompts: unknown[],
          finish: (answers: string[]) => void,
        ) => finish(prompts.map(() => password)),
      },
    });
  }

  const sequence: AuthSequence = {
    serverMethods: undefined,
    tried: [],
    next() {
      while (candidates.length > 0) {
        const candidate = candidates.shift()!;
        const offered = sequence.serverMethods;
        if (offered !== undefined && !offered.includes(candidate.serverName)) continue;
        sequence.tried.push(candidate.name);
        return candidate.method;
      }
      return undefined;
    },
  };
  return sequence;
}

function handshakeError(
  conn: ResolvedConnection,
  error: Error & { level?: string; code?: string },
  auth: AuthSequence,
  options: HandshakeOptions,
): IptablesError {
  switch (error.level) {
    case "client-authentication": {
      const offered = auth.serverMethods?.join(", ") ?? "unknown";
      const tried = auth.tried.length > 0 ? auth.tried.join(", ") : "none that the server offers";
      return dialError(
        conn,
        "authentication",
        `the server rejected the credentials (tried: ${tried}; the server accepts: ${offered})`,
        `check connection.privateKey, connection.password or connection.agentSocketPath, and ` +
          `${JSON.stringify(conn.user)}'s ~/.ssh/authorized_keys on the host`,
        { cause: error, details: { tried: [...auth.tried], offered: auth.serverMethods } },
      );
    }
    case "agent":
      return dialError(
        conn,
        "agent",
        `the ssh-agent at ${JSON.stringify(conn.agentSocketPath)} could not be used (${error.message})`,
        "check that the agent runs, that the socket path is right and that it holds a key",
        { cause: error },
      );
    case "client-timeout":
      return handshakeTimeout(conn, error, options);
    case "client-socket":
      return dialError(
        conn,
        "closed",
        `the connection broke during the handshake (${error.code ?? error.message})`,
        "check sshd's logs on the host (MaxStartups, AllowUsers, tcp_wrappers)",
        { cause: error, retry: "up-to-limit" },
      );
    default:
      return dialError(
        conn,
        "handshake",
        `the SSH handshake failed (${error.message})`,
        "check that the port belongs to an SSH server whose algorithms this client supports",
        { cause: error },
      );
  }
}

/**
 * Builds the error of a handshake that timed out. A server that accepted the TCP connection
 * but sent nothing, not even its version line, is a stopped or hung sshd, or another service.
 */
function handshakeTimeout(
  conn: ResolvedConnection,
  error: Error,
  options: HandshakeOptions,
): IptablesError {
  const { seconds, limitedBy, setting } = describeBudget(options.budget);
  if (options.bytesRead?.() === 0) {
    return dialError(
      conn,
      "handshake-timeout",
      `the server accepted the TCP connection but sent nothing, not even the SSH version ` +
        `line, within ${seconds} of the attempt's start${limitedBy}`,
      `check that sshd on ${formatAddress(conn.host, conn.port)} responds (a stopped or hung ` +
        `sshd still accepts connections) and that the port belongs to sshd, or raise ${setting}`,
      { cause: error, retry: "up-to-limit" },
    );
  }
  return dialError(
    conn,
    "handshake-timeout",
    `the handshake and authentication did not finish within ${seconds} of the attempt's ` +
      `start${limitedBy}`,
    `check that the port belongs to sshd and that the host is not overloaded, or raise ${setting}`,
    { cause: error, retry: "up-to-limit" },
  );
}

function hostKeyMismatch(
  conn: ResolvedConnection,
  presented: PublicKey,
  expected: PublicKey,
  pinned: boolean,
): IptablesError {
  const source = pinned ? "the pinned connection.hostKey" : "the key this process saw first";
  return dialError(
    conn,
    "host-key",
    `the host presented ${presented.type} ${fingerprint(presented)}, which does not match ${source} ` +
      `(${expected.type} ${fingerprint(expected)})`,
    `if the host was reinstalled and you have checked the new key out of band, set ` +
      `connection.hostKey to "${formatPublicKey(presented)}"`,
    { details: { presented: formatPublicKey(presented), expected: formatPublicKey(expected) } },
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
