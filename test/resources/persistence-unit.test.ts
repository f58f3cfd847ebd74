import { describe, expect, it } from "vitest";
import { defaultJobName } from "../../src/resources/persistence-unit";

describe("defaultJobName", () => {
  it("keeps a valid name", () => {
    expect(defaultJobName("web-0")).toBe("web-0");
  });

  it("replaces other characters and adds a hash", () => {
    const name = defaultJobName("Acme/Prod/web_0");
    expect(name).toMatch(/^acme-prod-web-0-[0-9a-f]{8}$/);
  });

  it("keeps distinct names distinct", () => {
    expect(defaultJobName("a/b")).not.toBe(defaultJobName("a-b"));
    expect(defaultJobName("x".repeat(50))).not.toBe(defaultJobName(`${"x".repeat(49)}y`));
  });

  it("fits the 40-character limit", () => {
    for (const name of [
      "x".repeat(41),
      "--weird--",
      "ÄÖÜ",
      "-",
      "project-stack-" + "r".repeat(60),
    ]) {
      expect(defaultJobName(name), name).toMatch(/^[a-z0-9][a-z0-9-]{0,39}$/);
    }
  });
});
