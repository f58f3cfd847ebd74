/**
 * The provider of `ConntrackSysctl`: live and boot-time conntrack settings of one host.
 *
 * The Pulumi provider process loads this module at call time (the serialised provider is a
 * thin shim that requires it), so nothing here is captured into state.
 */
import { z } from "zod";
import { IptablesError, tailLines } from "../../errors";
import type { Host } from "../../host";
import {
  CONNTRACK_BUCKETS_KEY,
  CONNTRACK_COUNT_KEY,
  CONNTRACK_MAX_KEY,
  CONNTRACK_PATHS,
  HASHSIZE_PARAMETER_PATH,
  renderConntrackFiles,
  sizingWarning,
  type ConntrackSettings,
} from "../../persist/conntrack";
import { connectionAddress } from "../connection";
import { ENTRIES_WARNING_RATIO } from "../hashlimit-pressure";
import { invalid, type CheckFailure } from "../failures";
import { orUnknown } from "../fields";
import { openHost } from "../host-access";
import { containsUnknown } from "../unknown";
import { parseInputs } from "../check-inputs";

type Props = Record<string, unknown>;

/** Sanity bounds: below them a host drops connections at once, above them it runs out of memory. */
export const MAX_RANGE = { min: 256, max: 2 ** 28 } as const;
export const BUCKETS_RANGE = { min: 256, max: 2 ** 26 } as const;
/** The largest value of an int sysctl. */
const INT_MAX = 0x7fff_ffff;

const SETTING_KEY = /^net\.netfilter\.nf_conntrack_[a-z0-9_]+$/;
/** Keys `settings` may not set: sizing has its own inputs, and the count is read-only. */
const RESERVED_KEYS: Readonly<Record<string, string>> = {
  [CONNTRACK_MAX_KEY]: "set it with max",
  [CONNTRACK_BUCKETS_KEY]: "set it with buckets",
  [CONNTRACK_COUNT_KEY]: "it is read-only: the kernel's count of tracked connections",
};

function rangeSchema(range: { readonly min: number; readonly max: number }) {
  const fix = `use an integer from ${range.min} to ${range.max}`;
  return z
    .number({ error: fix })
    .int({ error: fix })
    .min(range.min, { error: fix })
    .max(range.max, { error: fix });
}

const sysctlSchema = z
  .object({
    connection: z.unknown(),
    max: orUnknown(rangeSchema(MAX_RANGE)).optional(),
    buckets: orUnknown(rangeSchema(BUCKETS_RANGE)).optional(),
    settings: orUnknown(z.record(z.string(), orUnknown(rangeSchema({ min: 0, max: INT_MAX })))),
    persist: orUnknown(z.boolean({ error: "use true or false" })),
  })
  .strict();

const DEFAULTS: Readonly<Props> = { settings: {}, persist: true };

/** Outputs the provider adds to the inputs. */
const OUTPUT_KEYS = [
  "count",
  "liveMax",
  "liveBuckets",
  "liveSettings",
  "previous",
  "persistedFiles",
  "inSync",
  "hostKey",
];

/**
 * Validates and normalises the inputs of a `ConntrackSysctl`, contacting no host. With `warn`,
 * logs a warning for a max and buckets that fit badly together.
 */
export function checkConntrackSysctl(
  news: Props,
  warn = true,
): { inputs: Props; failures: CheckFailure[] } {
  const parsed = parseInputs(news, DEFAULTS, OUTPUT_KEYS, sysctlSchema);
  const failures = parsed.failures;
  if (parsed.inputs === undefined) return { inputs: news, failures };
  const inputs = parsed.inputs;

  if (!containsUnknown(inputs.settings)) {
    const normalized: Record<string, number> = {};
    for (const [name, value] of Object.entries(inputs.settings as Record<string, number>)) {
      const key = name.startsWith("net.netfilter.") ? name : `net.netfilter.${name}`;
      if (!SETTING_KEY.test(key)) {
        failures.push(
          invalid(
            `settings.${name}`,
            name,
            "use a net.netfilter.nf_conntrack_* key, such as nf_conntrack_udp_timeout",
          ),
        );
      } else if (RESERVED_KEYS[key] !== undefined) {
        failures.push(invalid(`settings.${name}`, name, RESERVED_KEYS[key]));
      } else {
        normalized[key] = value;
      }
    }
    inputs.settings = Object.fromEntries(
      Object.entries(normalized).sort(([a], [b]) => (a < b ? -1 : 1)),
    );
    if (
      inputs.max === undefined &&
      inputs.buckets === undefined &&
      Object.keys(normalized).length === 0
    ) {
      failures.push({
        property: "max",
        reason: "ConntrackSysctl sets nothing: give max, buckets or settings",
      });
    }
  }
  if (warn && typeof inputs.max === "number" && typeof inputs.buckets === "number") {
    const warning = sizingWarning(inputs.max, inputs.buckets);
    if (warning !== undefined) console.log(`warning: ${warning}`);
  }
  return { inputs, failures };
}

