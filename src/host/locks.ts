/**
 * In-process concurrency limits: a mutex per key (one host table at a time) and a counting
 * semaphore (SSH channels per connection). Both serve waiters in arrival order.
 */

/** A counting semaphore whose limit can shrink while permits are out. */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private limit: number) {}

  get inUse(): number {
    return this.active;
  }

  /** Waits for a permit and returns the function that gives it back; calls after the first do nothing. */
  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    } else {
      this.active++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release();
    };
  }

  /** Lowers the limit, for a server that refuses channels below the configured number. */
  shrinkTo(limit: number): void {
    this.limit = Math.max(1, Math.min(this.limit, limit));
  }

  private release(): void {
    // A released permit passes straight to the next waiter, unless the limit shrank meanwhile.
    if (this.waiters.length > 0 && this.active <= this.limit) {
      const next = this.waiters.shift()!;
      next();
      return;
    }
    this.active--;
  }
}

/** Mutual exclusion per key; keys with no holder and no waiter take no memory. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `task` once every earlier task of the same key has settled. */
  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let done!: () => void;
    const current = new Promise<void>((resolve) => (done = resolve));
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    await previous;
    try {
      return await task();
    } finally {
      done();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
