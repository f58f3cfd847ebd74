/**
 * The kmod files that load a module at boot and set its parameters.
 *
 * modules-load.d(5): one module name a line, loaded by systemd-modules-load before
 * systemd-sysctl runs, so the module's sysctl keys exist when sysctl.d is applied.
 * modprobe.d(5): `options MODULE NAME=VALUE ...` lines, applied whenever the module is loaded.
 */
import { IptablesError, quoteForMessage } from "../errors";

const MODULE_NAME = /^[a-z0-9_-]{1,55}$/;
const PARAMETER_NAME = /^[a-z0-9_]{1,64}$/;
const PARAMETER_VALUE = /^[A-Za-z0-9_.,:+-]{1,200}$/;

/**
 * Renders a modules-load.d file that loads `modules`, sorted and without duplicates.
 *
 * Throws INVALID_INPUT when a module name is invalid.
 */
export function renderModulesLoad(owner: string, modules: readonly string[]): string {
  const names = [...new Set(modules.map(checkModule))].sort();
  return [headerLine(owner), ...names, ""].join("\n");
}

/**
 * Renders a modprobe.d file with one `options` line for `module`, parameters sorted by name.
 *
 * Throws INVALID_INPUT when the module, a parameter name or a value is invalid, or there are
 * no parameters.
 */
export function renderModprobeOptions(
  owner: string,
  module: string,
  parameters: Readonly<Record<string, number | string>>,
): string {
  checkModule(module);
  const names = Object.keys(parameters).sort();
  if (names.length === 0) {
    throw new IptablesError(
      "INVALID_INPUT",
      `module ${module} options are empty: give at least one parameter`,
      { details: { field: "parameters", module } },
    );
  }
  const pairs = names.map(
    (name) => `${checkParameter(name)}=${checkValue(name, parameters[name])}`,
  );
  return [headerLine(owner), `options ${module} ${pairs.join(" ")}`, ""].join("\n");
}

function headerLine(owner: string): string {
  return `# ${owner}, rendered by pulumi-iptables; the next pulumi up overwrites this file.`;
}

function checkModule(name: string): string {
  if (!MODULE_NAME.test(name)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `module name ${quoteForMessage(name)} is invalid: use lowercase letters, digits, "_" and "-"`,
      { details: { field: "module", value: name } },
    );
  }
  return name;
}

function checkParameter(name: string): string {
  if (!PARAMETER_NAME.test(name)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `module parameter ${quoteForMessage(name)} is invalid: use lowercase letters, digits and "_"`,
      { details: { field: "parameters", value: name } },
    );
  }
  return name;
}

function checkValue(name: string, value: number | string): string {
  const text = typeof value === "number" && Number.isSafeInteger(value) ? String(value) : value;
  if (typeof text !== "string" || !PARAMETER_VALUE.test(text)) {
    throw new IptablesError(
      "INVALID_INPUT",
      `module parameter ${name} value ${quoteForMessage(String(value))} is invalid: use an ` +
        `integer or a word of letters, digits and "_", ".", ",", ":", "+", "-"`,
      { details: { field: "parameters", key: name, value: String(value) } },
    );
  }
  return text;
}
