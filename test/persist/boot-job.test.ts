import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { renderPersistence } from "../../src/persist/boot-job";
import { RESTORE_SCRIPT } from "../../src/persist/restore-script";
import { IPV4_TABLES, IPV6_TABLES, nftCommands } from "./sample";

const COMMANDS = { ipv4: nftCommands("ipv4"), ipv6: nftCommands("ipv6") };

describe("renderPersistence", () => {
  it("writes rules files, the script and the unit on systemd", () => {
    const plan = renderPersistence({
      name: "web",
      init: "systemd",
      tables: { ipv4: IPV4_TABLES, ipv6: IPV6_TABLES },
      commands: COMMANDS,
    });
    expect(plan.jobName).toBe("pulumi-iptables-web.service");
    expect(plan.files.map((file) => file.path)).toEqual([
      "/etc/pulumi-iptables/web/rules.v4",
      "/etc/pulumi-iptables/web/rules.v6",
      "/etc/pulumi-iptables/web/restore.sh",
      "/etc/systemd/system/pulumi-iptables-web.service",
    ]);
    expect(plan.files[2]).toEqual({
      path: "/etc/pulumi-iptables/web/restore.sh",
      content: RESTORE_SCRIPT,
      mode: 0o755,
    });
    expect(plan.skipped).toEqual([]);
  });

  it("writes the upstart job on upstart", () => {
    const plan = renderPersistence({
      name: "web",
      init: "upstart",
      tables: { ipv4: IPV4_TABLES },
      commands: COMMANDS,
    });
    expect(plan.jobName).toBe("pulumi-iptables-web");
    expect(plan.files.map((file) => file.path)).toEqual([
      "/etc/pulumi-iptables/web/rules.v4",
      "/etc/pulumi-iptables/web/restore.sh",
      "/etc/init/pulumi-iptables-web.conf",
    ]);
    expect(plan.files[2].content).not.toContain("rules.v6");
  });

  it("writes nothing without rules", () => {
    const plan = renderPersistence({ name: "web", init: "systemd", tables: {}, commands: {} });
    expect(plan.files).toEqual([]);
    expect(plan.allPaths).toContain("/etc/systemd/system/pulumi-iptables-web.service");
    expect(plan.allPaths).toContain("/etc/pulumi-iptables/web/rules.v6");
  });

  it("fails with INIT_UNSUPPORTED on another init system", () => {
    let error: unknown;
    try {
      renderPersistence({
        name: "web",
        init: "other",
        tables: { ipv4: IPV4_TABLES },
        commands: COMMANDS,
      });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INIT_UNSUPPORTED")).toBe(true);
    expect((error as Error).message).toContain("neither systemd nor upstart");
    expect((error as Error).message).toContain("set persist to false");
  });

  it("keeps two boot jobs apart", () => {
    const web = renderPersistence({
      name: "web",
      init: "systemd",
      tables: { ipv4: IPV4_TABLES },
      commands: COMMANDS,
    });
    const db = renderPersistence({
      name: "db",
      init: "systemd",
      tables: { ipv4: IPV4_TABLES },
      commands: COMMANDS,
    });
    const webPaths = new Set(web.allPaths);
    expect(db.allPaths.filter((path) => webPaths.has(path))).toEqual([]);
    expect(db.jobName).toBe("pulumi-iptables-db.service");
  });

  it("rejects an invalid job name", () => {
    for (const name of ["", "Web", "a/b", "-x", "x".repeat(41), "a b"]) {
      let error: unknown;
      try {
        renderPersistence({
          name,
          init: "systemd",
          tables: { ipv4: IPV4_TABLES },
          commands: COMMANDS,
        });
      } catch (caught) {
        error = caught;
      }
      expect(hasErrorCode(error, "INVALID_INPUT"), name).toBe(true);
    }
  });

  it("rejects rules of a family without programs", () => {
    let error: unknown;
    try {
      renderPersistence({
        name: "web",
        init: "systemd",
        tables: { ipv6: IPV6_TABLES },
        commands: { ipv4: COMMANDS.ipv4 },
      });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    expect((error as Error).message).toContain("install ip6tables");
  });
});
