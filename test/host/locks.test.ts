import { describe, expect, it } from "vitest";
import { KeyedMutex, Semaphore } from "../../src/host/locks";

const tick = (ms = 1) => new Promise((resolve) => setTimeout(resolve, ms));

describe("Semaphore", () => {
  it("never exceeds its limit and serves everyone", async () => {
    const semaphore = new Semaphore(3);
    let active = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        const release = await semaphore.acquire();
        active++;
        peak = Math.max(peak, active);
        await tick();
        active--;
        release();
      }),
    );
    expect(peak).toBe(3);
    expect(semaphore.inUse).toBe(0);
  });

  it("applies a shrunk limit to later waiters", async () => {
    const semaphore = new Semaphore(4);
    const held = await Promise.all([semaphore.acquire(), semaphore.acquire(), semaphore.acquire()]);
    semaphore.shrinkTo(1);
    let granted = false;
    const waiter = semaphore.acquire().then((release) => {
      granted = true;
      return release;
    });
    held[0]();
    held[1]();
    await tick();
    expect(granted).toBe(false);
    held[2]();
    (await waiter)();
    expect(granted).toBe(true);
    expect(semaphore.inUse).toBe(0);
  });

  it("ignores a second release", async () => {
    const semaphore = new Semaphore(1);
    const release = await semaphore.acquire();
    release();
    release();
    expect(semaphore.inUse).toBe(0);
  });
});

describe("KeyedMutex", () => {
  it("runs tasks of one key one at a time in order", async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    await Promise.all(
      [1, 2, 3].map((n) =>
        mutex.run("a", async () => {
          events.push(`start ${n}`);
          await tick(3);
          events.push(`end ${n}`);
        }),
      ),
    );
    expect(events).toEqual(["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]);
  });

  it("runs different keys at once", async () => {
    const mutex = new KeyedMutex();
    let active = 0;
    let peak = 0;
    await Promise.all(
      ["a", "b"].map((key) =>
        mutex.run(key, async () => {
          active++;
          peak = Math.max(peak, active);
          await tick(3);
          active--;
        }),
      ),
    );
    expect(peak).toBe(2);
  });

  it("continues after a failed task", async () => {
    const mutex = new KeyedMutex();
    await expect(mutex.run("a", () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(mutex.run("a", async () => "next")).resolves.toBe("next");
  });
});
