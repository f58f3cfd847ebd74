import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Lab tests create network namespaces and sshd processes; forks keep each test file in its
    // own process so a crash in one file cannot leave another file's hosts half torn down.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["default"],
  },
});
