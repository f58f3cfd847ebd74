/**
 * The value Pulumi sends in place of an input that is not known yet (during preview), as
 * `@pulumi/pulumi` defines it in runtime/rpc.ts (`unknownValue`). Providers see it as a plain
 * string, so check() and diff() pass it through and treat it as a change.
 */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Tells whether `value`, or anything inside it, is not known yet. */
export function containsUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(containsUnknown);
  if (typeof value === "object" && value !== null) {
    return Object.values(value).some(containsUnknown);
  }
  return false;
}
