import { describe, expect, it } from "vitest";
import { renderUpstartJob, UPSTART_START_EVENTS } from "../../src/persist/upstart";
import { persistPaths } from "../../src/persist/paths";
import { golden } from "./golden";
import { nftCommands } from "./sample";

const PATHS = persistPaths("web");
const JOBS = [
  {
    family: "ipv4" as const,
    rulesPath: PATHS.rules.ipv4,
    saveCommand: "/sbin/iptables-save",
    restoreCommand: "/sbin/iptables-restore",
    wait: false,
  },
  { family: "ipv6" as const, rulesPath: PATHS.rules.ipv6, ...nftCommands("ipv6") },
];

function render(): string {
  return renderUpstartJob("web", PATHS.script, JOBS);
}

interface Stanzas {
  readonly names: string[];
  readonly startOn: string;
  readonly script: string[];
  readonly description: string;
}

/**
 * Reads the stanzas of an upstart job as init(5) defines them: one stanza per line, a
 * parenthesised "start on" expression may span lines, and "script" runs to "end script".
 */
function parseJob(text: string): Stanzas {
  const names: string[] = [];
  const script: string[] = [];
  let startOn = "";
  let description = "";
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    if (line.trim() === "" || line.startsWith("#")) continue;
    const name = line.split(/\s+/)[0];
    names.push(name);
    if (line.startsWith("start on ")) {
      startOn = line.slice("start on ".length);
      let depth =
        [...startOn].filter((c) => c === "(").length - [...startOn].filter((c) => c === ")").length;
      while (depth > 0) {
        index++;
        const next = lines[index];
        startOn += ` ${next.trim()}`;
        depth +=
          [...next].filter((c) => c === "(").length - [...next].filter((c) => c === ")").length;
      }
    } else if (line === "script") {
      index++;
      while (lines[index] !== "end script") {
        if (index >= lines.length) throw new Error("script without end script");
        script.push(lines[index].trim());
        index++;
      }
    } else if (name === "description") {
      description = line.slice("description ".length);
    }
  }
  return { names, startOn, script, description };
}

describe("renderUpstartJob", () => {
  it("matches the golden file", () => {
    const job = render();
    expect(job).toBe(golden("pulumi-iptables-web.conf", job));
  });

  it("has a description, a start event, task and script", () => {
    const stanzas = parseJob(render());
    expect(stanzas.names).toEqual(["description", "start", "task", "script"]);
    expect(stanzas.description).toMatch(/^".+"$/);
  });

  it("starts before the network jobs start", () => {
    const { startOn } = parseJob(render());
    expect(startOn).toBe(`(${UPSTART_START_EVENTS.join(" or ")})`);
    for (const event of UPSTART_START_EVENTS) expect(event).toMatch(/^starting network/);
  });

  it("is a task that does not respawn", () => {
    const stanzas = parseJob(render());
    expect(stanzas.names).toContain("task");
    expect(stanzas.names).not.toContain("respawn");
    expect(stanzas.names).not.toContain("stop");
  });

  it("restores each family with its own programs", () => {
    const { script } = parseJob(render());
    expect(script).toEqual([
      "/bin/sh /etc/pulumi-iptables/web/restore.sh ipv4 /etc/pulumi-iptables/web/rules.v4 /sbin/iptables-save /sbin/iptables-restore --noflush",
      "/bin/sh /etc/pulumi-iptables/web/restore.sh ipv6 /etc/pulumi-iptables/web/rules.v6 /usr/sbin/ip6tables-nft-save /usr/sbin/ip6tables-nft-restore --noflush --wait",
    ]);
  });
});
