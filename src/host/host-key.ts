/**
 * SSH host keys in authorized_keys format (`ssh-ed25519 AAAA... comment`): parsing, comparison
 * and the OpenSSH-style fingerprint that messages show.
 */
import { createHash } from "node:crypto";
import { IptablesError, quoteForMessage } from "../errors";

export interface PublicKey {
  /** The key type named inside the blob, such as "ssh-ed25519". */
  readonly type: string;
  /** The SSH wire encoding of the key (RFC 4253 section 6.6). */
  readonly blob: Buffer;
}

/**
 * Parses a key given as `TYPE BASE64 [comment]`, also accepting a known_hosts line (a host
 * pattern before the type). Raises INVALID_INPUT naming `field` when no key can be read.
 */
export function parsePublicKey(text: string, field = "connection.hostKey"): PublicKey {
  const tokens = text.trim().split(/\s+/);
  for (let i = 0; i + 1 < tokens.length; i++) {
    if (!/^(ssh-|ecdsa-|sk-)/.test(tokens[i])) continue;
    const blob = Buffer.from(tokens[i + 1], "base64");
    const type = blobKeyType(blob);
    if (type !== undefined && type === tokens[i]) return { type, blob };
  }
  throw new IptablesError(
    "INVALID_INPUT",
    `${field} ${quoteForMessage(text, 80)} is not a public key: use the authorized_keys form ` +
      `"ssh-ed25519 AAAA...", as in the host's /etc/ssh/ssh_host_ed25519_key.pub`,
    { details: { field } },
  );
}

/** Reads a key blob as received during the SSH handshake. */
export function publicKeyFromBlob(blob: Buffer): PublicKey {
  return { type: blobKeyType(blob) ?? "unknown", blob };
}

/** Renders a key in authorized_keys format, without a comment. */
export function formatPublicKey(key: PublicKey): string {
  return `${key.type} ${key.blob.toString("base64")}`;
}

/** Computes the fingerprint OpenSSH prints: `SHA256:` and unpadded base64 of the blob's digest. */
export function fingerprint(key: PublicKey): string {
  const digest = createHash("sha256").update(key.blob).digest("base64");
  return `SHA256:${digest.replace(/=+$/, "")}`;
}

export function sameKey(a: PublicKey, b: PublicKey): boolean {
  return a.blob.equals(b.blob);
}

/**
 * Lists the host key algorithms to offer when a key of `type` is pinned. Offering only these makes a
 * server with several host keys present the pinned one, instead of failing the comparison
 * with another key it also owns.
 */
export function hostKeyAlgorithmsFor(type: string): string[] {
  if (type === "ssh-rsa") return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
  return [type];
}

/** Reads the type string at the start of a key blob (a uint32 length and that many bytes). */
function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  const type = blob.subarray(4, 4 + length).toString("latin1");
  return /^[a-z0-9@.-]+$/.test(type) ? type : undefined;
}
