/**
 * fast-check generators of rule specs over the grammar canonicalRule supports, with the
 * spellings iptables accepts: long and short options, aliases, unit prefixes, C numbers,
 * service names, negation and matches in any order. Some generated rules are invalid on
 * purpose, with out-of-range values or options the kernel rejects, and the differential test
 * then requires canonicalRule to reject them as the kernel does.
 */
import fc from "fast-check";
import type { Family } from "../../src/netfilter/types";

const chains = fc.constantFrom("INPUT", "FORWARD", "OUTPUT", "USR");

function maybe<T>(arb: fc.Arbitrary<T>, weight = 3): fc.Arbitrary<T | undefined> {
  return fc.option(arb, { freq: weight, nil: undefined });
}

const bang = fc.constantFrom("", "", "", "! ");

const cNumber = (min: number, max: number): fc.Arbitrary<string> =>
  fc
    .integer({ min, max })
    .chain((value) =>
      fc.constantFrom(
        String(value),
        String(value),
        `0x${value.toString(16)}`,
        value === 0 ? "0" : `0${value.toString(8)}`,
      ),
    );

const portNumber = fc.oneof(
  fc.constantFrom(
    "0",
    "22",
    "80",
    "443",
    "1023",
    "1024",
    "65535",
    "ssh",
    "http",
    "domain",
    "022",
    "0x50",
  ),
  fc.integer({ min: 0, max: 65535 }).map(String),
);
const portRange = fc.oneof(
  portNumber,
  fc
    .tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }))
    .map(([a, b]) => `${Math.min(a, b)}:${Math.max(a, b)}`),
  fc.integer({ min: 0, max: 65535 }).map((a) => `${a}:`),
  fc.integer({ min: 0, max: 65535 }).map((a) => `:${a}`),
  fc.constantFrom("0:65535", "0:1023", "1:65535", "100:200"),
);

const tcpFlag = fc.constantFrom("FIN", "SYN", "RST", "PSH", "ACK", "URG", "syn", "ack");
const flagList = fc.oneof(
  fc.constantFrom("ALL", "NONE"),
  fc.uniqueArray(tcpFlag, { minLength: 1, maxLength: 4 }).map((flags) => flags.join(",")),
);

const rateUnit = fc.constantFrom(
  "",
  "/s",
  "/sec",
  "/second",
  "/m",
  "/min",
  "/minute",
  "/h",
  "/hour",
  "/d",
  "/day",
  "/Sec",
);
const rate = (maxCount: number): fc.Arbitrary<string> =>
  fc
    .tuple(fc.integer({ min: 1, max: maxCount }), rateUnit)
    .map(([count, unit]) => `${count}${unit}`);
// Rates below 16b/s are left out: canonicalRule rejects them on purpose (see rules.txt).
const byteRate = fc
  .tuple(fc.integer({ min: 1, max: 4000 }), fc.constantFrom("b", "kb", "mb"))
  .map(([count, unit]) => `${unit === "b" ? count + 15 : count}${unit}/s`);

function address(family: Family): fc.Arbitrary<string> {
  if (family === "ipv4") {
    return fc.oneof(
      fc.ipV4(),
      fc.constantFrom("198.18.0.1", "10.1", "0/0", "010.0.0.1", "198.19.255.255"),
    );
  }
  return fc.oneof(
    fc.constantFrom(
      "fd6c:6162::1",
      "::1",
      "::",
      "fd6c:6162:0:1:0:0:0:1",
      "::ffff:198.18.0.1",
      "FD6C::ABCD",
      "2001:db8::",
    ),
    fc.ipV6(),
  );
}

function network(family: Family): fc.Arbitrary<string> {
  const bits = family === "ipv4" ? 32 : 128;
  return fc
    .tuple(address(family), maybe(fc.integer({ min: 0, max: bits }), 2))
    .map(([addr, length]) =>
      length === undefined || addr.includes("/") ? addr : `${addr}/${length}`,
    );
}

