/**
 * Runs a Pulumi program through the engine harness from the command line, for machines without
 * the Pulumi CLI. It uses the same provider server and engine rules as the tests, and keeps the
 * stack's state between runs in a file whose secrets are encrypted.
 *
 *   npx tsx test/harness/cli.ts up        # or preview, refresh, destroy
 *   npx tsx test/harness/cli.ts preview --config rate=100/sec
 *
 * Options: --program FILE (default index.ts: the repository's lab program; a program elsewhere
 * may import "pulumi-iptables" and "@pulumi/pulumi" without installing them), --stack NAME
 * (default "lab"), --config KEY=VALUE (repeatable; the key without the project prefix).
 * State: .lab/harness/<project>.<stack>.json. Secrets in it are encrypted with AES-256-GCM under
 * a key derived from PULUMI_CONFIG_PASSPHRASE, or else under a random key kept beside it in
 * .lab/harness/secrets.key (mode 0600).
 */
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from "node:crypto";
import * as fs from "node:fs";
import Module from "node:module";
import * as path from "node:path";
import {
  Deployment,
  DeploymentError,
  type OperationResult,
  type ResourceState,
} from "./deployment";
import { REPO_ROOT } from "./fixture";
import { SECRET_SIG, SIG_KEY, isSecret } from "./wire";

const STATE_DIR = path.join(REPO_ROOT, ".lab", "harness");
const COMMANDS = ["up", "preview", "refresh", "destroy"] as const;
type Command = (typeof COMMANDS)[number];

interface Options {
  readonly command: Command;
  readonly program: string;
  readonly stack: string;
  readonly config: Record<string, string>;
}

async function main(argv: readonly string[]): Promise<number> {
  const options = parseArguments(argv);
  const project = projectName(path.dirname(options.program));
  const config = Object.fromEntries(
    Object.entries(options.config).map(([key, value]) => [`${project}:${key}`, value]),
  );
  const statePath = path.join(STATE_DIR, `${project}.${options.stack}.json`);
  const cipher = secretCipher();

  const deployment = await Deployment.start({ project, stack: options.stack, config });
  deployment.state = loadState(statePath, cipher);
  resolvePackagesFromRepository();
  const program = () => {
    delete require.cache[require.resolve(options.program)];
    require(options.program);
  };
  const stateBefore = deployment.state;
  const states = () => [...stateBefore, ...deployment.state];
  try {
    const result = await run(deployment, options.command, program);
    report(options.command, result, states());
    return 0;
  } catch (error) {
    if (!(error instanceof DeploymentError)) throw error;
    report(options.command, error.result, states());
    console.error(error.message);
    return 1;
  } finally {
    if (options.command !== "preview") saveState(statePath, deployment.state, cipher);
    await deployment.close();
  }
}

function run(
  deployment: Deployment,
  command: Command,
  program: () => void,
): Promise<OperationResult> {
  if (command === "up") return deployment.up(program);
  if (command === "preview") return deployment.preview(program);
  if (command === "refresh") return deployment.refresh();
  return deployment.destroy();
}

/**
 * Makes `pulumi-iptables` and `@pulumi/pulumi` resolve for a program anywhere, as if its
 * directory had them installed: `pulumi-iptables` is this repository's source, and a program
 * without an SDK of its own gets the repository's copy.
 */
function resolvePackagesFromRepository(): void {
  const moduleClass = Module as unknown as {
    _resolveFilename(request: string, parent: unknown, ...rest: unknown[]): string;
  };
  const original = moduleClass._resolveFilename;
  const repositoryModule = new Module(path.join(REPO_ROOT, "index.ts"));
  repositoryModule.paths = (
    Module as unknown as { _nodeModulePaths(dir: string): string[] }
  )._nodeModulePaths(REPO_ROOT);
  moduleClass._resolveFilename = function (request, parent, ...rest) {
    if (request === "pulumi-iptables") return path.join(REPO_ROOT, "src", "index.ts");
    try {
      return original.call(this, request, parent, ...rest);
    } catch (error) {
      const sdk = request === "@pulumi/pulumi" || request.startsWith("@pulumi/pulumi/");
      if (!sdk || (error as NodeJS.ErrnoException).code !== "MODULE_NOT_FOUND") throw error;
      return original.call(this, request, repositoryModule, ...rest);
    }
  };
}

