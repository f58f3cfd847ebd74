import { describe, expect, it } from "vitest";
import { parseSave } from "../../src/netfilter/parse";
import {
  hashlimitSettings,
  rulesSharingTable,
  needsTableSwap,
  temporaryHashlimitName,
  withHashlimitName,
} from "../../src/resources/hashlimit-swap";

const line = (rate: string, name = "web", extra = "") =>
  `-A RATE-LIMIT -m hashlimit --hashlimit-upto ${rate} --hashlimit-burst 20 --hashlimit-mode srcip ` +
  `--hashlimit-name ${name}${extra} -m comment --comment "pulumi-iptables:p/s/web:10" -j ACCEPT`;

describe("hashlimitSettings", () => {
  it("keeps every hashlimit option but the name", () => {
    expect(hashlimitSettings(line("50/sec", "web", " --hashlimit-srcmask 64"))).toBe(
      "--hashlimit-upto 50/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-srcmask 64",
    );
  });

  it("is the same for rules that differ only in name", () => {
    expect(hashlimitSettings(line("50/sec", "a"))).toBe(hashlimitSettings(line("50/sec", "b")));
  });

  it("is undefined without a hashlimit match", () => {
    expect(hashlimitSettings("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT")).toBeUndefined();
  });
});

describe("needsTableSwap", () => {
  const olds = { hashlimitName: "web", rule: line("50/sec") };

  it("is true when settings change, name stays", () => {
    expect(needsTableSwap(olds, { hashlimitName: "web", rule: line("100/sec") })).toBe(true);
  });

  it("is false when the name changes too", () => {
    expect(needsTableSwap(olds, { hashlimitName: "web2", rule: line("100/sec", "web2") })).toBe(
      false,
    );
  });

  it("is false when only the target changes", () => {
    const news = { hashlimitName: "web", rule: line("50/sec").replace("-j ACCEPT", "-j RETURN") };
    expect(needsTableSwap(olds, news)).toBe(false);
  });

  it("is false without a hashlimit name", () => {
    expect(needsTableSwap({ rule: "-A INPUT -j ACCEPT" }, { rule: "-A INPUT -j DROP" })).toBe(
      false,
    );
  });
});

describe("temporaryHashlimitName", () => {
  it("is a valid name of 15 characters, stable per marker id", () => {
    const name = temporaryHashlimitName("p/s/web-ipv4-accept");
    expect(name).toMatch(/^[a-z0-9]{15}$/);
    expect(temporaryHashlimitName("p/s/web-ipv4-accept")).toBe(name);
    expect(temporaryHashlimitName("p/s/api-ipv4-accept")).not.toBe(name);
  });
});

describe("withHashlimitName", () => {
  it("replaces only the name's value", () => {
    expect(withHashlimitName(line("50/sec", "web"), "web", "tmp")).toBe(line("50/sec", "tmp"));
  });

  it("does not touch a name that only starts the same", () => {
    expect(() => withHashlimitName(line("50/sec", "webapp"), "web", "tmp")).toThrow(
      /no "--hashlimit-name web"/,
    );
  });
});

describe("rulesSharingTable", () => {
  const other = `-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-mode srcip --hashlimit-name web -j ACCEPT`;
  const prefixed = `-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-mode srcip --hashlimit-name webapp -j ACCEPT`;
  const dump = (...rules: string[]) =>
    parseSave(`*filter\n:INPUT ACCEPT [0:0]\n:RATE-LIMIT - [0:0]\n${rules.join("\n")}\nCOMMIT\n`)
      .tables[0];

  it("lists other rules that use the name", () => {
    const table = dump(line("50/sec"), other);
    expect(rulesSharingTable(table, "web", "p/s/web")).toEqual(["a foreign rule in INPUT"]);
  });

  it("names a managed rule by its marker id, not its text", () => {
    const managed = line("50/sec").replace("p/s/web:10", "p/s/api:10");
    const table = dump(line("50/sec"), managed);
    expect(rulesSharingTable(table, "web", "p/s/web")).toEqual(['rule "p/s/api" in RATE-LIMIT']);
  });

  it("leaves out the rule itself and names that only start the same", () => {
    const table = dump(line("50/sec"), prefixed);
    expect(rulesSharingTable(table, "web", "p/s/web")).toEqual([]);
  });
});
