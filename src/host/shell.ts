/**
 * Turning argv into the one command string that SSH `exec` sends to the login shell.
 *
 * Each argument is single-quoted, the only POSIX shell quoting in which no character is special,
 * so a comment, a LOG prefix or a chain name reaches the program as one literal argument.
 * The library's scripts are constant text; the values they work on travel as positional
 * arguments or on standard input, never inside the script.
 */
import { IptablesError, quoteForMessage } from "../errors";

/** Characters that need no quoting in any POSIX shell. */
const PLAIN = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Quotes one argument for a POSIX shell. Raises INVALID_INPUT for a NUL byte, which no
 * argument can contain.
 */
export function quoteArgument(argument: string): string {
  if (argument.includes("\u0000")) {
    throw new IptablesError(
      "INVALID_INPUT",
      `command argument ${quoteForMessage(argument)} contains a NUL byte, which no command ` +
        `argument can carry: remove it`,
      { details: { field: "argv" } },
    );
  }
  if (PLAIN.test(argument)) return argument;
  return `'${argument.replace(/'/g, `'\\''`)}'`;
}

/** Renders argv as a command line for a POSIX shell. */
export function renderCommand(argv: readonly string[]): string {
  if (argv.length === 0) {
    throw new IptablesError("INVALID_INPUT", "command is empty: pass at least the program name", {
      details: { field: "argv" },
    });
  }
  return argv.map(quoteArgument).join(" ");
}

/** Prefixes argv with `sudo -n --` when `sudo` is set; `-n` fails instead of asking a password. */
export function withSudo(argv: readonly string[], sudo: boolean): string[] {
  return sudo ? ["sudo", "-n", "--", ...argv] : [...argv];
}

/**
 * Builds the argv that runs a constant `sh` script with positional arguments:
 * `sh -c SCRIPT NAME ARGS`. Inside the script `$0` is `name` and `$1...` are `args`.
 */
export function scriptArgv(script: string, name: string, args: readonly string[]): string[] {
  return ["sh", "-c", script, name, ...args];
}