/** Prints one line per step that changes something, and the provider calls made. */
function report(command: Command, result: OperationResult, state: readonly ResourceState[]): void {
  const symbols: Record<string, string> = {
    create: "+",
    update: "~",
    replace: "+-",
    delete: "-",
    "refresh-update": "~",
    "refresh-delete": "-",
  };
  for (const step of result.steps) {
    const symbol = symbols[step.op];
    if (symbol === undefined) continue;
    console.log(`${symbol} ${step.name} (${step.op})`);
    if (step.op === "update" || step.op === "replace") {
      // Steps carry plain values; the state before and after still marks which are secret.
      const versions = state.filter((candidate) => candidate.urn === step.urn);
      for (const key of step.changedKeys) {
        const secret =
          SECRET_INPUTS.has(key) ||
          versions.some((r) => isSecret(r.inputs[key]) || isSecret(r.outputs[key]));
        console.log(`    ${key}: ${show(step.oldInputs?.[key], secret)}`);
        console.log(`    ${" ".repeat(key.length)}  -> ${show(step.newInputs?.[key], secret)}`);
      }
    }
  }
  // The Pulumi CLI shows what a provider prints (warnings, retries) as diagnostics.
  for (const log of result.logs) {
    for (const line of log.text.split("\n")) if (line.trim() !== "") console.log(line);
  }
  const calls = Object.entries(result.calls)
    .map(([method, count]) => `${method} ${count}`)
    .join(", ");
  console.log(`${command}: ${result.steps.length} resources; provider calls: ${calls}`);
}

/**
 * Inputs that are secret by contract. Steps carry plain values, so they are masked by name here,
 * as the Pulumi CLI prints "[secret]" for them.
 */
const SECRET_INPUTS = new Set(["connection", "password", "privateKey", "privateKeyPassword"]);

function show(value: unknown, secret: boolean): string {
  if (value === undefined) return "(none)";
  return secret ? "[secret]" : JSON.stringify(value);
}

function parseArguments(argv: readonly string[]): Options {
  const [command, ...rest] = argv;
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new Error(
      `usage: cli.ts <${COMMANDS.join("|")}> [--program FILE] [--stack NAME] [--config KEY=VALUE]`,
    );
  }
  let program = path.join(REPO_ROOT, "index.ts");
  let stack = "lab";
  const config: Record<string, string> = {};
  for (let index = 0; index < rest.length; index += 2) {
    const [flag, value] = [rest[index], rest[index + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--program") program = path.resolve(value);
    else if (flag === "--stack") stack = value;
    else if (flag === "--config" && value.includes("=")) {
      config[value.slice(0, value.indexOf("="))] = value.slice(value.indexOf("=") + 1);
    } else throw new Error(`unknown option ${flag} ${value}`);
  }
  return { command: command as Command, program, stack, config };
}

/** Reads the `name:` of the Pulumi.yaml beside the program. */
function projectName(directory: string): string {
  const text = fs.readFileSync(path.join(directory, "Pulumi.yaml"), "utf8");
  const match = /^name:\s*(\S+)\s*$/m.exec(text);
  if (match === null) throw new Error(`no "name:" in ${path.join(directory, "Pulumi.yaml")}`);
  return match[1];
}

interface SecretCipher {
  encrypt(value: unknown): string;
  decrypt(ciphertext: string): unknown;
}

function secretCipher(): SecretCipher {
  fs.mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
  let key: Buffer;
  const passphrase = process.env.PULUMI_CONFIG_PASSPHRASE;
  if (passphrase !== undefined && passphrase !== "") {
    key = scryptSync(passphrase, "pulumi-iptables harness state", 32);
  } else {
    const keyPath = path.join(STATE_DIR, "secrets.key");
    if (!fs.existsSync(keyPath)) fs.writeFileSync(keyPath, randomBytes(32), { mode: 0o600 });
    key = fs.readFileSync(keyPath);
  }
  return {
    encrypt(value) {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      const data = Buffer.concat([cipher.update(JSON.stringify(value), "utf8"), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), data]).toString("base64");
    },
    decrypt(ciphertext) {
      const bytes = Buffer.from(ciphertext, "base64");
      const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, 12));
      decipher.setAuthTag(bytes.subarray(12, 28));
      const text = Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString(
        "utf8",
      );
      return JSON.parse(text);
    },
  };
}

function mapSecrets(value: unknown, fn: (secret: Record<string, unknown>) => unknown): unknown {
  if (typeof value !== "object" || value === null) return value;
  if ((value as Record<string, unknown>)[SIG_KEY] === SECRET_SIG)
    return fn(value as Record<string, unknown>);
  if (Array.isArray(value)) return value.map((item) => mapSecrets(item, fn));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapSecrets(v, fn)]));
}

function saveState(file: string, state: readonly ResourceState[], cipher: SecretCipher): void {
  const encrypted = mapSecrets(state, (secret) => ({
    [SIG_KEY]: SECRET_SIG,
    ciphertext: cipher.encrypt(isSecret(secret) ? secret.value : undefined),
  }));
  fs.writeFileSync(file, JSON.stringify({ version: 1, resources: encrypted }, null, 2), {
    mode: 0o600,
  });
}

function loadState(file: string, cipher: SecretCipher): ResourceState[] {
  if (!fs.existsSync(file)) return [];
  const saved = JSON.parse(fs.readFileSync(file, "utf8")) as { resources: unknown };
  return mapSecrets(saved.resources, (secret) => ({
    [SIG_KEY]: SECRET_SIG,
    value: cipher.decrypt(String(secret.ciphertext)),
  })) as ResourceState[];
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(2);
  },
);
