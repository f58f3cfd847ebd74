import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { binariesOf, isPosixShell, parseFacts } from "../../src/host/facts";

const ALL_PROGRAMS = [
  "iptables",
  "ip6tables",
  "iptables-save",
  "iptables-restore",
  "ip6tables-save",
  "ip6tables-restore",
  "iptables-nft-save",
  "iptables-nft-restore",
  "ip6tables-nft-save",
  "ip6tables-nft-restore",
  "iptables-legacy-save",
  "iptables-legacy-restore",
  "ip6tables-legacy-save",
  "ip6tables-legacy-restore",
  "flock",
  "setsid",
  "sha256sum",
]
  .map((program) => `path.${program}=/usr/sbin/${program}`)
  .join("\n");

function output(lines: string): string {
  return `${ALL_PROGRAMS}\nkernel=6.1.0\nlogin.shell=/bin/bash\n${lines}\n`;
}

describe("parseFacts", () => {
  it("reads an nft host", () => {
    const facts = parseFacts(
      output(
        [
          "iptables.version=iptables v1.8.9 (nf_tables)",
          "ip6tables.version=ip6tables v1.8.9 (nf_tables)",
          "ipv6.kernel=yes",
          "init=systemd",
          "module.hashlimit=yes",
          "module.conntrack=yes",
          "conntrack.sizing=writable",
        ].join("\n"),
      ),
      "h",
    );
    expect(facts.iptablesVersion).toBe("1.8.9");
    expect(facts.loginShell).toBe("/bin/bash");
    expect(facts.backend).toBe("nft");
    expect(facts.init).toBe("systemd");
    expect(facts.hashlimitModule).toBe(true);
    expect(facts.conntrackModule).toBe(true);
    expect(facts.conntrackSizingWritable).toBe(true);
    expect(facts.ip6tables).toBe(true);
    expect(facts.otherBackendHasRules).toBe(false);
    expect(facts.binaries.ipv4).toEqual({
      save: "/usr/sbin/iptables-nft-save",
      restore: "/usr/sbin/iptables-nft-restore",
    });
    expect(facts.binaries.ipv6?.save).toBe("/usr/sbin/ip6tables-nft-save");
    expect(facts.tools).toEqual({ flock: true, setsid: true, sha256sum: true, systemdRun: false });
  });

  it("reads a legacy host whose nft tables hold rules", () => {
    const facts = parseFacts(
      output(
        [
          "iptables.version=iptables v1.8.7 (legacy)",
          "ip6tables.version=ip6tables v1.8.7 (legacy)",
          "init=upstart",
          "other.iptables-nft-save=0",
          "other.ip6tables-nft-save=3",
        ].join("\n"),
      ),
      "h",
    );
    expect(facts.backend).toBe("legacy");
    expect(facts.binaries.ipv4.save).toBe("/usr/sbin/iptables-legacy-save");
    expect(facts.otherBackendHasRules).toBe(true);
    expect(facts.init).toBe("upstart");
    expect(facts.conntrackSizingWritable).toBe(false);
  });

  it("reads iptables before 1.8 as legacy, with unsuffixed programs", () => {
    const facts = parseFacts(
      [
        "path.iptables=/sbin/iptables",
        "path.iptables-save=/sbin/iptables-save",
        "path.iptables-restore=/sbin/iptables-restore",
        "iptables.version=iptables v1.6.1",
        "ip6tables.version=sh: ip6tables: not found",
        "init=other",
      ].join("\n"),
      "h",
    );
    expect(facts.backend).toBe("legacy");
    expect(facts.iptablesVersion).toBe("1.6.1");
    expect(facts.binaries.ipv4).toEqual({
      save: "/sbin/iptables-save",
      restore: "/sbin/iptables-restore",
    });
    expect(facts.ip6tables).toBe(false);
    expect(facts.binaries.ipv6).toBeUndefined();
    expect(facts.init).toBe("other");
  });

  it("reports ip6tables unavailable without kernel IPv6", () => {
    const facts = parseFacts(
      output(
        [
          "iptables.version=iptables v1.8.9 (nf_tables)",
          "ip6tables.version=ip6tables v1.8.9 (nf_tables)",
        ].join("\n"),
      ),
      "h",
    );
    expect(facts.ip6tables).toBe(false);
    let error: unknown;
    try {
      binariesOf(facts, "ipv6", "h");
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "HOST_UNSUPPORTED")).toBe(true);
  });

  it("fails without iptables", () => {
    let error: unknown;
    try {
      parseFacts("iptables.version=sh: 1: iptables: not found\ninit=other\n", "web-3");
    } catch (caught) {
      error = caught;
    }
    expect(hasErrorCode(error, "HOST_UNSUPPORTED")).toBe(true);
    expect((error as Error).message).toMatch(
      /iptables is not installed on web-3.*install the iptables package/,
    );
  });
});

describe("isPosixShell", () => {
  it("accepts sh-like shells only", () => {
    expect(isPosixShell("/bin/bash")).toBe(true);
    expect(isPosixShell("/bin/sh")).toBe(true);
    expect(isPosixShell("/usr/bin/dash")).toBe(true);
    expect(isPosixShell("/usr/bin/fish")).toBe(false);
    expect(isPosixShell("/bin/tcsh")).toBe(false);
    expect(isPosixShell("/usr/bin/zsh")).toBe(false);
    expect(isPosixShell("")).toBe(false);
  });
});
