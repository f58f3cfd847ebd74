import { describe, expect, it } from "vitest";
import { hasErrorCode } from "../../src/errors";
import {
  connectionPoolKey,
  connectionSecrets,
  describeTarget,
  resolveConnection,
} from "../../src/host/connection";

const KEY =
  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";

function invalidField(connection: Parameters<typeof resolveConnection>[0]): unknown {
  try {
    resolveConnection(connection);
  } catch (error) {
    if (hasErrorCode(error, "INVALID_INPUT")) return error.details.field;
    throw error;
  }
  return undefined;
}

describe("resolveConnection", () => {
  it("fills in the defaults", () => {
    const conn = resolveConnection({ host: "198.18.0.2", privateKey: KEY });
    expect(conn.port).toBe(22);
    expect(conn.user).toBe("root");
    expect(conn.dialErrorLimit).toBe(10);
    expect(conn.perDialTimeoutMs).toBe(15_000);
    expect(conn.sudo).toBe(false);
  });

  it("converts perDialTimeout from seconds", () => {
    expect(
      resolveConnection({ host: "h", password: "p", perDialTimeout: 2.5 }).perDialTimeoutMs,
    ).toBe(2500);
  });

  it("rejects invalid fields by name", () => {
    expect(invalidField({ host: "", password: "p" })).toBe("connection.host");
    expect(invalidField({ host: "a b", password: "p" })).toBe("connection.host");
    expect(invalidField({ host: "h", port: 0, password: "p" })).toBe("connection.port");
    expect(invalidField({ host: "h", port: 1.5, password: "p" })).toBe("connection.port");
    expect(invalidField({ host: "h", user: "", password: "p" })).toBe("connection.user");
    expect(invalidField({ host: "h", dialErrorLimit: 0, password: "p" })).toBe(
      "connection.dialErrorLimit",
    );
    expect(invalidField({ host: "h", perDialTimeout: 0, password: "p" })).toBe(
      "connection.perDialTimeout",
    );
    expect(invalidField({ host: "h", password: "p", proxy: { host: "", password: "p" } })).toBe(
      "connection.proxy.host",
    );
  });

  it("rejects a connection without credentials", () => {
    const saved = process.env.SSH_AUTH_SOCK;
    delete process.env.SSH_AUTH_SOCK;
    try {
      expect(invalidField({ host: "h" })).toBe("connection");
    } finally {
      if (saved !== undefined) process.env.SSH_AUTH_SOCK = saved;
    }
  });

  it("falls back to SSH_AUTH_SOCK only without other credentials", () => {
    const saved = process.env.SSH_AUTH_SOCK;
    process.env.SSH_AUTH_SOCK = "/run/agent.sock";
    try {
      expect(resolveConnection({ host: "h" }).agentSocketPath).toBe("/run/agent.sock");
      expect(resolveConnection({ host: "h", password: "p" }).agentSocketPath).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
      else process.env.SSH_AUTH_SOCK = saved;
    }
  });
});

describe("describeTarget", () => {
  it("names host, port, user and jump host", () => {
    const conn = resolveConnection({
      host: "fd6c:6162::2",
      user: "deploy",
      password: "p",
      proxy: { host: "198.18.0.3", port: 2222, password: "p" },
    });
    expect(describeTarget(conn)).toBe(
      '[fd6c:6162::2]:22 as "deploy" via jump host 198.18.0.3:2222',
    );
  });
});

describe("connectionPoolKey", () => {
  it("differs by credentials but never contains them", () => {
    const a = connectionPoolKey(resolveConnection({ host: "h", password: "first-secret" }));
    const b = connectionPoolKey(resolveConnection({ host: "h", password: "second-secret" }));
    expect(a).not.toBe(b);
    expect(a).not.toContain("first-secret");
    expect(a.startsWith("root@h:22#")).toBe(true);
  });

  it("is equal for equal connections", () => {
    const a = connectionPoolKey(resolveConnection({ host: "h", privateKey: KEY }));
    const b = connectionPoolKey(resolveConnection({ host: "h", privateKey: KEY, sudo: true }));
    expect(a).toBe(b);
  });
});

describe("connectionSecrets", () => {
  it("lists passwords, the key and its long lines, also of the jump host", () => {
    const conn = resolveConnection({
      host: "h",
      privateKey: KEY,
      privateKeyPassword: "passphrase-1",
      proxy: { host: "j", password: "jump-password" },
    });
    const secrets = connectionSecrets(conn);
    expect(secrets).toContain("passphrase-1");
    expect(secrets).toContain("jump-password");
    expect(secrets).toContain(KEY);
    expect(secrets).toContain("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ");
  });
});
