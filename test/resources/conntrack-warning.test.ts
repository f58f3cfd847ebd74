import { afterEach, describe, expect, it, vi } from "vitest";
import { warnWhenFull } from "../../src/resources/providers/conntrack-sysctl";

const host = { address: "198.18.0.10:22" };
const values = (count: number, max: number) => ({
  values: { "net.netfilter.nf_conntrack_count": count, "net.netfilter.nf_conntrack_max": max },
});

describe("warnWhenFull", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("warns above 75% of max", () => {
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);

    warnWhenFull(host, values(76, 100));

    expect(log).toHaveBeenCalledOnce();
    expect(log.mock.calls[0][0]).toContain("the conntrack table is 76% full (76 of 100 entries)");
  });

  it("stays quiet at 75% of max", () => {
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);

    warnWhenFull(host, values(75, 100));

    expect(log).not.toHaveBeenCalled();
  });
});
