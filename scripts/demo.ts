/**
 * `npm run demo`: the main job on lab hosts, end to end.
 *
 * Starts a lab of 4 hosts (two iptables-nft, two iptables-legacy) unless one is up. Applies the
 * repository's Pulumi program (RateLimit on every host, IPv4 and IPv6) as `pulumi up` would.
 * Prints the managed lines in each host's iptables-save, then runs `up` a second time, which must
 * change nothing. It runs the program through the engine harness (test/harness/cli.ts), the same
 * dynamic provider server the Pulumi CLI starts; the README shows the same steps with the CLI.
 */
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createLab, inventoryPath, Lab, readInventory } from "../src/lab";

const REPO_ROOT = join(__dirname, "..");

function runProgram(command: "up"): void {
  const result = spawnSync("npx", ["tsx", "test/harness/cli.ts", command], {
    cwd: REPO_ROOT,
    stdio: "inherit",
  });
  if (result.status !== 0) {
    throw new Error(
      `"${command}" failed with exit code ${String(result.status)}; see the output above`,
    );
  }
}

/** The harness's state of the "lab" stack of the repository's program. */
const HARNESS_STATE = join(REPO_ROOT, ".lab", "harness", "pulumi-iptables-lab.lab.json");

async function main(): Promise<void> {
  let lab: Lab;
  if (existsSync(inventoryPath())) {
    lab = new Lab(readInventory());
  } else {
    lab = await createLab({
      hosts: [{ backend: "nft" }, { backend: "legacy" }, { backend: "nft" }, { backend: "legacy" }],
    });
    // State from an earlier lab describes hosts that no longer exist.
    rmSync(HARNESS_STATE, { force: true });
  }
  console.log(
    `lab "${lab.name}": ${lab.hosts.map((host) => `${host.name} ${host.ipv4} (${host.backend})`).join(", ")}`,
  );

  console.log("\n== up: apply RateLimit to every lab host");
  runProgram("up");

  for (const host of lab.hosts) {
    console.log(
      `\n== ${host.name} (${host.backend}): managed lines in iptables-save and ip6tables-save`,
    );
    for (const save of ["iptables-save", "ip6tables-save"]) {
      const dump = await lab.exec(host, [save, "-t", "filter"]);
      for (const line of dump.stdout.split("\n")) {
        if (line.includes("pulumi-iptables:")) console.log(`  ${line}`);
      }
    }
  }

  console.log("\n== up again: nothing to change");
  runProgram("up");
  console.log(
    "\nNext: `npx tsx test/harness/cli.ts preview --config rate=100/sec` shows a rate change, " +
      "`npx tsx test/harness/cli.ts destroy` removes the rules, `npm run lab -- down` removes the hosts.",
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