interface Parts {
  chain: string;
  options: string[];
}

function portMatch(protocol: "tcp" | "udp"): fc.Arbitrary<string> {
  const options: Array<fc.Arbitrary<string | undefined>> = [
    maybe(
      fc
        .tuple(bang, fc.constantFrom("--sport", "--source-port"), portRange)
        .map(([b, o, v]) => `${b}${o} ${v}`),
    ),
    maybe(
      fc
        .tuple(bang, fc.constantFrom("--dport", "--destination-port"), portRange)
        .map(([b, o, v]) => `${b}${o} ${v}`),
    ),
  ];
  if (protocol === "tcp") {
    options.push(
      maybe(
        fc.oneof(
          fc.tuple(bang).map(([b]) => `${b}--syn`),
          fc
            .tuple(bang, flagList, flagList)
            .map(([b, mask, cmp]) => `${b}--tcp-flags ${mask} ${cmp}`),
        ),
        1,
      ),
    );
  }
  return fc.tuple(fc.boolean(), ...options).map(([explicit, ...parts]) => {
    const text = parts.filter((part): part is string => part !== undefined).join(" ");
    return `${explicit ? `-m ${protocol} ` : ""}${text}`.trim();
  });
}

function matchArb(
  family: Family,
  protocol: string | undefined,
  uniq: () => string,
): fc.Arbitrary<string> {
  const list: Array<fc.Arbitrary<string>> = [
    fc
      .tuple(
        bang,
        fc.uniqueArray(
          fc.constantFrom("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "new"),
          { minLength: 1, maxLength: 3 },
        ),
      )
      .map(([b, states]) => `-m conntrack ${b}--ctstate ${states.join(",")}`),
    fc
      .tuple(
        bang,
        fc.uniqueArray(fc.constantFrom("NEW", "ESTABLISHED", "RELATED", "INVALID"), {
          minLength: 1,
          maxLength: 3,
        }),
      )
      .map(([b, states]) => `-m state ${b}--state ${states.join(",")}`),
    fc
      .tuple(maybe(rate(12000)), maybe(cNumber(0, 10001)))
      .map(
        ([limit, burst]) =>
          `-m limit${limit ? ` --limit ${limit}` : ""}${burst ? ` --limit-burst ${burst}` : ""}`,
      ),
    fc
      .tuple(
        fc.constantFrom(
          "--hashlimit-upto",
          "--hashlimit-above",
          "--hashlimit",
          "! --hashlimit-upto",
        ),
        fc.oneof(rate(1_200_000), byteRate),
        maybe(fc.oneof(cNumber(1, 2000), fc.constantFrom("1mb", "64kb", "5k")), 2),
        maybe(
          fc.uniqueArray(fc.constantFrom("srcip", "dstip", "srcport", "dstport"), {
            minLength: 1,
            maxLength: 4,
          }),
          2,
        ),
        maybe(fc.integer({ min: 0, max: family === "ipv4" ? 32 : 128 }), 1),
        maybe(fc.oneof(cNumber(1, 120_000), fc.constantFrom("1000", "60000", "3600000")), 2),
        maybe(fc.integer({ min: 0, max: 2_000_000 }), 1),
        maybe(fc.integer({ min: 1, max: 5000 }), 1),
      )
      .map(([option, value, burst, mode, mask, expire, size, gc]) => {
        let text = `-m hashlimit ${option} ${value} --hashlimit-name ${uniq()}`;
        if (burst !== undefined) text += ` --hashlimit-burst ${burst}`;
        if (mode !== undefined) text += ` --hashlimit-mode ${mode.join(",")}`;
        if (mask !== undefined) text += ` --hashlimit-srcmask ${mask}`;
        if (expire !== undefined) text += ` --hashlimit-htable-expire ${expire}`;
        if (size !== undefined) text += ` --hashlimit-htable-size ${size}`;
        if (gc !== undefined) text += ` --hashlimit-htable-gcinterval ${gc}`;
        return text;
      }),
    fc
      .string({
        unit: fc.constantFrom("a", "b", " ", "!", ":", "/", "-", "'", '"', "\\", "é"),
        maxLength: 12,
      })
      .map((text) =>
        // A bare "!" after an option is its value for iptables-restore.
        text === "!"
          ? "-m comment --comment !"
          : `-m comment --comment "${text.replace(/["'\\]/g, (ch) => `\\${ch}`)}"`,
      ),
    fc
      .tuple(
        bang,
        fc.constantFrom("upto", "above"),
        fc.integer({ min: 0, max: 100 }),
        maybe(fc.integer({ min: 0, max: family === "ipv4" ? 32 : 128 })),
        fc.constantFrom("", " --connlimit-daddr", " --connlimit-saddr"),
      )
      .map(
        ([b, kind, limit, mask, side]) =>
          `-m connlimit ${b}--connlimit-${kind} ${limit}${mask === undefined ? "" : ` --connlimit-mask ${mask}`}${side}`,
      ),
    fc
      .tuple(
        bang,
        fc.constantFrom("--set", "--rcheck", "--update", "--remove"),
        maybe(fc.integer({ min: 1, max: 600 })),
        maybe(fc.integer({ min: 1, max: 20 })),
        fc.constantFrom("", " --rsource", " --rdest"),
        maybe(fc.constantFrom("SSH", "web_1")),
      )
      .map(([b, command, seconds, hits, side, name]) => {
        let text = `-m recent ${b}${command}`;
        if (command === "--rcheck" || command === "--update") {
          if (seconds !== undefined) text += ` --seconds ${seconds}`;
          if (hits !== undefined) text += ` --hitcount ${hits}`;
        }
        if (name !== undefined) text += ` --name ${name}`;
        return text + side;
      }),
    fc
      .tuple(bang, address(family), address(family))
      .filter(([, a, b]) => !a.includes("/") && !b.includes("/"))
      .map(([b, from, to]) => `-m iprange ${b}--src-range ${from}-${to}`),
    fc
      .tuple(bang, cNumber(0, 0xffff_ffff), maybe(cNumber(0, 0xffff_ffff)))
      .map(
        ([b, value, mask]) => `-m mark ${b}--mark ${value}${mask === undefined ? "" : `/${mask}`}`,
      ),
    fc
      .tuple(
        bang,
        fc.uniqueArray(
          fc.constantFrom("LOCAL", "UNICAST", "MULTICAST", "local", "ANYCAST", "UNREACHABLE"),
          { minLength: 1, maxLength: 3 },
        ),
        fc.constantFrom("--src-type", "--dst-type"),
      )
      .map(([b, types, option]) => `-m addrtype ${b}${option} ${types.join(",")}`),
  ];
  if (protocol === "tcp" || protocol === "udp") {
    list.push(portMatch(protocol));
    list.push(
      fc
        .tuple(
          bang,
          fc.constantFrom("--dports", "--sports", "--ports"),
          fc.array(portNumber, { minLength: 1, maxLength: 6 }),
        )
        .map(([b, option, ports]) => `-m multiport ${b}${option} ${ports.join(",")}`),
    );
  }
  if (protocol === "icmp" && family === "ipv4") {
    list.push(
      fc
        .tuple(
          bang,
          fc.constantFrom("echo-request", "8", "3/3", "any", "port-unreach", "time-exceeded", "0"),
        )
        .map(([b, type]) => `${b}--icmp-type ${type}`),
    );
  }
  if (protocol === "icmpv6" && family === "ipv6") {
    list.push(
      fc
        .tuple(
          bang,
          fc.constantFrom(
            "echo-request",
            "128",
            "1/4",
            "neighbour-solicitation",
            "packet-too-big",
            "135/0",
          ),
        )
        .map(([b, type]) => `${b}--icmpv6-type ${type}`),
    );
  }
  return fc.oneof(...list);
}

function targetArb(family: Family, protocol: string | undefined): fc.Arbitrary<string> {
  const rejects =
    family === "ipv4"
      ? [
          "icmp-port-unreachable",
          "net-unreach",
          "host-prohib",
          "admin-prohib",
          "icmp-net-prohibited",
        ]
      : ["icmp6-port-unreachable", "no-route", "adm-prohibited", "addr-unreach", "policy-fail"];
  if (protocol === "tcp") rejects.push("tcp-reset");
  return fc.oneof(
    fc.constantFrom("-j ACCEPT", "-j DROP", "-j RETURN", "--jump ACCEPT", "-j USR", "-g USR", ""),
    fc.constantFrom(...rejects).map((type) => `-j REJECT --reject-with ${type}`),
    fc.constant("-j REJECT"),
    fc
      .tuple(
        maybe(fc.constantFrom("x: ", "rate-limit: ", 'a"b', "0123456789012345678901234567890")),
        maybe(fc.constantFrom("4", "debug", "1", "warning", "7")),
        fc.boolean(),
      )
      .map(([prefix, level, uid]) => {
        let text = "-j LOG";
        if (prefix !== undefined) text += ` --log-prefix "${prefix.replace(/"/g, '\\"')}"`;
        if (level !== undefined) text += ` --log-level ${level}`;
        if (uid) text += " --log-uid";
        return text;
      }),
  );
}

/** Generates one rule spec for the family; hashlimit names are unique per call of `uniq`. */
export function ruleSpecArb(family: Family, uniq: () => string): fc.Arbitrary<string> {
  const protocols =
    family === "ipv4"
      ? ["tcp", "udp", "icmp", "TCP", "6", "47", "all"]
      : ["tcp", "udp", "icmpv6", "ipv6-icmp", "17"];
  return fc
    .record({
      chain: chains,
      source: maybe(fc.tuple(bang, network(family)), 2),
      destination: maybe(fc.tuple(bang, network(family)), 2),
      inInterface: maybe(
        fc.tuple(bang, fc.constantFrom("eth0", "lo", "veth+", "br-1234567890ab")),
        2,
      ),
      outInterface: maybe(fc.tuple(bang, fc.constantFrom("eth1", "docker0", "wg+")), 1),
      protocol: maybe(
        fc.tuple(fc.constantFrom("", "", "", "! "), fc.constantFrom(...protocols)),
        4,
      ),
      longForms: fc.boolean(),
    })
    .chain((parts) => {
      const protocolName = parts.protocol?.[1].toLowerCase();
      const normalized =
        protocolName === "6"
          ? "tcp"
          : protocolName === "17"
            ? "udp"
            : protocolName === "ipv6-icmp"
              ? "icmpv6"
              : protocolName;
      return fc
        .tuple(
          fc.array(matchArb(family, normalized, uniq), { maxLength: 3 }),
          targetArb(family, normalized),
        )
        .map(([matches, target]) => {
          const out: Parts = { chain: parts.chain, options: [] };
          const flag = (short: string, long: string): string => (parts.longForms ? long : short);
          if (parts.source)
            out.options.push(`${parts.source[0]}${flag("-s", "--source")} ${parts.source[1]}`);
          if (parts.destination)
            out.options.push(
              `${parts.destination[0]}${flag("-d", "--dst")} ${parts.destination[1]}`,
            );
          if (parts.inInterface)
            out.options.push(
              `${parts.inInterface[0]}${flag("-i", "--in-interface")} ${parts.inInterface[1]}`,
            );
          if (parts.outInterface)
            out.options.push(
              `${parts.outInterface[0]}${flag("-o", "--out-interface")} ${parts.outInterface[1]}`,
            );
          if (parts.protocol)
            out.options.push(
              `${parts.protocol[0]}${flag("-p", "--protocol")} ${parts.protocol[1]}`,
            );
          out.options.push(...matches);
          if (target !== "") out.options.push(target);
          return `-A ${out.chain} ${out.options.join(" ")}`.trim();
        });
    });
}
