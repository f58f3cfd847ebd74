import { describe, expect, it } from "vitest";
import { parseMarker, formatMarker } from "../../src/netfilter/marker";
import { deriveMarkerId } from "../../src/resources/marker-id";

describe("deriveMarkerId", () => {
  it("joins project, stack and name", () => {
    expect(deriveMarkerId("web", "prod", "web-1-ipv4-accept")).toBe("web/prod/web-1-ipv4-accept");
  });

  it("differs between stacks on one host", () => {
    expect(deriveMarkerId("web", "prod", "rl")).not.toBe(deriveMarkerId("web", "staging", "rl"));
  });

  it("replaces characters a marker cannot carry and keeps names apart", () => {
    const spaced = deriveMarkerId("web", "prod", "rate limit");
    const underscored = deriveMarkerId("web", "prod", "rate_limit");

    expect(spaced).toMatch(/^web\/prod\/rate_limit-[0-9a-f]{8}$/);
    expect(underscored).toBe("web/prod/rate_limit");
  });

  it("shortens long names to a valid marker", () => {
    const id = deriveMarkerId("p", "s", "n".repeat(300));

    expect(id.length).toBeLessThanOrEqual(120);
    expect(parseMarker(formatMarker({ id, order: 10 }))).toEqual({ id, order: 10 });
  });
});
