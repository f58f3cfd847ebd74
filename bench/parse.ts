/**
 * Parse cost against iptables-legacy-save, on one lab host.
 *
 * Loads a filter table of 50,000 rules (managed hashlimit rules with markers, conntrack, ports,
 * address lists, Docker- and fail2ban-style rules) into a legacy lab host, then measures in one
 * run: how long `iptables-legacy-save -c` takes to print it inside the host, and how long
 * `parseSave` plus `canonicalRule` on every rule take here. Prints both and their ratio.
 *
 * The library is measured as users run it: compiled by tsc (into a temporary folder), not
 * through tsx, whose transform adds a helper call to every function it creates. Each run
 * starts with an empty canonical-form cache, so it pays for learning the dump's rule shapes.
 *
 *   npx tsx bench/parse.ts [--rules 50000] [--runs 5]
 *
 * Target: parse plus canonicalise in less than half the time iptables-legacy-save takes.
 * Each figure is the median of its runs. The first runs of the library include V8 compiling
 * it, so the last line prints every run.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createLab } from "../src/lab";
import type * as Canonical from "../src/netfilter/canonical";
import type * as CanonicalCache from "../src/netfilter/canonical-cache";
import type * as Parse from "../src/netfilter/parse";

/** Compiles the package with tsc into a temporary folder and loads the netfilter modules. */
function loadCompiled(outDir: string): {
  canonical: typeof Canonical;
  cache: typeof CanonicalCache;
  parse: typeof Parse;
} {
  const root = join(__dirname, "..");
  try {
    execFileSync("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", outDir], {
      cwd: root,
      stdio: "pipe",
    });
  } catch {
    // tsc still writes its output when other files of the tree have type errors.
  }
  return {
    canonical: require(join(outDir, "netfilter", "canonical.js")) as typeof Canonical,
    cache: require(join(outDir, "netfilter", "canonical-cache.js")) as typeof CanonicalCache,
    parse: require(join(outDir, "netfilter", "parse.js")) as typeof Parse,
  };
}

function parseOptions(): { rules: number; runs: number } {
  const { values } = parseArgs({
    options: {
      rules: { type: "string", default: "50000" },
      runs: { type: "string", default: "5" },
    },
  });
  const rules = Number(values.rules);
  const runs = Number(values.runs);
  if (!Number.isInteger(rules) || rules < 100 || rules > 200_000) {
    throw new Error(`--rules must be an integer from 100 to 200000, not "${values.rules}"`);
  }
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) {
    throw new Error(`--runs must be an integer from 1 to 50, not "${values.runs}"`);
  }
  return { rules, runs };
}

/** Returns one rule of a realistic mix, varied by its index. */
function ruleAt(index: number): string {
  const a = (index >> 8) & 0xff;
  const b = index & 0xff;
  const port = 1024 + (index % 60_000);
  switch (index % 8) {
    case 0:
      return (
        `-A RATE-LIMIT -p tcp -m tcp --dport ${port} -m conntrack --ctstate NEW -m hashlimit ` +
        `--hashlimit-upto ${1 + (index % 500)}/sec --hashlimit-burst 20 --hashlimit-mode srcip ` +
        `--hashlimit-name b${index % 64} -m comment --comment "pulumi-iptables:web/r${index}:${index}" -j ACCEPT`
      );
    case 1:
      return `-A f2b-sshd -s 198.18.${a}.${b}/32 -j REJECT --reject-with icmp-port-unreachable`;
    case 2:
      return `-A DOCKER -d 198.19.${a}.${b}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport ${port} -j ACCEPT`;
    case 3:
      return `-A INPUT -s 198.18.${a}.0/24 -p udp -m udp --sport 53 --dport ${port} -j ACCEPT`;
    case 4:
      return `-A INPUT -p tcp -m multiport --dports ${port},${port + 1}:${port + 5} -m comment --comment "svc ${index}" -j ACCEPT`;
    case 5:
      return `-A RATE-LIMIT -m limit --limit ${1 + (index % 100)}/min -j LOG --log-prefix "rl ${index % 1000}: "`;
    case 6:
      return `-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m mark --mark 0x${(index % 4096).toString(16)}/0xfff -j ACCEPT`;
    default:
      return `-A FORWARD -i br-${(index % 4096).toString(16)} -o eth0 -m state --state NEW -j DROP`;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const options = parseOptions();
  const outDir = mkdtempSync(join(tmpdir(), "bench-parse-"));
  const { canonical, cache, parse } = loadCompiled(outDir);
  const lab = await createLab({ name: "bench-parse", hosts: [{ backend: "legacy" }] });
  try {
    const host = lab.hosts[0];
    const lines = ["*filter", ":RATE-LIMIT - [0:0]", ":f2b-sshd - [0:0]", ":DOCKER - [0:0]"];
    for (let i = 0; i < options.rules; i++) lines.push(ruleAt(i));
    lines.push("COMMIT", "");
    const loaded = await lab.exec(host, ["iptables-legacy-restore"], {
      input: lines.join("\n"),
      timeoutMs: 600_000,
    });
    if (loaded.code !== 0) throw new Error(`iptables-legacy-restore failed: ${loaded.stderr}`);

    // Time the save inside the host, so process start-up through nsenter is not counted.
    const timing = await lab.exec(
      host,
      [
        "bash",
        "-c",
        `for i in $(seq ${options.runs}); do s=$(date +%s%N); iptables-legacy-save -c >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 )); done`,
      ],
      { timeoutMs: 600_000 },
    );
    if (timing.code !== 0) throw new Error(`timing iptables-legacy-save failed: ${timing.stderr}`);
    const saveMs = median(
      timing.stdout
        .trim()
        .split("\n")
        .map((micros) => Number(micros) / 1000),
    );

    const saved = await lab.exec(host, ["iptables-legacy-save", "-c"], { timeoutMs: 600_000 });
    const text = saved.stdout;
    const ruleCount = text.split("\n").filter((line) => line.startsWith("[")).length;

    const parseTimes: number[] = [];
    const totalTimes: number[] = [];
    for (let run = 0; run < options.runs; run++) {
      cache.clearCanonicalCache();
      const start = performance.now();
      const dump = parse.parseSave(text);
      const parsed = performance.now();
      for (const table of dump.tables) {
        for (const rule of table.rules) {
          canonical.canonicalRule(rule.text, {
            family: "ipv4",
            table: "filter",
            backend: "legacy",
          });
        }
      }
      const done = performance.now();
      parseTimes.push(parsed - start);
      totalTimes.push(done - start);
    }
    const parseMs = median(parseTimes);
    const totalMs = median(totalTimes);

    console.log(`rules in the dump:                       ${ruleCount}`);
    console.log(
      `dump size:                               ${(text.length / 1024 / 1024).toFixed(1)} MiB`,
    );
    console.log(`iptables-legacy-save -c in the host:     ${saveMs.toFixed(1)} ms`);
    console.log(`parseSave:                               ${parseMs.toFixed(1)} ms`);
    console.log(`parseSave + canonicalRule on every rule: ${totalMs.toFixed(1)} ms`);
    console.log(
      `ratio (parse + canonicalise) / save:     ${(totalMs / saveMs).toFixed(2)} (target < 0.5)`,
    );
    console.log(
      `each run, parse + canonicalise (ms):     ${totalTimes.map((ms) => ms.toFixed(0)).join(" ")}`,
    );
  } finally {
    await lab.destroy();
    rmSync(outDir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
