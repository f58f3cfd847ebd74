/**
 * The error family of pulumi-iptables.
 *
 * Every error the library raises is an `IptablesError` with a stable `code` that callers and
 * tests can branch on, the underlying error as `cause`, and a message that reads on its own,
 * because Pulumi shows only the message. Layers add the codes they raise to `ErrorCode`.
 */

const BRAND = Symbol.for("pulumi-iptables.error");

/** Stable error codes. The prefix names the layer that raises the error. */
export type ErrorCode =
  // netfilter: parsing iptables-save output
  | "PARSE_SYNTAX"
  | "PARSE_UNTERMINATED_QUOTE"
  | "PARSE_OUTSIDE_TABLE"
  | "PARSE_UNKNOWN_LINE"
  | "PARSE_MISSING_COMMIT"
  | "PARSE_DUPLICATE"
  | "PARSE_INVALID_VALUE"
  // netfilter: canonicalising and planning rules
  | "RULE_SYNTAX"
  | "RULE_UNKNOWN_OPTION"
  | "RULE_UNKNOWN_MATCH"
  | "RULE_UNKNOWN_TARGET"
  | "RULE_MISSING_MATCH"
  | "RULE_INVALID_VALUE"
  | "RULE_OUT_OF_RANGE"
  | "RULE_UNSUPPORTED"
  | "RULE_MULTIPLE"
  | "PLAN_CONFLICT"
  // host layer
  | "SSH_DNS"
  | "SSH_CONNECT"
  | "SSH_TIMEOUT"
  | "SSH_AUTH"
  | "SSH_HOST_KEY"
  | "SSH_CLOSED"
  | "COMMAND_FAILED"
  | "COMMAND_TIMEOUT"
  | "HOST_UNSUPPORTED"
  | "HOST_LOCK_TIMEOUT"
  | "APPLY_REJECTED"
  | "APPLY_ROLLED_BACK"
  | "APPLY_CONFLICT"
  // resources and persistence
  | "INVALID_INPUT"
  | "CHAIN_IN_USE"
  | "SYSCTL_READ_ONLY"
  | "INIT_UNSUPPORTED"
  // lab
  | "LAB_SETUP"
  | "LAB_UNSAFE";

export interface IptablesErrorOptions {
  /** The error that caused this one. */
  cause?: unknown;
  /** Structured facts for callers and tests (field name, line number, host, ...). No secrets. */
  details?: Record<string, unknown>;
}

/** Base class of every error this library raises. */
export class IptablesError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: IptablesErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "IptablesError";
    this.code = code;
    this.details = options.details ?? {};
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/**
 * Tells whether `value` is an error of this library. Works across copies of the package
 * (a brand, not `instanceof`), because the Pulumi provider process may load a second copy.
 */
export function isIptablesError(value: unknown): value is IptablesError {
  return typeof value === "object" && value !== null && BRAND in value;
}

/** Tells whether `value` is an error of this library with the given code. */
export function hasErrorCode(value: unknown, code: ErrorCode): value is IptablesError {
  return isIptablesError(value) && value.code === code;
}

/**
 * Makes untrusted text safe to embed in a one-line message: control characters are escaped
 * and the text is cut to `maxLength` characters.
 */
export function quoteForMessage(text: string, maxLength = 200): string {
  // eslint-disable-next-line no-control-regex
  const escaped = text.replace(/[\u0000-\u001f\u007f]/g, (ch) => {
    if (ch === "\n") return "\\n";
    if (ch === "\t") return "\\t";
    if (ch === "\r") return "\\r";
    return `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
  const cut = escaped.length > maxLength ? `${escaped.slice(0, maxLength)}...` : escaped;
  return JSON.stringify(cut);
}

/** Returns the last `maxLines` lines of remote output, for error messages. */
export function tailLines(text: string, maxLines = 5): string {
  const lines = text.replace(/\s+$/, "").split("\n");
  return lines.slice(-maxLines).join("\n");
}
