import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { persistPaths } from "../../src/persist/paths";
import { renderSystemdUnit } from "../../src/persist/systemd";
import { golden } from "./golden";
import { nftCommands } from "./sample";

const PATHS = persistPaths("web");
const JOBS = [
  { family: "ipv4" as const, rulesPath: PATHS.rules.ipv4, ...nftCommands("ipv4") },
  { family: "ipv6" as const, rulesPath: PATHS.rules.ipv6, ...nftCommands("ipv6") },
];

function render(jobs: Parameters<typeof renderSystemdUnit>[2]): string {
  return renderSystemdUnit("web", PATHS.script, jobs);
}

/** Reads a unit file into "Section.Key" -> values, in file order. */
function parseUnit(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let section = "";
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1];
      continue;
    }
    const separator = line.indexOf("=");
    const key = `${section}.${line.slice(0, separator)}`;
    entries.set(key, [...(entries.get(key) ?? []), line.slice(separator + 1)]);
  }
  return entries;
}

describe("renderSystemdUnit", () => {
  it("matches the golden file", () => {
    const unit = render(JOBS);
    expect(unit).toBe(golden("pulumi-iptables-web.service", unit));
  });

  it("passes systemd-analyze verify without output", () => {
    const dir = mkdtempSync(join(tmpdir(), "pulumi-iptables-unit-"));
    try {
      const path = join(dir, PATHS.systemdUnitName);
      writeFileSync(path, render(JOBS));
      const result = spawnSync("systemd-analyze", ["verify", path], { encoding: "utf8" });
      expect(result.error).toBeUndefined();
      expect(result.stdout + result.stderr).toBe("");
      expect(result.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("orders the restore before the network", () => {
    const unit = parseUnit(render(JOBS));
    expect(unit.get("Unit.DefaultDependencies")).toEqual(["no"]);
    expect(unit.get("Unit.Wants")).toEqual(["network-pre.target"]);
    expect(unit.get("Unit.Before")?.[0].split(" ")).toContain("network-pre.target");
    expect(unit.get("Unit.After")?.[0].split(" ").sort()).toEqual([
      "local-fs.target",
      "systemd-modules-load.service",
    ]);
    expect(unit.get("Service.Type")).toEqual(["oneshot"]);
    expect(unit.get("Service.RemainAfterExit")).toEqual(["yes"]);
    expect(unit.get("Install.WantedBy")).toEqual(["multi-user.target"]);
  });

  it("runs one restore per family with the backend programs", () => {
    const exec = parseUnit(render(JOBS)).get("Service.ExecStart") ?? [];
    expect(exec).toHaveLength(2);
    expect(exec[0].split(" ")).toEqual([
      "/bin/sh",
      "/etc/pulumi-iptables/web/restore.sh",
      "ipv4",
      "/etc/pulumi-iptables/web/rules.v4",
      "/usr/sbin/iptables-nft-save",
      "/usr/sbin/iptables-nft-restore",
      "--noflush",
      "--wait",
    ]);
    expect(exec[1]).toContain("/usr/sbin/ip6tables-nft-restore --noflush --wait");
  });

  it("leaves out --wait for an old restore program", () => {
    const unit = render([
      {
        family: "ipv4",
        rulesPath: PATHS.rules.ipv4,
        saveCommand: "/sbin/iptables-save",
        restoreCommand: "/sbin/iptables-restore",
        wait: false,
      },
    ]);
    expect(unit).toContain("/sbin/iptables-restore --noflush\n");
  });

  it("renders the same bytes twice", () => {
    expect(render(JOBS)).toBe(render(JOBS.map((job) => ({ ...job }))));
  });

  it("rejects an empty job list", () => {
    let error: unknown;
    try {
      render([]);
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });

  it("rejects a family listed twice", () => {
    let error: unknown;
    try {
      render([JOBS[0], JOBS[0]]);
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
  });

  it("rejects paths that would need quoting", () => {
    for (const restoreCommand of [
      "iptables-restore",
      "/usr/sbin/ip tables",
      "/x/$(id)",
      "/a/../b",
      "/a%b",
    ]) {
      let error: unknown;
      try {
        render([{ ...JOBS[0], restoreCommand }]);
      } catch (caught) {
        error = caught;
      }
      expect(hasErrorCode(error, "INVALID_INPUT"), restoreCommand).toBe(true);
    }
  });
});
