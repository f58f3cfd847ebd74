/**
 * Property values as the Pulumi engine handles them: secrets, unknowns, and the rules by which
 * the engine strips and re-applies secretness around a provider that does not accept secrets.
 * The constants are the wire signatures of `@pulumi/pulumi` (runtime/rpc.js).
 */
import { randomBytes } from "node:crypto";

export const SIG_KEY = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
/** The sentinel an unknown value travels as (preview only). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export interface SecretValue {
  readonly [SIG_KEY]: typeof SECRET_SIG;
  readonly value: unknown;
}

export function isSecret(value: unknown): value is SecretValue {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<string, unknown>)[SIG_KEY] === SECRET_SIG
  );
}

export function makeSecret(value: unknown): unknown {
  return isSecret(value) ? value : { [SIG_KEY]: SECRET_SIG, value };
}

/** Replaces every secret with its plain value, as the engine does for such a provider. */
export function stripSecrets(value: unknown): unknown {
  if (isSecret(value)) return stripSecrets(value.value);
  if (Array.isArray(value)) return value.map(stripSecrets);
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, stripSecrets(v)]));
  }
  return value;
}

export function stripMap(map: Record<string, unknown>): Record<string, unknown> {
  return stripSecrets(map) as Record<string, unknown>;
}

/**
 * Marks values of `outputs` secret where the value under the same path of `inputs` is secret,
 * recursing through objects and arrays, as the engine does with a provider's results.
 */
export function annotateSecrets(outputs: unknown, inputs: unknown): unknown {
  if (isSecret(inputs)) return makeSecret(stripSecrets(outputs));
  if (Array.isArray(outputs) && Array.isArray(inputs)) {
    return outputs.map((value, i) =>
      i < inputs.length ? annotateSecrets(value, inputs[i]) : value,
    );
  }
  if (isPlainObject(outputs) && isPlainObject(inputs)) {
    return Object.fromEntries(
      Object.entries(outputs).map(([k, v]) => [k, k in inputs ? annotateSecrets(v, inputs[k]) : v]),
    );
  }
  return outputs;
}

/** Marks the given top-level keys secret (the resource's `additionalSecretOutputs`). */
export function markKeysSecret(
  map: Record<string, unknown>,
  keys: readonly string[],
): Record<string, unknown> {
  const out = { ...map };
  for (const key of keys) if (key in out) out[key] = makeSecret(out[key]);
  return out;
}

export function containsUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (isSecret(value)) return containsUnknown(value.value);
  if (Array.isArray(value)) return value.some(containsUnknown);
  if (isPlainObject(value)) return Object.values(value).some(containsUnknown);
  return false;
}

/** Deep equality of two property values (plain JSON data). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((value, i) => deepEqual(value, b[i]));
  }
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a);
    if (keys.length !== Object.keys(b).length) return false;
    return keys.every((key) => key in b && deepEqual(a[key], b[key]));
  }
  return false;
}

/** Top-level keys whose values differ, ignoring `__provider`. */
export function changedKeys(
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): string[] {
  const keys = new Set([...Object.keys(olds), ...Object.keys(news)]);
  keys.delete("__provider");
  return [...keys].filter((key) => !deepEqual(olds[key], news[key])).sort();
}

/**
 * Renders a value as a state file stores it: every secret becomes an opaque ciphertext, as the
 * local backend's passphrase secrets manager does. The ciphertext here is random bytes, so
 * nothing in the result can be turned back into the plain value.
 */
export function encryptSecrets(value: unknown): unknown {
  if (isSecret(value)) {
    return { [SIG_KEY]: SECRET_SIG, ciphertext: `v1:${randomBytes(24).toString("base64")}` };
  }
  if (Array.isArray(value)) return value.map(encryptSecrets);
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encryptSecrets(v)]));
  }
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
