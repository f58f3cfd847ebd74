/**
 * TCP traffic generator for rate-limit tests, run as a separate process inside a lab host's
 * network namespace (see `traffic.ts`). Every mode is bounded in time and count and exits by
 * itself; results go to stdout as one JSON line.
 *
 *   serve --port P [--lifetime-ms L]       echo server on [::]:P (IPv4 and IPv6)
 *   flood --target A --port P ...          new connections as fast as allowed
 *   pace  --target A --port P --rate R ... new connections at R per second
 *   hold  --target A --port P ...          one connection, echoing a line every interval
 */
import { connect, createServer, isIPv6, type Socket } from "node:net";
import { parseArgs } from "node:util";

/** How one connection attempt ended. */
export type Outcome = "connected" | "refused" | "timeout" | "error";

export interface Attempt {
  /** Wall-clock time of the connect system call, in ms since the Unix epoch (sub-ms precision). */
  readonly atMs: number;
  /** The local address the attempt was bound to ("" when the kernel chose). */
  readonly source: string;
  readonly outcome: Outcome;
  /** The error code for outcome "error". */
  readonly code?: string;
}

export interface AttemptReport {
  readonly attempts: readonly Attempt[];
}

export interface HoldReport {
  readonly connectedAtMs: number;
  readonly roundTrips: number;
  readonly failures: number;
  readonly maxRoundTripMs: number;
  /** The error that ended the connection early, or "" when it lasted the whole duration. */
  readonly error: string;
}

/** Upper bounds that keep a mistaken argument from turning a test into a long flood. */
const MAX_DURATION_MS = 30_000;
const MAX_ATTEMPTS = 50_000;
const MAX_CONCURRENCY = 256;
const MAX_SERVER_LIFETIME_MS = 180_000;

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

interface AttemptRequest {
  readonly target: string;
  readonly port: number;
  readonly source: string;
  readonly timeoutMs: number;
}

/** Opens one connection and closes it with a reset at once, so no TIME_WAIT state piles up. */
function attemptConnection(request: AttemptRequest): Promise<Attempt> {
  let atMs = wallMs();
  return new Promise((resolve) => {
    const socket = connect({
      host: request.target,
      port: request.port,
      ...(request.source === "" ? {} : { localAddress: request.source }),
    });
    const finish = (outcome: Outcome, code?: string): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on("error", () => undefined);
      if (outcome === "connected") socket.resetAndDestroy();
      else socket.destroy();
      resolve({ atMs, source: request.source, outcome, ...(code ? { code } : {}) });
    };
    const timer = setTimeout(() => finish("timeout"), request.timeoutMs);
    // Node issues the connect system call on a later tick, after the caller's synchronous work
    // (tens of milliseconds for the first sockets of a process), and emits this just before it.
    socket.once("connectionAttempt", () => (atMs = wallMs()));
    socket.once("connect", () => finish("connected"));
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED") finish("refused");
      else finish("error", error.code ?? error.message);
    });
  });
}

interface FloodRequest {
  readonly target: string;
  readonly port: number;
  readonly sources: readonly string[];
  readonly durationMs: number;
  readonly maxAttempts: number;
  readonly concurrency: number;
  readonly timeoutMs: number;
}

/** A closed port on the client's own loopback, for warm-up attempts that reach no other host. */
const WARM_UP_PORT = 9;
const WARM_UP_ATTEMPTS = 20;

/** Keeps `concurrency` attempts in flight, cycling through `sources`, until time or count runs out. */
async function flood(request: FloodRequest): Promise<AttemptReport> {
  // The first sockets of a process are slow to open. Warming up on loopback makes the timed
  // attempts dense from the first one, as a real flood is.
  const loopback = isIPv6(request.target) ? "::1" : "127.0.0.1";
  for (let index = 0; index < WARM_UP_ATTEMPTS; index++) {
    await attemptConnection({ target: loopback, port: WARM_UP_PORT, source: "", timeoutMs: 100 });
  }

  const attempts: Attempt[] = [];
  const sources = request.sources.length > 0 ? request.sources : [""];
  const deadline = wallMs() + request.durationMs;
  let started = 0;

  const worker = async (): Promise<void> => {
    while (started < request.maxAttempts && wallMs() < deadline) {
      const source = sources[started % sources.length];
      started++;
      attempts.push(await attemptConnection({ ...request, source }));
    }
  };
  await Promise.all(Array.from({ length: request.concurrency }, worker));

  attempts.sort((a, b) => a.atMs - b.atMs);
  return { attempts };
}

interface PaceRequest {
  readonly target: string;
  readonly port: number;
  readonly source: string;
  readonly rate: number;
  readonly durationMs: number;
  readonly timeoutMs: number;
}

