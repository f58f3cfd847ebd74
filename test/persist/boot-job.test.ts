import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { renderPersistence } from "../../src/persist/boot-job";
import { RESTORE_SCRIPT } from "../../src/persist/restore-script";
import { IPV4_TABLES, IPV6_TABLES, nftCommands } from "./sample";

const COMMANDS = { ipv4: nftCommands("ipv4"), ipv6: nftCommands("ipv6") };

describe("renderPersistence", () => {
  it("writes rules files, the script and the unit on systemd", () => {
    const plan = renderPersistence({
      init: "systemd",
      tables: { ipv4: IPV4_TABLES, ipv6: IPV6_TABLES },
      commands: COMMANDS,
    });
    expect(plan.jobName).toBe("pulumi-iptables.service");
    expect(plan.files.map((file) => file.path)).toEqual([
      "/etc/pulumi-iptables/rules.v4",
      "/etc/pulumi-iptables/rules.v6",
      "/etc/pulumi-iptables/restore.sh",
      "/etc/systemd/system/pulumi-iptables.service",
    ]);
    expect(plan.files[2]).toEqual({
      path: "/etc/pulumi-iptables/restore.sh",
      content: RESTORE_SCRIPT,
      mode: 0o755,
    });
    expect(plan.skipped).toEqual([]);
  });

  it("writes the upstart job on upstart", () => {
    const plan = renderPersistence({
      init: "upstart",
      tables: { ipv4: IPV4_TABLES },
      commands: COMMANDS,
    });
    expect(plan.jobName).toBe("pulumi-iptables");
    expect(plan.files.map((file) => file.path)).toEqual([
      "/etc/pulumi-iptables/rules.v4",
      "/etc/pulumi-iptables/restore.sh",
      "/etc/init/pulumi-iptables.conf",
    ]);
    expect(plan.files[2].content).not.toContain("rules.v6");
  });

  it("writes nothing without rules", () => {
    const plan = renderPersistence({ init: "systemd", tables: {}, commands: {} });
    expect(plan.files).toEqual([]);
    expect(plan.allPaths).toContain("/etc/systemd/system/pulumi-iptables.service");
    expect(plan.allPaths).toContain("/etc/pulumi-iptables/rules.v6");
  });

  it("fails with INIT_UNSUPPORTED on another init system", () => {
    let error: unknown;
    try {
      renderPersistence({ init: "other", tables: { ipv4: IPV4_TABLES }, commands: COMMANDS });
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "INIT_UNSUPPORTED")).toBe(true);
    expect((error as Error).message).toContain("neither systemd nor upstart");
    expect((error as Error).message).toContain("set persist to false");
  });

  it("rejects rules of a family without programs", () => {
    let error: unknown;
    try {
      renderPersistence({
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
