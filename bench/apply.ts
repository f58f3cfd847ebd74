/**
 * Apply cost against the floor, on one lab host.
 *
 * The floor is the least any tool can do to change rules over SSH: open one SSH session (TCP
 * handshake, key exchange, authentication, TCP_NODELAY on) and run one
 * `iptables-restore --noflush -w` that appends one rule. Against it, this library's
 * `applyTableChange` adds one rule on a warm handle, without and with the dead-man switch.
 * A warm handle has its pooled connection open and its facts read, as for every resource after
 * the first on a host. The dead-man switch opens a new SSH connection by design. The first
 * apply of a process (new connection, facts, read, apply) is printed too.
 *
 *   npx tsx bench/apply.ts [--runs 15] [--backend nft|legacy]
 *
 * Targets: an apply without the switch costs at most 1.5 times the floor, with it at most 2.5
 * times. Runs of the four kinds alternate, so load from other processes on the machine hits
 * them alike; each figure is the median of its runs.
 */
import { performance } from "node:perf_hooks";
import { connect as connectTcp } from "node:net";
import { parseArgs } from "node:util";
import { Client } from "ssh2";
import { closeAllHosts, getHost, type HostConnection } from "../src/host";
import { createLab, type LabHost } from "../src/lab";
import { formatMarker } from "../src/netfilter/marker";
import type { DesiredRule } from "../src/netfilter/plan";

const CHAIN = "BENCH";

interface Options {
  readonly runs: number;
  readonly backend: "nft" | "legacy";
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "15" },
      backend: { type: "string", default: "nft" },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 3 || runs > 500) {
    throw new Error(`--runs must be an integer from 3 to 500, not "${values.runs}"`);
  }
  if (values.backend !== "nft" && values.backend !== "legacy") {
    throw new Error(`--backend must be "nft" or "legacy", not "${values.backend}"`);
  }
  return { runs, backend: values.backend };
}

/** Runs `command` with `input` in one fresh SSH session and closes it: the floor. */
function floorApply(host: LabHost, command: string, input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host: host.ipv4, port: host.port });
    socket.setNoDelay(true);
    const client = new Client();
    const fail = (error: Error): void => {
      client.end();
      reject(error);
    };
    socket.once("error", fail);
    client.once("error", fail);
    socket.once("connect", () =>
      client.connect({
        sock: socket,
        username: host.user,
        privateKey: host.privateKey,
        readyTimeout: 20_000,
      }),
    );
    client.once("ready", () => {
      client.exec(command, (error, channel) => {
        if (error) return fail(error);
        let stderr = "";
        channel.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
        channel.on("exit", (code: number | null) => {
          client.end();
          if (code === 0) resolve();
          else reject(new Error(`floor: ${command} exited with ${code}: ${stderr}`));
        });
        channel.resume();
        channel.end(input);
      });
    });
  });
}

function benchRule(id: string, order: number, octet: number): DesiredRule {
  const marker = { id, order };
  const address = `198.18.${100 + Math.floor(octet / 250)}.${(octet % 250) + 1}/32`;
  return {
    marker,
    chain: CHAIN,
    line: `-A ${CHAIN} -s ${address} -m comment --comment "${formatMarker(marker)}" -j ACCEPT`,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function timed(action: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await action();
  return performance.now() - started;
}

async function main(): Promise<void> {
  const options = parseOptions();
  const lab = await createLab({ name: "bench-apply", hosts: [{ backend: options.backend }] });
  try {
    const labHost = lab.hosts[0];
    const connection: HostConnection = {
      host: labHost.ipv4,
      privateKey: labHost.privateKey,
      hostKey: labHost.hostKey,
    };
    await lab.exec(labHost, ["iptables", "-w", "-N", CHAIN]);

    // Warm-up, not measured: the pooled connection, the facts and the first read of the table.
    let warm = await getHost(connection);
    await warm.applyTableChange("ipv4", "filter", { upsertRules: [benchRule("warm-up", 0, 0)] });

    const floor: number[] = [];
    const plain: number[] = [];
    const armed: number[] = [];
    const cold: number[] = [];
    let octet = 1;
    for (let run = 0; run < options.runs; run++) {
      const floorLine = `-A ${CHAIN} -s 198.18.99.${(run % 250) + 1}/32 -j ACCEPT`;
      floor.push(
        await timed(() =>
          floorApply(labHost, "iptables-restore --noflush -w", `*filter\n${floorLine}\nCOMMIT\n`),
        ),
      );
      // The floor changed the table behind the handle's snapshot. Between the resources of one
      // `pulumi up` nobody else does, so the snapshot is read again outside the measured time.
      await warm.readTable("ipv4", "filter");

      const plainRule = benchRule(`plain/${run}`, octet, octet++);
      plain.push(
        await timed(() =>
          warm.applyTableChange(
            "ipv4",
            "filter",
            { upsertRules: [plainRule] },
            { rollback: "never" },
          ),
        ),
      );

      const armedRule = benchRule(`armed/${run}`, octet, octet++);
      armed.push(
        await timed(() =>
          warm.applyTableChange(
            "ipv4",
            "filter",
            { upsertRules: [armedRule] },
            { rollback: "always" },
          ),
        ),
      );

      const coldRule = benchRule(`cold/${run}`, octet, octet++);
      cold.push(
        await timed(async () => {
          closeAllHosts();
          const fresh = await getHost(connection);
          await fresh.applyTableChange(
            "ipv4",
            "filter",
            { upsertRules: [coldRule] },
            { rollback: "never" },
          );
        }),
      );
      // The cold run closed the pooled connection: warm a new one outside the measured time.
      warm = await getHost(connection);
      await warm.readTable("ipv4", "filter");
    }

    const floorMs = median(floor);
    const plainMs = median(plain);
    const armedMs = median(armed);
    const coldMs = median(cold);
    const format = (ms: number) => `${ms.toFixed(1).padStart(7)} ms`;
    console.log(
      `apply benchmark: ${options.runs} runs on one ${options.backend} lab host, medians`,
    );
    console.log(`  floor (new SSH session + iptables-restore --noflush) ${format(floorMs)}`);
    console.log(
      `  applyTableChange, no dead-man switch              ${format(plainMs)}  ratio ${(plainMs / floorMs).toFixed(2)} (target <= 1.5)`,
    );
    console.log(
      `  applyTableChange, with dead-man switch            ${format(armedMs)}  ratio ${(armedMs / floorMs).toFixed(2)} (target <= 2.5)`,
    );
    console.log(
      `  first apply of a process (connect, facts, read)   ${format(coldMs)}  ratio ${(coldMs / floorMs).toFixed(2)}`,
    );
  } finally {
    closeAllHosts();
    await lab.destroy();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
