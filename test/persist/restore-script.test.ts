import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, destroyLab, type Lab, type LabHost } from "../../src/lab";
import { RESTORE_SCRIPT, restoreArgv } from "../../src/persist/restore-script";
import { renderRulesFile, type PersistedTable } from "../../src/persist/rules-file";
import { splitArgs } from "../../src/netfilter/tokenize";
import { golden } from "./golden";
import { IPV4_TABLES, IPV6_TABLES } from "./sample";

const LAB_NAME = "persist-restore";

const SCRIPT_PATH = "/etc/pulumi-iptables/test/restore.sh";

/** A lab address no host has; rules match it but no traffic is sent. */
const FOREIGN_RULE = "-A INPUT -s 198.18.0.99/32 -j ACCEPT";

function programs(host: LabHost, family: "ipv4" | "ipv6") {
  const base = family === "ipv4" ? "iptables" : "ip6tables";
  return {
    save: `/usr/sbin/${base}-${host.backend}-save`,
    restore: `/usr/sbin/${base}-${host.backend}-restore`,
    command: `/usr/sbin/${base}-${host.backend}`,
  };
}

describe("restore script", () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await createLab({ name: LAB_NAME, hosts: [{ backend: "nft" }, { backend: "legacy" }] });
  });

  afterAll(async () => {
    await destroyLab(LAB_NAME);
  });

  it("matches the golden file", () => {
    expect(RESTORE_SCRIPT).toBe(golden("restore.sh", RESTORE_SCRIPT));
  });

  it("passes sh -n", async () => {
    const result = await lab.exec(0, ["sh", "-n"], { input: RESTORE_SCRIPT });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
  });

  async function writeFile(host: LabHost, path: string, content: string): Promise<void> {
    const result = await lab.exec(
      host,
      ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
      {
        input: content,
      },
    );
    expect(result.code, result.stderr).toBe(0);
  }

  /** Reads the host's tables without comment lines, so two reads of equal rules compare equal. */
  async function save(host: LabHost, family: "ipv4" | "ipv6"): Promise<string> {
    const result = await lab.exec(host, [programs(host, family).save]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.replace(/^#.*\n/gm, "");
  }

  async function runScript(
    host: LabHost,
    family: "ipv4" | "ipv6",
    tables: readonly PersistedTable[],
    extra: string[] = [],
  ) {
    const rulesPath = `/etc/pulumi-iptables/test/rules.${family === "ipv4" ? "v4" : "v6"}`;
    await writeFile(host, rulesPath, renderRulesFile(family, tables).content);
    return lab.exec(host, [...(await scriptArgv(host, family, rulesPath)), ...extra]);
  }

  /** Installs the script on the host and returns the argv that applies `rulesPath` with it. */
  async function scriptArgv(
    host: LabHost,
    family: "ipv4" | "ipv6",
    rulesPath: string,
  ): Promise<string[]> {
    await writeFile(host, SCRIPT_PATH, RESTORE_SCRIPT);
    const { save: saveCommand, restore: restoreCommand } = programs(host, family);
    return restoreArgv({ family, rulesPath, saveCommand, restoreCommand, wait: true }, SCRIPT_PATH);
  }

  async function reset(host: LabHost, family: "ipv4" | "ipv6"): Promise<void> {
    const { command } = programs(host, family);
    for (const table of ["filter", "raw"]) {
      for (const step of [["-F"], ["-X"]]) {
        const result = await lab.exec(host, [command, "-w", "-t", table, ...step]);
        expect(result.code, result.stderr).toBe(0);
      }
    }
  }

  function managedLines(text: string): string[] {
    return text.split("\n").filter((line) => line.includes("pulumi-iptables:"));
  }

  for (const backend of ["nft", "legacy"] as const) {
    describe(`on ${backend}`, () => {
      const host = (): LabHost => lab.hosts[backend === "nft" ? 0 : 1];

      it("restores every rule into empty tables", async () => {
        await reset(host(), "ipv4");
        const result = await runScript(host(), "ipv4", IPV4_TABLES);
        expect(result.code, result.stderr).toBe(0);

        const text = await save(host(), "ipv4");
        const expected = IPV4_TABLES.flatMap((table) => table.rules.map((rule) => rule.line));
        expect(managedLines(text).sort()).toEqual([...expected].sort());
        expect(text).toContain(":RATE-LIMIT - [0:0]");
      });

      it("changes nothing when run again", async () => {
        await reset(host(), "ipv4");
        await runScript(host(), "ipv4", IPV4_TABLES);
        const first = await save(host(), "ipv4");
        const second = await runScript(host(), "ipv4", IPV4_TABLES);
        expect(second.code, second.stderr).toBe(0);
        expect(await save(host(), "ipv4")).toBe(first);
      });

      it("puts managed rules above foreign ones and keeps those", async () => {
        await reset(host(), "ipv4");
        const added = await lab.exec(host(), [
          programs(host(), "ipv4").command,
          "-w",
          ...FOREIGN_RULE.split(" "),
        ]);
        expect(added.code, added.stderr).toBe(0);
        await runScript(host(), "ipv4", IPV4_TABLES);
        await runScript(host(), "ipv4", IPV4_TABLES);

        const input = (await save(host(), "ipv4"))
          .split("\n")
          .filter((line) => line.startsWith("-A INPUT"));
        expect(input).toHaveLength(2);
        expect(input[0]).toContain("pulumi-iptables:web/hook:0");
        expect(input[1]).toBe(FOREIGN_RULE);
      });

      it("repairs a flushed built-in chain without duplicates", async () => {
        await reset(host(), "ipv4");
        await runScript(host(), "ipv4", IPV4_TABLES);
        const before = await save(host(), "ipv4");
        const flushed = await lab.exec(host(), [
          programs(host(), "ipv4").command,
          "-w",
          "-F",
          "INPUT",
        ]);
        expect(flushed.code).toBe(0);

        const result = await runScript(host(), "ipv4", IPV4_TABLES);
        expect(result.code, result.stderr).toBe(0);
        expect(await save(host(), "ipv4")).toBe(before);
      });

      it("replaces a changed rule in place of the old one", async () => {
        await reset(host(), "ipv4");
        await runScript(host(), "ipv4", IPV4_TABLES);
        const changed = IPV4_TABLES.map((table) => ({
          ...table,
          rules: table.rules.map((rule) => ({
            ...rule,
            line: rule.line.replace("50/sec", "100/sec"),
          })),
        }));
        const result = await runScript(host(), "ipv4", changed);
        expect(result.code, result.stderr).toBe(0);

        const lines = managedLines(await save(host(), "ipv4"));
        expect(lines.filter((line) => line.includes("web/accept"))).toEqual([
          expect.stringContaining("--hashlimit-upto 100/sec"),
        ]);
        expect(lines).toHaveLength(5);
      });

      it("fails without changing a table when a rule is rejected", async () => {
        await reset(host(), "ipv4");
        await runScript(host(), "ipv4", IPV4_TABLES);
        const before = await save(host(), "ipv4");
        const broken: PersistedTable[] = [
          ...IPV4_TABLES,
          {
            table: "filter",
            ownedChains: [],
            rules: [
              {
                marker: { id: "broken", order: 99 },
                chain: "INPUT",
                line: '-A INPUT -m comment --comment "pulumi-iptables:broken:99" -j NO-SUCH-CHAIN',
              },
            ],
          },
        ];
        const result = await runScript(host(), "ipv4", broken);
        expect(result.code).not.toBe(0);
        expect(result.stderr).toContain("rejected this input");
        expect(result.stderr).toMatch(/\d+ {2}-I INPUT \d+ .*NO-SUCH-CHAIN/);
        expect(await save(host(), "ipv4")).toBe(before);
      });

      it("checks without changing anything with --test", async () => {
        await reset(host(), "ipv4");
        const before = await save(host(), "ipv4");
        const result = await runScript(host(), "ipv4", IPV4_TABLES, ["--test"]);
        expect(result.code, result.stderr).toBe(0);
        expect(await save(host(), "ipv4")).toBe(before);
      });

      it("places rules by marker order among other jobs' rules", async () => {
        await reset(host(), "ipv4");
        const { command } = programs(host(), "ipv4");
        const other =
          '-A INPUT -s 198.18.0.98/32 -m comment --comment "pulumi-iptables:other:5" -j ACCEPT';
        for (const rule of [FOREIGN_RULE, other]) {
          const added = await lab.exec(host(), [command, "-w", ...splitArgs(rule)]);
          expect(added.code, added.stderr).toBe(0);
        }
        const late = {
          marker: { id: "web/late", order: 10 },
          chain: "INPUT",
          line: '-A INPUT -s 198.18.0.97/32 -m comment --comment "pulumi-iptables:web/late:10" -j ACCEPT',
        };
        const tables = [{ ...IPV4_TABLES[0], rules: [...IPV4_TABLES[0].rules, late] }];
        const result = await runScript(host(), "ipv4", tables);
        expect(result.code, result.stderr).toBe(0);

        const input = (await save(host(), "ipv4"))
          .split("\n")
          .filter((line) => line.startsWith("-A INPUT"));
        // The foreign rule keeps its place at the top: the planner never moves foreign rules.
        expect(input.map((line) => /pulumi-iptables:([^"]+)/.exec(line)?.[1] ?? "foreign")).toEqual(
          ["foreign", "web/hook:0", "other:5", "web/late:10"],
        );
      });

      it("gives the same chains in either job order", async () => {
        const first = IPV4_TABLES;
        const second: PersistedTable[] = [
          {
            table: "filter",
            ownedChains: [],
            rules: [
              {
                marker: { id: "db/hook", order: 5 },
                chain: "INPUT",
                line: '-A INPUT -p tcp -m tcp --dport 5432 -m comment --comment "pulumi-iptables:db/hook:5" -j ACCEPT',
              },
              {
                marker: { id: "db/late", order: 50 },
                chain: "INPUT",
                line: '-A INPUT -p tcp -m tcp --dport 5433 -m comment --comment "pulumi-iptables:db/late:50" -j ACCEPT',
              },
            ],
          },
        ];
        const dumps: string[] = [];
        for (const order of [
          [first, second],
          [second, first],
        ]) {
          await reset(host(), "ipv4");
          for (const tables of order) {
            const result = await runScript(host(), "ipv4", tables);
            expect(result.code, result.stderr).toBe(0);
          }
          dumps.push(await save(host(), "ipv4"));
        }
        expect(dumps[1]).toBe(dumps[0]);
        const input = dumps[0].split("\n").filter((line) => line.startsWith("-A INPUT"));
        expect(input.map((line) => /pulumi-iptables:([^"]+)/.exec(line)?.[1])).toEqual([
          "web/hook:0",
          "db/hook:5",
          "db/late:50",
        ]);
      });

      it("restores IPv6 rules with ip6tables", async () => {
        await reset(host(), "ipv6");
        const result = await runScript(host(), "ipv6", IPV6_TABLES);
        expect(result.code, result.stderr).toBe(0);
        await runScript(host(), "ipv6", IPV6_TABLES);
        const expected = IPV6_TABLES.flatMap((table) => table.rules.map((rule) => rule.line));
        expect(managedLines(await save(host(), "ipv6")).sort()).toEqual([...expected].sort());
      });
    });
  }

  it("waits for the table lock of pulumi up", async () => {
    const host = lab.hosts[0];
    await runScript(host, "ipv4", IPV4_TABLES);
    const argv = await scriptArgv(host, "ipv4", "/etc/pulumi-iptables/test/rules.v4");
    // The lock is held for 2 s by a background flock; the script must not finish before.
    const script = [
      "flock /run/pulumi-iptables.ipv4.filter.lock sleep 2 &",
      "sleep 0.3",
      "start=$(date +%s%N)",
      '"$@" || exit 1',
      "echo $(( ($(date +%s%N) - start) / 1000000 ))",
    ].join("\n");
    const result = await lab.exec(host, ["sh", "-c", script, "sh", ...argv]);
    expect(result.code, result.stderr).toBe(0);
    expect(Number(result.stdout.trim())).toBeGreaterThanOrEqual(1500);
  });

  it("fails on a rules file without COMMIT", async () => {
    const host = lab.hosts[0];
    await writeFile(host, "/etc/pulumi-iptables/test/cut.v4", "*filter\n-N CUT\n");
    const argv = await scriptArgv(host, "ipv4", "/etc/pulumi-iptables/test/cut.v4");
    const result = await lab.exec(host, argv);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("ends without COMMIT");
  });

  it("fails on a missing rules file", async () => {
    const host = lab.hosts[0];
    const argv = await scriptArgv(host, "ipv4", "/etc/pulumi-iptables/test/absent.v4");
    const result = await lab.exec(host, argv);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      "cannot read the rules file /etc/pulumi-iptables/test/absent.v4",
    );
  });
});
