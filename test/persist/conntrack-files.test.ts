import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import { renderModprobeOptions, renderModulesLoad } from "../../src/persist/modules";
import { renderSysctlConf, sysctlPath } from "../../src/persist/sysctl";
import { golden } from "./golden";

function errorOf(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error("the call did not throw");
}

describe("renderSysctlConf", () => {
  it("matches the golden file", () => {
    const text = renderSysctlConf("ConntrackSysctl", {
      "net.netfilter.nf_conntrack_tcp_timeout_established": 86400,
      "net.netfilter.nf_conntrack_max": 262144,
      "net.netfilter.nf_conntrack_buckets": 65536n,
    });
    expect(text).toBe(golden("90-pulumi-iptables-conntrack.conf", text));
  });

  it("sorts keys so that input order does not matter", () => {
    const a = renderSysctlConf("x", { "net.b.c": 1, "net.a.c": 2 });
    const b = renderSysctlConf("x", { "net.a.c": 2, "net.b.c": 1 });
    expect(a).toBe(b);
    expect(a.split("\n")[1]).toBe("net.a.c = 2");
  });

  it("accepts text values such as integer lists", () => {
    expect(renderSysctlConf("x", { "net.ipv4.ip_local_port_range": "32768 60999" })).toContain(
      "net.ipv4.ip_local_port_range = 32768 60999\n",
    );
  });

  it("rejects invalid keys", () => {
    for (const key of [
      "nf_conntrack_max",
      "net.netfilter.nf conntrack",
      "Net.X",
      "net..x",
      "net.x\n",
    ]) {
      expect(
        hasErrorCode(
          errorOf(() => renderSysctlConf("x", { [key]: 1 })),
          "INVALID_INPUT",
        ),
        key,
      ).toBe(true);
    }
  });

  it("rejects invalid values", () => {
    for (const value of [-1, 1.5, Number.NaN, "a\nb", "# comment", " padded", "a;b", -1n]) {
      const error = errorOf(() => renderSysctlConf("x", { "net.a.b": value }));
      expect(hasErrorCode(error, "INVALID_INPUT"), String(value)).toBe(true);
    }
  });

  it("maps a key to its /proc/sys path", () => {
    expect(sysctlPath("net.netfilter.nf_conntrack_max")).toBe(
      "/proc/sys/net/netfilter/nf_conntrack_max",
    );
  });
});

describe("renderModulesLoad", () => {
  it("matches the golden file", () => {
    const text = renderModulesLoad("ConntrackSysctl", ["nf_conntrack"]);
    expect(text).toBe(golden("modules-load.conf", text));
  });

  it("sorts and removes duplicates", () => {
    expect(
      renderModulesLoad("x", ["xt_hashlimit", "nf_conntrack", "xt_hashlimit"]).split("\n").slice(1),
    ).toEqual(["nf_conntrack", "xt_hashlimit", ""]);
  });

  it("rejects invalid module names", () => {
    for (const name of ["", "Nf", "a b", "a\nb", "../x"]) {
      expect(
        hasErrorCode(
          errorOf(() => renderModulesLoad("x", [name])),
          "INVALID_INPUT",
        ),
        name,
      ).toBe(true);
    }
  });
});

describe("renderModprobeOptions", () => {
  it("matches the golden file", () => {
    const text = renderModprobeOptions("ConntrackSysctl", "nf_conntrack", { hashsize: 65536 });
    expect(text).toBe(golden("modprobe.conf", text));
  });

  it("puts all parameters on one options line, sorted", () => {
    const text = renderModprobeOptions("x", "nf_conntrack", {
      hashsize: 1024,
      expect_hashsize: 256,
    });
    expect(text.split("\n")[1]).toBe("options nf_conntrack expect_hashsize=256 hashsize=1024");
  });

  it("rejects empty or invalid parameters", () => {
    const cases: Record<string, number | string>[] = [
      {},
      { "hash size": 1 },
      { hashsize: "1 2" },
      { hashsize: 1.5 },
      { hashsize: "" },
    ];
    for (const parameters of cases) {
      const error = errorOf(() => renderModprobeOptions("x", "nf_conntrack", parameters));
      expect(hasErrorCode(error, "INVALID_INPUT"), JSON.stringify(parameters)).toBe(true);
    }
  });
});
