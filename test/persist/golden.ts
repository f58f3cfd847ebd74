/**
 * Golden files of the persistence renderers. A test compares a rendering with the file byte for
 * byte; `UPDATE_GOLDEN=1 npx vitest run test/persist` rewrites the files after a reviewed change.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const GOLDEN_DIR = join(__dirname, "golden");

/** Returns the golden file's content, first writing `actual` there when UPDATE_GOLDEN=1. */
export function golden(name: string, actual: string): string {
  const path = join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === "1") writeFileSync(path, actual);
  if (!existsSync(path)) {
    throw new Error(`golden file ${path} is missing: run with UPDATE_GOLDEN=1 and review it`);
  }
  return readFileSync(path, "utf8");
}
