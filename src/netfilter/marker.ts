/**
 * The comment marker that identifies a rule this library manages.
 *
 * A managed rule carries `-m comment --comment "pulumi-iptables:<id>:<order>"` as its last match.
 * `id` names the rule on its host (unique per family and table); `order` places it among the
 * managed rules of its chain. A rule without a marker is foreign and is never touched.
 */
import { IptablesError, quoteForMessage } from "../errors";

export const MARKER_PREFIX = "pulumi-iptables:";

/** Characters allowed in a marker id: they need no quoting in iptables-save output. */
const ID_PATTERN = /^[A-Za-z0-9_./-]{1,200}$/;

/** The smallest and largest `order` accepted. Orders are integers so that they print exactly. */
export const MIN_ORDER = -1_000_000_000;
export const MAX_ORDER = 1_000_000_000;

export interface Marker {
  /** The managed rule's id, unique within a host, family and table. */
  readonly id: string;
  /** Position among the managed rules of the chain, ascending. */
  readonly order: number;
}

/** Checks a marker id and order, raising INVALID_INPUT with the fix when either is invalid. */
export function validateMarker(marker: Marker): void {
  if (!ID_PATTERN.test(marker.id)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `marker id ${quoteForMessage(marker.id)} is invalid: use 1 to 200 characters of ` +
        `letters, digits, "_", ".", "/" and "-"`,
      { details: { field: "marker", value: marker.id } },
    );
  }
  if (!Number.isInteger(marker.order) || marker.order < MIN_ORDER || marker.order > MAX_ORDER) {
    throw new IptablesError(
      "INVALID_INPUT",
      `order ${String(marker.order)} is invalid: use an integer from ${MIN_ORDER} to ${MAX_ORDER}`,
      { details: { field: "order", value: marker.order } },
    );
  }
}

/** Renders the comment text of a marker, such as `pulumi-iptables:web/rate-limit:20`. */
export function formatMarker(marker: Marker): string {
  validateMarker(marker);
  return `${MARKER_PREFIX}${marker.id}:${marker.order}`;
}

/** Parses a comment text into a marker, or returns undefined when it is not one of ours. */
export function parseMarker(comment: string): Marker | undefined {
  if (!comment.startsWith(MARKER_PREFIX)) return undefined;
  const body = comment.slice(MARKER_PREFIX.length);
  const separator = body.lastIndexOf(":");
  if (separator <= 0) return undefined;
  const id = body.slice(0, separator);
  const orderText = body.slice(separator + 1);
  if (!ID_PATTERN.test(id) || !/^-?\d{1,10}$/.test(orderText)) return undefined;
  const order = Number(orderText);
  if (order < MIN_ORDER || order > MAX_ORDER) return undefined;
  return { id, order };
}

/** Orders markers as the planner places their rules: by order, then by id. */
export function compareMarkers(a: Marker, b: Marker): number {
  if (a.order !== b.order) return a.order - b.order;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