/** Starts one attempt every 1/rate seconds, on a fixed schedule, for the duration. */
async function pace(request: PaceRequest): Promise<AttemptReport> {
  const intervalMs = 1000 / request.rate;
  const count = Math.min(Math.floor(request.durationMs / intervalMs), MAX_ATTEMPTS);
  const start = wallMs();
  const pending: Promise<Attempt>[] = [];

  for (let index = 0; index < count; index++) {
    const delay = start + index * intervalMs - wallMs();
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    pending.push(attemptConnection(request));
  }
  return { attempts: await Promise.all(pending) };
}

interface HoldRequest {
  readonly target: string;
  readonly port: number;
  readonly durationMs: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

/** Keeps one connection open and sends a line every interval, expecting the echo back in time. */
function hold(request: HoldRequest): Promise<HoldReport> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host: request.target, port: request.port });
    let connectedAtMs = 0;
    let roundTrips = 0;
    let failures = 0;
    let maxRoundTripMs = 0;
    let sentAt = 0;
    let waiting = false;
    let received = "";
    let ticker: NodeJS.Timeout | undefined;

    const finish = (error: string): void => {
      clearInterval(ticker);
      clearTimeout(stopTimer);
      socket.removeAllListeners();
      socket.on("error", () => undefined);
      socket.destroy();
      resolve({ connectedAtMs, roundTrips, failures, maxRoundTripMs, error });
    };
    const stopTimer = setTimeout(
      () => finish(connectedAtMs ? "" : "connect timed out"),
      request.durationMs,
    );

    socket.setNoDelay(true);
    socket.once("connect", () => {
      connectedAtMs = wallMs();
      ticker = setInterval(() => {
        // An echo still missing after the timeout counts as a failure; the next line is sent anyway.
        if (waiting && wallMs() - sentAt > request.timeoutMs) failures++;
        sentAt = wallMs();
        waiting = true;
        socket.write("ping\n");
      }, request.intervalMs);
    });
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("utf8");
      while (received.includes("\n")) {
        received = received.slice(received.indexOf("\n") + 1);
        if (!waiting) continue;
        waiting = false;
        roundTrips++;
        maxRoundTripMs = Math.max(maxRoundTripMs, wallMs() - sentAt);
      }
    });
    socket.once("error", (error: NodeJS.ErrnoException) => finish(error.code ?? error.message));
    socket.once("close", () => finish("closed by the server"));
  });
}

/** Runs an echo server on every address of the host until killed or `lifetimeMs` passes. */
function serve(port: number, lifetimeMs: number): void {
  const server = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  server.on("error", (error) => {
    console.error(`echo server on port ${port} failed: ${error.message}`);
    process.exit(1);
  });
  server.listen({ host: "::", port, ipv6Only: false, backlog: 1024 }, () => {
    console.log(JSON.stringify({ listening: port, pid: process.pid }));
  });
  // The server stops by itself even when the test that started it dies without killing it.
  setTimeout(() => process.exit(0), lifetimeMs);
}

function boundedInteger(
  name: string,
  text: string | undefined,
  fallback: number,
  max: number,
): number {
  const value = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new Error(`--${name} must be an integer from 1 to ${max}, not ${text}`);
  }
  return value;
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      target: { type: "string" },
      port: { type: "string" },
      source: { type: "string", multiple: true },
      "duration-ms": { type: "string" },
      "max-attempts": { type: "string" },
      concurrency: { type: "string" },
      "timeout-ms": { type: "string" },
      rate: { type: "string" },
      "interval-ms": { type: "string" },
      "lifetime-ms": { type: "string" },
    },
  });
  const mode = positionals[0];
  const port = boundedInteger("port", values.port, 0, 65_535);
  const durationMs = boundedInteger("duration-ms", values["duration-ms"], 3000, MAX_DURATION_MS);
  const timeoutMs = boundedInteger("timeout-ms", values["timeout-ms"], 1000, MAX_DURATION_MS);
  const target = values.target ?? "";

  let report: AttemptReport | HoldReport;
  switch (mode) {
    case "serve":
      serve(
        port,
        boundedInteger("lifetime-ms", values["lifetime-ms"], 60_000, MAX_SERVER_LIFETIME_MS),
      );
      return;
    case "flood":
      report = await flood({
        target,
        port,
        sources: values.source ?? [],
        durationMs,
        maxAttempts: boundedInteger("max-attempts", values["max-attempts"], 10_000, MAX_ATTEMPTS),
        concurrency: boundedInteger("concurrency", values.concurrency, 4, MAX_CONCURRENCY),
        timeoutMs,
      });
      break;
    case "pace":
      report = await pace({
        target,
        port,
        source: values.source?.[0] ?? "",
        rate: boundedInteger("rate", values.rate, 5, 1000),
        durationMs,
        timeoutMs,
      });
      break;
    case "hold":
      report = await hold({
        target,
        port,
        durationMs,
        intervalMs: boundedInteger("interval-ms", values["interval-ms"], 50, 10_000),
        timeoutMs,
      });
      break;
    default:
      throw new Error(`unknown mode "${mode}": use serve, flood, pace or hold`);
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((error: Error) => {
    console.error(error.message);
    process.exit(2);
  });
}
