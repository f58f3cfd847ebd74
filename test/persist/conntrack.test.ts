import { describe, expect, it } from "vitest";
import { renderConntrackFiles, sizingWarning } from "../../src/persist/conntrack";
import { MODPROBE_PATH, MODULES_LOAD_PATH, SYSCTL_PATH } from "../../src/persist/paths";

describe("sizingWarning", () => {
  it("accepts ratios from 1 to 16", () => {
    for (const [max, buckets] of [
      [262144, 65536],
      [65536, 65536],
      [1048576, 65536],
      [131072, 16384],
    ]) {
      expect(sizingWarning(max, buckets), `${max}/${buckets}`).toBeUndefined();
    }
  });

  it("warns about far fewer entries than buckets", () => {
    const warning = sizingWarning(1024, 65536);
    expect(warning).toContain("less than 1 times the 65536 buckets");
    expect(warning).toContain("set buckets to about 256");
  });

  it("warns about long hash chains", () => {
    const warning = sizingWarning(4194304, 65536);
    expect(warning).toContain("more than 16 times");
    expect(warning).toContain("ratio 64.00");
    expect(warning).toContain("set buckets to about 1048576");
  });
});

describe("renderConntrackFiles", () => {
  it("loads the module and sets every value at boot", () => {
    const files = renderConntrackFiles(
      { max: 262144, buckets: 65536, settings: { "net.netfilter.nf_conntrack_udp_timeout": 60 } },
      true,
    );
    expect(files.map((file) => file.path)).toEqual([MODULES_LOAD_PATH, MODPROBE_PATH, SYSCTL_PATH]);
    expect(files[0].content.split("\n")[1]).toBe("nf_conntrack");
    expect(files[1].content.split("\n")[1]).toBe("options nf_conntrack hashsize=65536");
    expect(files[2].content.split("\n").slice(1)).toEqual([
      "net.netfilter.nf_conntrack_buckets = 65536",
      "net.netfilter.nf_conntrack_max = 262144",
      "net.netfilter.nf_conntrack_udp_timeout = 60",
      "",
    ]);
  });

  it("leaves buckets to modprobe.d where the sysctl is read-only", () => {
    const files = renderConntrackFiles({ max: 262144, buckets: 65536 }, false);
    const sysctl = files.find((file) => file.path === SYSCTL_PATH);
    expect(sysctl?.content).not.toContain("nf_conntrack_buckets");
    expect(files.find((file) => file.path === MODPROBE_PATH)?.content).toContain("hashsize=65536");
  });

  it("writes no modprobe.d file without buckets", () => {
    const files = renderConntrackFiles({ max: 262144 }, true);
    expect(files.map((file) => file.path)).toEqual([MODULES_LOAD_PATH, SYSCTL_PATH]);
  });

  it("writes nothing for nothing", () => {
    expect(renderConntrackFiles({ settings: {} }, true)).toEqual([]);
  });

  it("renders the same bytes for any key order", () => {
    const a = renderConntrackFiles(
      { settings: { "net.netfilter.b": 1, "net.netfilter.a": 2 } },
      true,
    );
    const b = renderConntrackFiles(
      { settings: { "net.netfilter.a": 2, "net.netfilter.b": 1 } },
      true,
    );
    expect(a).toEqual(b);
  });
});