/** The provider of `ConntrackSysctl`. */
export const conntrackSysctlProvider = {
  async check(_olds: Props, news: Props): Promise<{ inputs: Props; failures: CheckFailure[] }> {
    return checkConntrackSysctl(news);
  },

  async diff(_id: string, olds: Props, news: Props) {
    const replaces =
      containsUnknown(news.connection) ||
      connectionAddress(olds.connection) !== connectionAddress(news.connection)
        ? ["connection"]
        : [];
    const changes =
      replaces.length > 0 ||
      olds.inSync === false ||
      ["max", "buckets", "settings", "persist", "connection"].some(
        (key) =>
          containsUnknown(news[key]) || JSON.stringify(olds[key]) !== JSON.stringify(news[key]),
      );
    return { changes, replaces, deleteBeforeReplace: false };
  },

  async create(inputs: Props): Promise<{ id: string; outs: Props }> {
    const host = await openHost(inputs.connection);
    const outs = await apply(host, inputs, undefined);
    return { id: `${connectionAddress(inputs.connection)}/conntrack`, outs };
  },

  async read(id: string, props: Props): Promise<{ id: string; props: Props; inputs?: Props }> {
    const host = await openHost(props.connection, props.hostKey);
    const desired = desiredOf(props);
    const live = await readLive(host, Object.keys(desired.settings ?? {}));
    warnWhenFull(host, live);

    const liveSettings = pick(live.values, Object.keys(desired.settings ?? {}));
    const valuesMatch =
      (desired.max === undefined || live.values[CONNTRACK_MAX_KEY] === props.liveMax) &&
      (desired.buckets === undefined || live.values[CONNTRACK_BUCKETS_KEY] === props.liveBuckets) &&
      JSON.stringify(liveSettings) === JSON.stringify(props.liveSettings);
    const filesMatch = await persistedFilesMatch(host, props, live);
    const outs = {
      ...props,
      ...liveOutputs(live, desired),
      inSync: valuesMatch && filesMatch,
    };
    if (valuesMatch) return { id, props: outs };

    // Drift: the live values become the inputs, so the next preview shows the way back.
    const inputs = Object.fromEntries(
      Object.entries(props).filter(([key]) => !OUTPUT_KEYS.includes(key)),
    );
    if (desired.max !== undefined) inputs.max = live.values[CONNTRACK_MAX_KEY];
    if (desired.buckets !== undefined) inputs.buckets = live.values[CONNTRACK_BUCKETS_KEY];
    inputs.settings = liveSettings;
    return { id, props: outs, inputs };
  },

  async update(_id: string, olds: Props, news: Props): Promise<{ outs: Props }> {
    const host = await openHost(news.connection, olds.hostKey);
    return { outs: await apply(host, news, olds) };
  },

  async delete(_id: string, props: Props): Promise<void> {
    const host = await openHost(props.connection, props.hostKey);
    const previous = (props.previous ?? {}) as Record<string, number>;
    const live = await readLive(host, Object.keys(previous));
    await writeValues(host, live, previous);
    await host.run(["rm", "-f", "--", ...CONNTRACK_PATHS]);
  },
};

interface LiveState {
  /** Values by full key; a key the kernel does not have is absent. */
  readonly values: Record<string, number>;
  /** Keys (and "hashsize" for the module parameter) this host lets us write. */
  readonly writable: ReadonlySet<string>;
}

/**
 * Loads nf_conntrack when its keys are missing, then prints each key's value and whether it is
 * writable. Arguments: the full sysctl keys.
 */
const READ_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
if [ ! -e /proc/sys/net/netfilter/nf_conntrack_max ]; then
  modprobe nf_conntrack || { echo "modprobe nf_conntrack failed" >&2; exit 3; }
fi
for key; do
  path=/proc/sys/$(printf '%s' "$key" | tr . /)
  [ -r "$path" ] || continue
  printf 'value %s %s\\n' "$key" "$(cat "$path")"
  # /proc/sys applies its own mode bits, so test -w is false for root on a read-only key.
  [ -w "$path" ] && printf 'writable %s\\n' "$key"
done
[ -w ${HASHSIZE_PARAMETER_PATH} ] && echo "writable hashsize"
exit 0
`;

/**
 * Writes values. Arguments: KEY=VALUE pairs, where KEY is a full sysctl key or "hashsize" for
 * the module parameter.
 */
const WRITE_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
for pair; do
  key=\${pair%%=*}
  value=\${pair#*=}
  if [ "$key" = hashsize ]; then path=${HASHSIZE_PARAMETER_PATH}
  else path=/proc/sys/$(printf '%s' "$key" | tr . /); fi
  printf '%s\\n' "$value" > "$path" || { echo "writing $value to $path failed" >&2; exit 3; }
done
`;

