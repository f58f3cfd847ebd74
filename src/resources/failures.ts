/**
 * Check failures as Pulumi shows them: one per invalid input, naming the field, the value and
 * the fix, and never quoting a secret.
 */
import type { z } from "zod";
import { isIptablesError, quoteForMessage } from "../errors";

/** One failure of check(), as `pulumi.dynamic.CheckFailure`. */
export interface CheckFailure {
  readonly property: string;
  readonly reason: string;
}

/**
 * Fields whose values are never quoted in a message: credentials, and comments, which users
 * may mark secret (check() receives plain values, so it cannot tell).
 */
const SECRET_FIELDS = /(^|\.)(password|privateKey|privateKeyPassword|comment)$/;

/** Renders a value for a message: strings quoted and escaped, secrets hidden. */
export function showValue(property: string, value: unknown): string {
  if (SECRET_FIELDS.test(property)) return "(value not shown)";
  if (typeof value === "string") return quoteForMessage(value, 80);
  if (value === undefined) return "(missing)";
  const json = JSON.stringify(value);
  return json === undefined ? String(value) : quoteForMessage(json, 80).slice(1, -1);
}

/** Builds the failure for `property`: `<property> <value> is invalid: <fix>`. */
export function invalid(property: string, value: unknown, fix: string): CheckFailure {
  const shown = value === undefined ? "is missing" : `${showValue(property, value)} is invalid`;
  return { property, reason: `${property} ${shown}: ${fix}` };
}

/** Converts zod issues into failures, reading each value from `input` by the issue's path. */
export function zodFailures(
  error: z.ZodError,
  input: Record<string, unknown>,
  prefix = "",
): CheckFailure[] {
  const failures: CheckFailure[] = [];
  const seen = new Set<string>();
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const property = `${prefix}${key}`;
        failures.push({
          property,
          reason: `${property} is not an input of this resource: remove it or check its spelling`,
        });
      }
      continue;
    }
    // A field reports its first problem only, so every invalid input gives one failure.
    const property = prefix + issue.path.map(String).join(".");
    if (seen.has(property)) continue;
    seen.add(property);
    failures.push(invalid(property, valueAt(input, issue.path), issue.message));
  }
  return failures;
}

/** Converts an error of the netfilter layer into a failure on the field it concerns. */
export function errorFailure(error: unknown, property: string): CheckFailure {
  if (isIptablesError(error)) return { property, reason: `${property}: ${error.message}` };
  const message = error instanceof Error ? error.message : String(error);
  return { property, reason: `${property}: ${message}` };
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}
