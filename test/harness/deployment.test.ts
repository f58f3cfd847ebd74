/**
 * The harness itself, driven with a small dynamic resource that keeps one file per resource in
 * a temporary directory, so each engine rule can be observed from outside the provider.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Deployment, DeploymentError, type Program } from "./deployment";
import { SECRET_SIG, SIG_KEY, UNKNOWN, isSecret } from "./wire";

let deployment: Deployment;
let dir: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "harness-"));
  deployment = await Deployment.start({ project: "selftest", stack: "dev" });
});

afterAll(async () => {
  await deployment?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A program with one file resource per entry of `files` (name -> content). */
function filesProgram(files: Record<string, string>, token = "s3cr3t-token"): Program {
  return (_pkg, pulumi) => {
    class FileResource extends pulumi.dynamic.Resource {}
    const provider: import("@pulumi/pulumi").dynamic.ResourceProvider = {
      async check(_olds, news) {
        const failures =
          news.content === "invalid" ? [{ property: "content", reason: "content is invalid" }] : [];
        return {
          inputs: {
            ...news,
            length: typeof news.content === "string" ? news.content.length : news.content,
          },
          failures,
        };
      },
      async diff(_id, olds, news) {
        const replaces = olds.file !== news.file ? ["file"] : [];
        const changes =
          olds.content !== news.content || olds.token !== news.token || replaces.length > 0;
        return { changes, replaces };
      },
      async create(inputs) {
        const fs = require("node:fs");
        fs.writeFileSync(inputs.file, `${inputs.content}\n${inputs.token}`);
        return { id: inputs.file, outs: { ...inputs, tokenEcho: inputs.token } };
      },
      async read(id, props) {
        const fs = require("node:fs");
        if (!fs.existsSync(id)) return { id: "" as unknown as string, props: {} };
        const [content] = fs.readFileSync(id, "utf8").split("\n");
        // `reads` changes on every read, as a packet counter would.
        const reads = Number(props.reads ?? 0) + 1;
        return { id, props: { ...props, content, reads }, inputs: { ...props, content } };
      },
      async update(_id, _olds, news) {
        const fs = require("node:fs");
        fs.writeFileSync(news.file, `${news.content}\n${news.token}`);
        return { outs: { ...news, tokenEcho: news.token } };
      },
      async delete(id) {
        require("node:fs").rmSync(id, { force: true });
      },
    };
    for (const [name, content] of Object.entries(files)) {
      new FileResource(
        provider,
        name,
        { file: path.join(dir, name), content, token: pulumi.secret(token) },
        { additionalSecretOutputs: ["tokenEcho"] },
      );
    }
    return { count: Object.keys(files).length };
  };
}

