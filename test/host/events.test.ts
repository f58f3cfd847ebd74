import { afterEach, describe, expect, it } from "vitest";
import {
  eventEmitter,
  secretRedactor,
  setHostEventSink,
  type HostEvent,
} from "../../src/host/events";

afterEach(() => setHostEventSink(undefined));

describe("secretRedactor", () => {
  it("replaces every secret, longest first", () => {
    const redact = secretRedactor(["pass", "password-1", ""]);
    expect(redact("password-1 and pass")).toBe("*** and ***");
  });
});

describe("eventEmitter", () => {
  it("delivers redacted events to the listener and the sink", () => {
    const seen: HostEvent[] = [];
    const sunk: HostEvent[] = [];
    setHostEventSink((event) => sunk.push(event));
    const emit = eventEmitter((event) => seen.push(event), secretRedactor(["hunter2"]));
    emit({ kind: "warning", host: "h:22", user: "root", message: "leaked hunter2" });
    expect(seen).toEqual([{ kind: "warning", host: "h:22", user: "root", message: "leaked ***" }]);
    expect(sunk).toEqual(seen);
  });

  it("survives a throwing listener", () => {
    const emit = eventEmitter(() => {
      throw new Error("listener bug");
    }, secretRedactor([]));
    expect(() => emit({ kind: "warning", host: "h:22", user: "root", message: "m" })).not.toThrow();
  });
});
