/**
 * A Pulumi project directory with the packed `pulumi-iptables` installed, as a user has it.
 *
 * The package is compiled from src/ into a staging directory (so a concurrent `npm run build` in
 * the shared tree is not disturbed), packed with `npm pack`, and the tarball is unpacked into
 * `<project>/node_modules/pulumi-iptables`. Its dependencies and peer dependencies are symlinks
 * into the repository's node_modules, so no network is needed. One project exists per content
 * hash of the sources, so test files running in parallel share it and a stale one is never
 * swapped out under a running provider process.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
const FIXTURE_ROOT = path.join(REPO_ROOT, "test", ".fixture-project");
const LOCK_STALE_MS = 10 * 60_000;

export interface FixtureProject {
  /** The project directory: the provider server's working directory. */
  readonly dir: string;
  /** The packed tarball that was installed. */
  readonly tarball: string;
  /** `require` resolving from the project directory, as the user's program does. */
  readonly require: NodeJS.Require;
}

let cached: FixtureProject | undefined;

/** Builds, packs and installs the package once per source hash, and returns the project. */
export function fixtureProject(): FixtureProject {
  if (cached) return cached;
  const hash = sourceHash();
  const dir = path.join(FIXTURE_ROOT, hash);
  const tarball = path.join(dir, "pulumi-iptables.tgz");

  withLock(() => {
    if (fs.existsSync(path.join(dir, ".complete"))) return;
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    packInto(dir, tarball);
    installInto(dir, tarball);
    writeProjectFiles(dir);
    fs.writeFileSync(path.join(dir, ".complete"), new Date().toISOString());
    removeOldProjects(hash);
  });

  cached = { dir, tarball, require: createRequire(path.join(dir, "package.json")) };
  return cached;
}

/** Hashes everything that goes into the packed package. */
function sourceHash(): string {
  const hash = createHash("sha256");
  const files = ["package.json", "tsconfig.json", "tsconfig.build.json", ...listFiles("src")];
  for (const file of files.sort()) {
    hash.update(file);
    hash.update(fs.readFileSync(path.join(REPO_ROOT, file)));
  }
  return hash.digest("hex").slice(0, 16);
}

function listFiles(relativeDir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(path.join(REPO_ROOT, relativeDir), { withFileTypes: true })) {
    const relative = path.join(relativeDir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(relative));
    else if (entry.isFile()) out.push(relative);
  }
  return out;
}

/** Compiles src/ into a staging directory and packs it with npm, as `npm publish` would. */
function packInto(dir: string, tarball: string): void {
  const stage = path.join(dir, ".stage");
  fs.mkdirSync(stage, { recursive: true });
  const tsc = path.join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(
      process.execPath,
      [tsc, "-p", "tsconfig.build.json", "--outDir", path.join(stage, "dist")],
      { cwd: REPO_ROOT, stdio: "pipe" },
    );
  } catch (error) {
    // tsc still emits JavaScript when types are wrong. Type errors are `npm run typecheck`'s
    // business; a package without its entry point cannot be tested at all.
    const output = (error as { stdout?: Buffer }).stdout?.toString() ?? "";
    if (!fs.existsSync(path.join(stage, "dist", "index.js"))) {
      throw new Error(`building the package for the fixture project failed:\n${output}`, {
        cause: error,
      });
    }
    console.warn(`the fixture package was built despite type errors:\n${output}`);
  }
  for (const file of ["package.json", "README.md", "LICENSE"]) {
    const source = path.join(REPO_ROOT, file);
    if (fs.existsSync(source)) fs.copyFileSync(source, path.join(stage, file));
  }

  const packed = execFileSync(
    "npm",
    ["pack", stage, "--pack-destination", dir, "--ignore-scripts", "--json", "--silent"],
    { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env: npmEnv() },
  ).toString();
  const [{ filename }] = JSON.parse(packed) as { filename: string }[];
  fs.renameSync(path.join(dir, filename), tarball);
  fs.rmSync(stage, { recursive: true, force: true });
}

/** Unpacks the tarball as node_modules/pulumi-iptables and links its dependencies. */
function installInto(dir: string, tarball: string): void {
  const modules = path.join(dir, "node_modules");
  const unpack = path.join(dir, ".unpack");
  fs.mkdirSync(unpack, { recursive: true });
  execFileSync("tar", ["-xzf", tarball, "-C", unpack]);
  fs.mkdirSync(modules, { recursive: true });
  fs.renameSync(path.join(unpack, "package"), path.join(modules, "pulumi-iptables"));
  fs.rmSync(unpack, { recursive: true, force: true });

  const manifest = JSON.parse(
    fs.readFileSync(path.join(modules, "pulumi-iptables", "package.json"), "utf8"),
  ) as { dependencies?: Record<string, string>; peerDependencies?: Record<string, string> };
  const names = [
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}),
  ];
  for (const name of names) {
    const target = path.join(REPO_ROOT, "node_modules", name);
    const link = path.join(modules, name);
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(target, link, "dir");
  }
}

/** Writes the files that make the directory a Pulumi project a user could run. */
function writeProjectFiles(dir: string): void {
  fs.writeFileSync(
    path.join(dir, "package.json"),
    JSON.stringify(
      {
        name: "fixture-project",
        private: true,
        dependencies: { "pulumi-iptables": "file:./pulumi-iptables.tgz" },
      },
      null,
      2,
    ),
  );
  fs.writeFileSync(
    path.join(dir, "Pulumi.yaml"),
    "name: fixture-project\nruntime: nodejs\ndescription: engine harness fixture\n",
  );
}

function removeOldProjects(keep: string): void {
  for (const entry of fs.readdirSync(FIXTURE_ROOT)) {
    if (entry === keep || entry.startsWith(".")) continue;
    const full = path.join(FIXTURE_ROOT, entry);
    const age = Date.now() - fs.statSync(full).mtimeMs;
    // Another test run may still use a recent project; leave those alone.
    if (age > 60 * 60_000) fs.rmSync(full, { recursive: true, force: true });
  }
}

/** Runs `fn` holding a lock directory, so parallel test files build the fixture once. */
function withLock(fn: () => void): void {
  fs.mkdirSync(FIXTURE_ROOT, { recursive: true });
  const lock = path.join(FIXTURE_ROOT, ".lock");
  const deadline = Date.now() + LOCK_STALE_MS;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const stat = fs.statSync(lock, { throwIfNoEntry: false });
      if (stat === undefined) continue;
      if (Date.now() - stat.mtimeMs > LOCK_STALE_MS || Date.now() > deadline) {
        fs.rmSync(lock, { recursive: true, force: true });
      } else {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
      }
    }
  }
  try {
    fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function npmEnv(): NodeJS.ProcessEnv {
  // npm pack of a local directory needs no registry; offline keeps it from trying one.
  return { ...process.env, npm_config_offline: "true", npm_config_update_notifier: "false" };
}