async function readLive(host: Host, settingKeys: readonly string[]): Promise<LiveState> {
  const keys = [CONNTRACK_MAX_KEY, CONNTRACK_BUCKETS_KEY, CONNTRACK_COUNT_KEY, ...settingKeys];
  const result = await host.run(["sh", "-c", READ_SCRIPT, "sh", ...keys], { allowFailure: true });
  if (result.code !== 0) {
    throw new IptablesError(
      "COMMAND_FAILED",
      `${host.address}: reading the conntrack settings failed (exit ${result.code}): ` +
        `${tailLines(result.stderr || result.stdout)}; check that the kernel has nf_conntrack`,
      { details: { host: host.address } },
    );
  }
  const values: Record<string, number> = {};
  const writable = new Set<string>();
  for (const line of result.stdout.split("\n")) {
    const [kind, key, value] = line.split(" ");
    if (kind === "value" && /^\d+$/.test(value ?? "")) values[key] = Number(value);
    if (kind === "writable") writable.add(key);
  }
  return { values, writable };
}

/** Writes `values` where they differ from `live`; buckets go through `hashsize` when needed. */
async function writeValues(
  host: Host,
  live: LiveState,
  values: Record<string, number>,
): Promise<void> {
  const pairs: string[] = [];
  for (const [key, value] of Object.entries(values)) {
    if (live.values[key] === value) continue;
    if (key === CONNTRACK_BUCKETS_KEY && !live.writable.has(key)) pairs.push(`hashsize=${value}`);
    else pairs.push(`${key}=${value}`);
  }
  if (pairs.length === 0) return;
  const result = await host.run(["sh", "-c", WRITE_SCRIPT, "sh", ...pairs], { allowFailure: true });
  if (result.code !== 0) {
    throw new IptablesError(
      "COMMAND_FAILED",
      `${host.address}: setting ${pairs.join(" ")} failed: ${tailLines(result.stderr || result.stdout)}`,
      { details: { host: host.address } },
    );
  }
}

function desiredOf(props: Props): ConntrackSettings {
  return {
    max: typeof props.max === "number" ? props.max : undefined,
    buckets: typeof props.buckets === "number" ? props.buckets : undefined,
    settings: (props.settings ?? {}) as Record<string, number>,
  };
}

/** Returns the desired values by full key. */
function desiredValues(desired: ConntrackSettings): Record<string, number> {
  const values: Record<string, number> = { ...(desired.settings ?? {}) };
  if (desired.max !== undefined) values[CONNTRACK_MAX_KEY] = desired.max;
  if (desired.buckets !== undefined) values[CONNTRACK_BUCKETS_KEY] = desired.buckets;
  return values;
}

/**
 * Raises SYSCTL_READ_ONLY when a desired key cannot be written here, and INVALID_INPUT when the
 * kernel does not have it. nf_conntrack_max is writable exactly in the initial network
 * namespace (nf_conntrack_standalone.c makes it 0444 elsewhere), so it also decides whether the
 * bucket count may go through the module parameter, which is shared by every namespace.
 */
function checkWritable(host: Host, live: LiveState, values: Record<string, number>): void {
  const sizing = [CONNTRACK_MAX_KEY, CONNTRACK_BUCKETS_KEY].filter((key) => key in values);
  if (sizing.length > 0 && !live.writable.has(CONNTRACK_MAX_KEY)) {
    throw new IptablesError(
      "SYSCTL_READ_ONLY",
      `${host.address}: ${sizing.join(" and ")} cannot be set here because the kernel makes conntrack ` +
        `sizing read-only outside the initial network namespace, so this host is a container or ` +
        `runs in a network namespace of its own. Set max and buckets on the machine that runs it ` +
        `(the container host or hypervisor), for example with a ConntrackSysctl for that machine, ` +
        `and leave them out here; settings such as nf_conntrack_tcp_timeout_established still work here`,
      { details: { host: host.address, keys: sizing } },
    );
  }
  for (const key of Object.keys(values)) {
    if (!(key in live.values)) {
      throw new IptablesError(
        "INVALID_INPUT",
        `${host.address}: the kernel (${key}) has no such conntrack key: check its spelling, or ` +
          `whether this kernel version has it (ls /proc/sys/net/netfilter)`,
        { details: { field: "settings", key, host: host.address } },
      );
    }
    const writable =
      live.writable.has(key) || (key === CONNTRACK_BUCKETS_KEY && live.writable.has("hashsize"));
    if (!writable) {
      throw new IptablesError(
        "SYSCTL_READ_ONLY",
        `${host.address}: ${key} is read-only here: set it on the machine that runs this host ` +
          `(the container host or hypervisor), or leave it out`,
        { details: { host: host.address, keys: [key] } },
      );
    }
  }
}

