import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import {
  fingerprint,
  formatPublicKey,
  hostKeyAlgorithmsFor,
  parsePublicKey,
  sameKey,
} from "../../src/host/host-key";

let dir: string;
const keys: Record<string, { publicKey: string; fingerprint: string }> = {};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "host-key-test-"));
  for (const type of ["ed25519", "ecdsa", "rsa"]) {
    const path = join(dir, type);
    execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", "test comment", "-f", path]);
    const listing = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", `${path}.pub`], {
      encoding: "utf8",
    });
    keys[type] = {
      publicKey: readFileSync(`${path}.pub`, "utf8"),
      fingerprint: listing.split(" ")[1],
    };
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("parsePublicKey", () => {
  it("reads authorized_keys lines of every type", () => {
    for (const [type, key] of Object.entries(keys)) {
      const parsed = parsePublicKey(key.publicKey);
      expect(parsed.type.includes(type === "ecdsa" ? "ecdsa" : type)).toBe(true);
      expect(formatPublicKey(parsed)).toBe(key.publicKey.split(" ").slice(0, 2).join(" "));
    }
  });

  it("reads a known_hosts line", () => {
    const key = keys.ed25519.publicKey.split(" ").slice(0, 2).join(" ");
    expect(formatPublicKey(parsePublicKey(`198.18.0.2 ${key}`))).toBe(key);
  });

  it("rejects text that is no key", () => {
    for (const text of ["", "ssh-ed25519", "ssh-ed25519 bm90IGEga2V5", "hello world"]) {
      let error: unknown;
      try {
        parsePublicKey(text);
      } catch (caught) {
        error = caught;
      }
      expect(hasErrorCode(error, "INVALID_INPUT")).toBe(true);
    }
  });

  it("rejects a blob of another type than named", () => {
    const blob = keys.rsa.publicKey.split(" ")[1];
    expect(() => parsePublicKey(`ssh-ed25519 ${blob}`)).toThrow(/not a public key/);
  });
});

describe("fingerprint", () => {
  it("matches ssh-keygen -l", () => {
    for (const key of Object.values(keys)) {
      expect(fingerprint(parsePublicKey(key.publicKey))).toBe(key.fingerprint);
    }
  });
});

describe("sameKey", () => {
  it("compares blobs and ignores comments", () => {
    const a = parsePublicKey(keys.ed25519.publicKey);
    const b = parsePublicKey(keys.ed25519.publicKey.replace("test comment", "other"));
    expect(sameKey(a, b)).toBe(true);
    expect(sameKey(a, parsePublicKey(keys.rsa.publicKey))).toBe(false);
  });
});

describe("hostKeyAlgorithmsFor", () => {
  it("offers the RSA signature algorithms for an RSA key", () => {
    expect(hostKeyAlgorithmsFor("ssh-rsa")).toEqual(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
    expect(hostKeyAlgorithmsFor("ssh-ed25519")).toEqual(["ssh-ed25519"]);
  });
});