describe("engine harness", () => {
  it("creates through the provider server", async () => {
    const result = await deployment.up(filesProgram({ a: "one", b: "two" }));

    expect(result.calls).toMatchObject({ check: 2, create: 2, update: 0, delete: 0 });
    expect(fs.readFileSync(path.join(dir, "a"), "utf8")).toBe("one\ns3cr3t-token");
    expect(result.outputs).toEqual({ count: 2 });
  });

  it("sends the provider plain values and keeps secrets secret in state", () => {
    const a = deployment.resource("a");

    expect(isSecret(a.inputs.token)).toBe(true);
    expect(isSecret(a.outputs.token)).toBe(true);
    expect(isSecret(a.outputs.tokenEcho)).toBe(true);
    expect(a.outputs.length).toBe(3);
    expect(deployment.checkpoint()).not.toContain("s3cr3t-token");
    expect(deployment.checkpoint()).toContain(SECRET_SIG);
    expect(JSON.stringify(a.outputs)).toContain(SIG_KEY);
  });

  it("makes no create, update or delete call on a second up", async () => {
    const result = await deployment.up(filesProgram({ a: "one", b: "two" }));

    expect(result.calls).toMatchObject({ check: 2, diff: 2, create: 0, update: 0, delete: 0 });
    expect(result.steps.map((s) => s.op)).toEqual(["same", "same"]);
  });

  it("previews an update without calling Update", async () => {
    const result = await deployment.preview(filesProgram({ a: "uno", b: "two" }));

    const step = result.steps.find((s) => s.name === "a");
    expect(step?.op).toBe("update");
    expect(step?.oldInputs?.content).toBe("one");
    expect(step?.newInputs?.content).toBe("uno");
    expect(result.calls).toMatchObject({ create: 0, update: 0, delete: 0 });
    expect(fs.readFileSync(path.join(dir, "a"), "utf8")).toBe("one\ns3cr3t-token");
  });

  it("updates, creates and deletes in one up", async () => {
    const result = await deployment.up(filesProgram({ a: "uno", c: "three" }));

    expect(result.calls).toMatchObject({ update: 1, create: 1, delete: 1 });
    expect(fs.existsSync(path.join(dir, "b"))).toBe(false);
    expect(
      deployment.state
        .filter((r) => r.custom)
        .map((r) => r.name)
        .sort(),
    ).toEqual(["a", "c"]);
  });

  it("refresh drops a deleted resource and takes changed inputs", async () => {
    fs.rmSync(path.join(dir, "c"));
    fs.writeFileSync(path.join(dir, "a"), "edited\nx");

    const result = await deployment.refresh();

    expect(result.steps.find((s) => s.name === "c")?.op).toBe("refresh-delete");
    const a = result.steps.find((s) => s.name === "a");
    expect(a?.op).toBe("refresh-update");
    expect(a?.changedKeys).toEqual(["content"]);
    expect(deployment.resource("a").inputs.content).toBe("edited");
    expect(isSecret(deployment.resource("a").inputs.token)).toBe(true);
  });

  it("refresh ignores outputs that change by themselves", async () => {
    const result = await deployment.refresh();

    expect(result.steps.map((step) => step.op)).toEqual(result.steps.map(() => "refresh-same"));
    expect(deployment.resource("a").outputs.reads).toBe(2);
  });

  it("fails a resource whose check fails, creating nothing", async () => {
    const error = await deployment.up(filesProgram({ a: "uno", d: "invalid" })).catch((e) => e);

    expect(error).toBeInstanceOf(DeploymentError);
    expect((error as DeploymentError).message).toContain("content: content is invalid");
    expect((error as DeploymentError).result.calls.update).toBe(1);
    expect(fs.existsSync(path.join(dir, "d"))).toBe(false);
  });

  it("destroys everything", async () => {
    await deployment.destroy();

    expect(deployment.state).toEqual([]);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

describe("engine harness unknowns", () => {
  const chained: Program = (_pkg, pulumi) => {
    const provider: import("@pulumi/pulumi").dynamic.ResourceProvider = {
      async create(inputs) {
        return { id: `id-of-${inputs.label}`, outs: inputs };
      },
    };
    class Plain extends pulumi.dynamic.Resource {}
    const first = new Plain(provider, "first", { label: "first" });
    new Plain(provider, "second", { label: first.id });
  };

  it("sends unknowns only in preview", async () => {
    const preview = await deployment.preview(chained);
    const up = await deployment.up(chained);

    expect(preview.steps.find((s) => s.name === "second")?.newInputs?.label).toBe(UNKNOWN);
    expect(preview.calls.create).toBe(0);
    expect(up.steps.find((s) => s.name === "second")?.newInputs?.label).toBe("id-of-first");
    await deployment.destroy();
  });
});

describe("engine harness failures", () => {
  /**
   * Builds a component with three children: `source` fails at check or at create (`failAt`),
   * `dependent` takes `source`'s id as an input, and `independent` takes nothing from it.
   * The component registers an output built from both, as RateLimit does.
   */
  function componentProgram(failAt: "check" | "create"): Program {
    return (_pkg, pulumi) => {
      const provider: import("@pulumi/pulumi").dynamic.ResourceProvider = {
        async check(_olds, news) {
          const failures =
            news.label === "fail-check" ? [{ property: "label", reason: "label is invalid" }] : [];
          return { inputs: news, failures };
        },
        async create(inputs) {
          if (inputs.label === "fail-create") throw new Error("create of fail-create failed");
          return { id: `id-of-${inputs.label}`, outs: inputs };
        },
      };
      class Plain extends pulumi.dynamic.Resource {}
      class Group extends pulumi.ComponentResource {
        constructor(name: string) {
          super("harness:test:Group", name);
          const source = new Plain(
            provider,
            `${name}-source`,
            { label: `fail-${failAt}` },
            {
              parent: this,
            },
          );
          const dependent = new Plain(
            provider,
            `${name}-dependent`,
            { label: source.id },
            {
              parent: this,
            },
          );
          const independent = new Plain(
            provider,
            `${name}-independent`,
            { label: "free" },
            {
              parent: this,
            },
          );
          this.registerOutputs({ ids: pulumi.all([dependent.id, independent.id]) });
        }
      }
      new Group("group");
    };
  }

  for (const failAt of ["check", "create"] as const) {
    it(`fails a component whose child fails at ${failAt}`, async () => {
      const started = Date.now();
      const error = await deployment.up(componentProgram(failAt)).catch((e: unknown) => e);
      const elapsedMs = Date.now() - started;

      expect(error).toBeInstanceOf(DeploymentError);
      const failure = error as DeploymentError;
      expect(failure.message).toContain(
        failAt === "check" ? "label: label is invalid" : "create of fail-create failed",
      );
      expect(elapsedMs).toBeLessThan(5_000);
      const created = failure.result.steps.filter((s) => s.op === "create").map((s) => s.name);
      expect(created).toContain("group-independent");
      expect(created).not.toContain("group-dependent");
      expect(deployment.state.map((r) => r.name)).toContain("group-independent");
      expect(deployment.state.map((r) => r.name)).not.toContain("group-dependent");

      await deployment.destroy();
      expect(deployment.state).toEqual([]);
    });
  }
});

describe("engine harness destroy", () => {
  it("keeps what a failed delete depends on", async () => {
    const program: Program = (_pkg, pulumi) => {
      const provider: import("@pulumi/pulumi").dynamic.ResourceProvider = {
        async create(inputs) {
          return { id: `id-of-${inputs.label}`, outs: inputs };
        },
        async delete(_id, props) {
          if (props.label === "stuck") throw new Error("delete of stuck failed");
        },
      };
      class Plain extends pulumi.dynamic.Resource {}
      const base = new Plain(provider, "base", { label: "base" });
      new Plain(provider, "stuck", { label: "stuck", after: base.id });
      new Plain(provider, "loose", { label: "loose" });
    };
    await deployment.up(program);

    const error = await deployment.destroy().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(DeploymentError);
    expect((error as DeploymentError).message).toContain("stuck: delete failed:");
    expect((error as DeploymentError).result.calls.delete).toBe(2);
    expect(deployment.state.filter((r) => r.custom).map((r) => r.name)).toEqual(["base", "stuck"]);
    deployment.state = [];
  });
});

describe("engine harness refresh", () => {
  it("reads resources in parallel", async () => {
    const program: Program = (_pkg, pulumi) => {
      const provider: import("@pulumi/pulumi").dynamic.ResourceProvider = {
        async create(inputs) {
          return { id: `id-of-${inputs.label}`, outs: inputs };
        },
        async read(id, props) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          return { id, props };
        },
      };
      class Slow extends pulumi.dynamic.Resource {}
      for (let i = 0; i < 8; i++) new Slow(provider, `slow-${i}`, { label: `slow-${i}` });
    };
    await deployment.up(program);

    const started = Date.now();
    const result = await deployment.refresh();
    const elapsedMs = Date.now() - started;

    expect(result.calls.read).toBe(8);
    // One after another the reads would take 8 x 500 ms.
    expect(elapsedMs).toBeLessThan(2_000);
    expect(deployment.state.filter((r) => r.custom).map((r) => r.name)).toEqual(
      Array.from({ length: 8 }, (_, i) => `slow-${i}`),
    );
    await deployment.destroy();
  });
});
