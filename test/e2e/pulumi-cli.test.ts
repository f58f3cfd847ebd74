/**
 * The RateLimit recipe through the real Pulumi CLI (`up`, `preview --diff`, `refresh`,
 * `destroy`) with the local file backend, against one lab host. It runs only where a `pulumi`
 * binary is on PATH and otherwise skips with that reason. The engine harness covers the same
 * ground without the CLI.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../../src/lab";
import { fixtureProject } from "../harness";

const PULUMI = findOnPath("pulumi");
const SKIP_REASON =
  'no "pulumi" binary on PATH, so the real CLI test cannot run; install the Pulumi CLI ' +
  "(https://www.pulumi.com/docs/install/) to run it";

let lab: Lab | undefined;
let workDir = "";
let env: NodeJS.ProcessEnv = {};

/** The program the CLI runs: plain JavaScript, so the CLI needs no TypeScript toolchain. */
const PROGRAM = `"use strict";
const fs = require("node:fs");
const pulumi = require("@pulumi/pulumi");
const { RateLimit } = require("pulumi-iptables");

const config = new pulumi.Config();
const limit = new RateLimit("web", {
  connection: {
    host: config.require("host"),
    privateKey: pulumi.secret(fs.readFileSync(config.require("keyPath"), "utf8")),
  },
  rate: config.get("rate") || "50/sec",
  persist: false,
});
exports.rules = limit.rules;
`;

describe("real pulumi CLI", () => {
  beforeAll(async () => {
    if (PULUMI === undefined) return;
    lab = await createLab({ name: "res-e2e", hosts: [{ backend: "nft" }] });
    const fixture = fixtureProject();
    // Inside the fixture project, so the program and the provider resolve pulumi-iptables and
    // @pulumi/pulumi from its node_modules.
    workDir = fs.mkdtempSync(path.join(fixture.dir, "e2e-"));
    fs.writeFileSync(
      path.join(workDir, "Pulumi.yaml"),
      "name: e2e\nruntime: nodejs\nmain: index.js\n",
    );
    fs.writeFileSync(path.join(workDir, "index.js"), PROGRAM);
    fs.mkdirSync(path.join(workDir, "state"));
    env = {
      ...process.env,
      PULUMI_BACKEND_URL: `file://${path.join(workDir, "state")}`,
      PULUMI_CONFIG_PASSPHRASE: "e2e-test-passphrase",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_HOME: path.join(workDir, ".pulumi"),
    };
    delete env.NODE_OPTIONS;
    const host = lab.hosts[0];
    pulumi(["stack", "init", "e2e"]);
    pulumi(["config", "set", "host", host.ipv4]);
    pulumi(["config", "set", "keyPath", host.privateKeyPath]);
  }, 180_000);

  afterAll(async () => {
    if (workDir !== "") {
      pulumi(["destroy", "--yes"], { allowFailure: true });
      fs.rmSync(workDir, { recursive: true, force: true });
    }
    await lab?.destroy();
  });

  it("runs up, preview --diff, refresh and destroy", async (context) => {
    if (PULUMI === undefined) {
      console.log(`skipped: ${SKIP_REASON}`);
      context.skip(SKIP_REASON);
    }
    const host = lab!.hosts[0];
    const iptablesSave = async () => (await lab!.exec(host, ["iptables-save"])).stdout;

    pulumi(["up", "--yes", "--skip-preview"]);
    expect(await iptablesSave()).toContain("--hashlimit-upto 50/sec --hashlimit-burst 20");

    pulumi(["preview", "--diff", "--expect-no-changes"]);

    pulumi(["config", "set", "rate", "100/sec"]);
    const preview = pulumi(["preview", "--diff"]);
    expect(preview).toContain("--hashlimit-upto 50/sec");
    expect(preview).toContain("--hashlimit-upto 100/sec");
    pulumi(["up", "--yes", "--skip-preview"]);
    expect(await iptablesSave()).toContain("--hashlimit-upto 100/sec");

    await lab!.exec(host, ["iptables", "-D", "RATE-LIMIT", "3"]);
    pulumi(["refresh", "--yes"]);
    pulumi(["up", "--yes", "--skip-preview"]);
    expect(await iptablesSave()).toMatch(/-A RATE-LIMIT .* -j REJECT/);

    const state = pulumi(["stack", "export"]);
    const key = fs.readFileSync(host.privateKeyPath, "utf8");
    for (const line of key.split("\n").filter((l) => l.length >= 16 && !l.startsWith("-----"))) {
      expect(state).not.toContain(line);
    }

    pulumi(["destroy", "--yes"]);
    expect(await iptablesSave()).not.toContain("pulumi-iptables:");
  }, 600_000);
});

/** Runs the CLI in the work folder and returns its stdout; raises on a non-zero exit. */
function pulumi(args: string[], options: { allowFailure?: boolean } = {}): string {
  const result = spawnSync(PULUMI!, [...args, "--non-interactive"], {
    cwd: workDir,
    env,
    encoding: "utf8",
    timeout: 300_000,
  });
  if (result.status !== 0 && !options.allowFailure) {
    throw new Error(
      `pulumi ${args.join(" ")} failed (${result.status}):\n${result.stdout}\n${result.stderr}`,
    );
  }
  return result.stdout;
}

function findOnPath(name: string): string | undefined {
  for (const directory of (process.env.PATH ?? "").split(path.delimiter)) {
    const candidate = path.join(directory, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}
