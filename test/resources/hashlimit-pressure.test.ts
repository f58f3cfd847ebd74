import { describe, expect, it } from "vitest";
import {
  defaultHtableSize,
  effectiveHtableMax,
  entriesWarning,
} from "../../src/resources/hashlimit-pressure";

const GIB = 1024 ** 3;

describe("defaultHtableSize", () => {
  it("gives 8192 buckets above 1 GiB", () => {
    expect(defaultHtableSize(2 * GIB)).toBe(8192);
    expect(defaultHtableSize(GIB + 4096)).toBe(8192);
  });

  it("gives one bucket per 128 KiB up to 1 GiB", () => {
    expect(defaultHtableSize(GIB)).toBe(8192);
    expect(defaultHtableSize(512 * 1024 ** 2)).toBe(4096);
  });

  it("gives at least 16 buckets", () => {
    expect(defaultHtableSize(1024 ** 2)).toBe(16);
  });
});

describe("effectiveHtableMax", () => {
  it("defaults to 8 times the size", () => {
    expect(effectiveHtableMax(8192, undefined)).toBe(65_536);
    expect(effectiveHtableMax(8192, 0)).toBe(65_536);
  });

  it("raises a max below the size to the size", () => {
    expect(effectiveHtableMax(4096, 1024)).toBe(4096);
  });

  it("keeps a max above the size", () => {
    expect(effectiveHtableMax(16, 100)).toBe(100);
  });
});

describe("entriesWarning", () => {
  const pressure = { address: "198.51.100.7:22", family: "ipv4", hashlimitName: "web", max: 16 };

  it("stays quiet up to 75% of the maximum", () => {
    expect(entriesWarning({ ...pressure, entries: 12 })).toBeUndefined();
  });

  it("names the host, table, count and fix above 75%", () => {
    const warning = entriesWarning({ ...pressure, entries: 13 });
    expect(warning).toContain("198.51.100.7:22");
    expect(warning).toContain("hashlimit table web (ipv4) has 13 entries, 81% of its maximum 16");
    expect(warning).toContain("raise htableMax");
  });
});
