/**
 * The `npm run lab` command: start, list and remove lab hosts.
 *
 *   npm run lab -- up [N] [--backend nft|legacy|mixed] [--name NAME]
 *   npm run lab -- status [--name NAME]
 *   npm run lab -- down [--name NAME | --all]
 */
import { existsSync, readdirSync } from "node:fs";
import { connect } from "node:net";
import { parseArgs } from "node:util";
import type { Backend } from "../netfilter/types";
import {
  createLab,
  DEFAULT_LAB_NAME,
  destroyAllLabs,
  destroyLab,
  guardRoutesPresent,
  inventoryPath,
  labBaseDir,
  labDir,
  listLabNamespaces,
  readInventory,
  type LabHostSpec,
} from "./index";

const USAGE = `usage:
  npm run lab -- up [N] [--backend nft|legacy|mixed] [--name NAME]   start N hosts (default 3, nft)
  npm run lab -- status [--name NAME]                                list hosts and whether sshd answers
  npm run lab -- down [--name NAME | --all]                          remove a lab, or every lab`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: "string", default: DEFAULT_LAB_NAME },
      backend: { type: "string", default: "nft" },
      all: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, countText] = positionals;
  if (values.help || command === undefined) {
    console.log(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }

  switch (command) {
    case "up":
      return up(values.name, countText, values.backend);
    case "status":
      return status(values.name);
    case "down":
      if (values.all) {
        await destroyAllLabs();
        console.log("removed every lab");
        return 0;
      }
      if (!existsSync(labDir(values.name))) {
        console.log(`lab "${values.name}" is not up; nothing to remove`);
        return 0;
      }
      await destroyLab(values.name);
      console.log(`removed lab "${values.name}"`);
      return 0;
    default:
      console.error(`unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

async function up(name: string, countText: string | undefined, backend: string): Promise<number> {
  const count = countText === undefined ? 3 : Number(countText);
  if (!Number.isInteger(count) || count < 1) {
    console.error(`host count "${countText}" is invalid: give a whole number of hosts, such as 3`);
    return 2;
  }
  if (!["nft", "legacy", "mixed"].includes(backend)) {
    console.error(`--backend "${backend}" is invalid: use nft, legacy or mixed`);
    return 2;
  }
  const backendOf = (index: number): Backend => {
    if (backend !== "mixed") return backend as Backend;
    return index % 2 === 0 ? "nft" : "legacy";
  };
  const specs: LabHostSpec[] = Array.from({ length: count }, (_, index) => ({
    backend: backendOf(index),
  }));
  if (existsSync(inventoryPath(name))) {
    // createLab replaces a lab of the same name, so its hosts' rules and state are lost.
    console.log(`lab "${name}" is already up: replacing it with ${plural(count, "new host")}`);
  }
  const started = Date.now();
  const lab = await createLab({ name, hosts: specs });
  console.log(
    `lab "${name}": ${plural(lab.hosts.length, "host")} up in ${Date.now() - started} ms`,
  );
  await printHosts(name);
  console.log(`inventory: ${lab.inventoryPath}`);
  console.log(`ssh: ssh -i ${lab.hosts[0].privateKeyPath} root@${lab.hosts[0].ipv4}`);
  return 0;
}

async function status(name: string): Promise<number> {
  console.log(`guard routes: ${(await guardRoutesPresent()) ? "present" : "missing"}`);
  const base = labBaseDir();
  const labs = existsSync(base) ? readdirSync(base).filter((entry) => !entry.startsWith(".")) : [];
  console.log(`labs: ${labs.length === 0 ? "none" : labs.join(", ")}`);
  console.log(`lab namespaces: ${(await listLabNamespaces()).length}`);
  if (!existsSync(inventoryPath(name))) {
    console.log(`lab "${name}" is not up`);
    return 0;
  }
  await printHosts(name);
  return 0;
}

async function printHosts(name: string): Promise<void> {
  const inventory = readInventory(inventoryPath(name));
  for (const host of inventory.hosts) {
    const answering = await sshAnswers(host.ipv4, host.port);
    console.log(
      `  ${host.name}  ${host.ipv4.padEnd(15)} ${host.ipv6.padEnd(22)} ${host.backend.padEnd(6)} ` +
        `sshd ${answering ? "up" : "DOWN"}`,
    );
  }
}

function sshAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 });
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().startsWith("SSH-"));
    });
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  },
);

/** Returns "1 host" or "3 hosts". */
function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
