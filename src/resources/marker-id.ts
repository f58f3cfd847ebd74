/**
 * Marker ids of the rules a stack manages.
 *
 * A rule's id is `<project>/<stack>/<resource name>`, so two stacks (or two projects) that
 * manage rules on one host never claim each other's rules. Characters a marker id cannot carry
 * are replaced by "_", and an id that had to be changed or shortened ends in "-" and 8
 * hexadecimal digits of a SHA-256 of the original text, so distinct names stay distinct.
 */
import { createHash } from "node:crypto";

/** Characters marker.ts accepts in an id. */
const ALLOWED = /[^A-Za-z0-9_./-]/g;
/** Long enough for real names; leaves room in the 255-byte comment for the prefix and order. */
const MAX_LENGTH = 120;

/** Derives the marker id of a rule resource from its project, stack and resource name. */
export function deriveMarkerId(project: string, stack: string, name: string): string {
  const original = `${project}/${stack}/${name}`;
  const cleaned = original.replace(ALLOWED, "_");
  if (cleaned === original && cleaned.length <= MAX_LENGTH) return cleaned;

  const digest = createHash("sha256").update(original).digest("hex").slice(0, 8);
  return `${cleaned.slice(0, MAX_LENGTH - 9)}-${digest}`;
}