/**
 * Applies `inputs`: records the previous values of newly managed keys, restores the keys no
 * longer managed, writes the desired values and the boot files, and returns the outputs read
 * back from the host.
 */
async function apply(host: Host, inputs: Props, olds: Props | undefined): Promise<Props> {
  const desired = desiredOf(inputs);
  const values = desiredValues(desired);
  const oldPrevious = (olds?.previous ?? {}) as Record<string, number>;
  const live = await readLive(host, [
    ...new Set([...Object.keys(values), ...Object.keys(oldPrevious)]),
  ]);
  checkWritable(host, live, values);
  warnAboutRatio(host, desired, live);

  const previous: Record<string, number> = {};
  for (const key of Object.keys(values)) previous[key] = oldPrevious[key] ?? live.values[key];
  const released = Object.fromEntries(
    Object.entries(oldPrevious).filter(([key]) => !(key in values)),
  );
  await writeValues(host, live, { ...released, ...values });

  const persistedFiles = await writeBootFiles(host, inputs, live);
  const after = await readLive(host, Object.keys(desired.settings ?? {}));
  const applied = after.values[CONNTRACK_BUCKETS_KEY];
  if (desired.buckets !== undefined && applied !== desired.buckets) {
    console.log(
      `warning: ${host.address}: the kernel rounded buckets ${desired.buckets} to ${applied} (a whole ` +
        `number of memory pages of bucket heads)`,
    );
  }
  warnWhenFull(host, after);
  return {
    ...inputs,
    ...liveOutputs(after, desired),
    previous,
    persistedFiles,
    inSync: true,
    hostKey: host.hostKey,
  };
}

/** Writes the boot files when `persist` is on (only those whose content changed) and removes the rest. */
async function writeBootFiles(host: Host, inputs: Props, live: LiveState): Promise<string[]> {
  const files = expectedFiles(inputs, live);
  for (const file of files) await host.writeFileAtomic(file.path, file.content, file.mode);
  const stale = CONNTRACK_PATHS.filter((path) => !files.some((file) => file.path === path));
  if (stale.length > 0) await host.run(["rm", "-f", "--", ...stale]);
  return files.map((file) => file.path);
}

function expectedFiles(inputs: Props, live: LiveState) {
  if (inputs.persist === false) return [];
  return renderConntrackFiles(desiredOf(inputs), live.writable.has(CONNTRACK_BUCKETS_KEY));
}

async function persistedFilesMatch(host: Host, props: Props, live: LiveState): Promise<boolean> {
  const files = expectedFiles(props, live);
  for (const path of CONNTRACK_PATHS) {
    const content = await host.readFile(path);
    const expected = files.find((file) => file.path === path)?.content;
    if (content !== expected) return false;
  }
  return true;
}

function liveOutputs(live: LiveState, desired: ConntrackSettings): Props {
  return {
    count: live.values[CONNTRACK_COUNT_KEY] ?? 0,
    liveMax: live.values[CONNTRACK_MAX_KEY],
    liveBuckets: live.values[CONNTRACK_BUCKETS_KEY],
    liveSettings: pick(live.values, Object.keys(desired.settings ?? {})),
  };
}

function pick(values: Record<string, number>, keys: readonly string[]): Record<string, number> {
  return Object.fromEntries(keys.filter((key) => key in values).map((key) => [key, values[key]]));
}

function warnAboutRatio(host: Host, desired: ConntrackSettings, live: LiveState): void {
  const max = desired.max ?? live.values[CONNTRACK_MAX_KEY];
  const buckets = desired.buckets ?? live.values[CONNTRACK_BUCKETS_KEY];
  // With both given, check() has already warned.
  if (
    max === undefined ||
    buckets === undefined ||
    (desired.max !== undefined && desired.buckets !== undefined)
  )
    return;
  const warning = sizingWarning(max, buckets);
  if (warning !== undefined) console.log(`warning: ${host.address}: ${warning}`);
}

/** Warns when more than 75% of the conntrack table is in use, as hashlimit tables do. */
export function warnWhenFull(host: Pick<Host, "address">, live: Pick<LiveState, "values">): void {
  const count = live.values[CONNTRACK_COUNT_KEY];
  const max = live.values[CONNTRACK_MAX_KEY];
  if (count === undefined || max === undefined || max === 0 || count <= max * ENTRIES_WARNING_RATIO)
    return;
  console.log(
    `warning: ${host.address}: the conntrack table is ${Math.round((count / max) * 100)}% full ` +
      `(${count} of ${max} entries); when it fills, the kernel drops new connections ` +
      `("nf_conntrack: table full, dropping packet"): raise max`,
  );
}
