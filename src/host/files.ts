/**
 * Reading and atomically replacing small text files on a host (boot persistence files).
 */
import { IptablesError, quoteForMessage } from "../errors";
import { runScript, type HostContext } from "./commands";
import { describeTarget } from "./connection";

const READ_FILE_SCRIPT = `
if [ -f "$1" ]; then echo present; exec cat -- "$1"
elif [ -e "$1" ]; then echo not-a-file
else echo absent; fi
`;

/**
 * Writes standard input to a temporary file beside the target, and renames it over the target
 * unless content and mode are already the same. Prints "changed" or "unchanged".
 * Arguments: path, mode in octal without a leading zero (as `stat -c %a` prints it).
 */
const WRITE_FILE_SCRIPT = `
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin:$PATH
path=$1 mode=$2
dir=$(dirname -- "$path") && base=$(basename -- "$path") || exit 3
mkdir -p -- "$dir" || exit 3
tmp=$(mktemp "$dir/.$base.XXXXXX") || exit 4
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" || exit 5
if [ -f "$path" ] && [ "$(stat -c %a -- "$path")" = "$mode" ] &&
   [ "$(sha256sum < "$tmp")" = "$(sha256sum < "$path")" ]; then
  echo unchanged
  exit 0
fi
chmod "$mode" "$tmp" || exit 6
# The file must survive a power cut right after the rename: boot persistence reads it.
sync -- "$tmp" 2>/dev/null
mv -f -- "$tmp" "$path" || exit 7
echo changed
`;

/** Reads a text file; undefined when it does not exist. */
export async function readFile(ctx: HostContext, path: string): Promise<string | undefined> {
  checkPath(path);
  const result = await runScript(ctx, `read ${path}`, READ_FILE_SCRIPT, [path]);
  const newline = result.stdout.indexOf("\n");
  const status = result.stdout.slice(0, newline === -1 ? undefined : newline);
  if (status === "absent") return undefined;
  if (status !== "present") {
    throw new IptablesError(
      "COMMAND_FAILED",
      `${quoteForMessage(path)} on ${describeTarget(ctx.conn)} is not a regular file: remove it ` +
        `or choose another path`,
      { details: { host: ctx.conn.host, path } },
    );
  }
  return result.stdout.slice(newline + 1);
}

/**
 * Replaces a file atomically (temporary file and rename, creating missing folders) when its
 * content or mode differs. Returns whether the file changed.
 */
export async function writeFileAtomic(
  ctx: HostContext,
  path: string,
  content: string,
  mode = 0o644,
): Promise<boolean> {
  checkPath(path);
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new IptablesError(
      "INVALID_INPUT",
      `file mode ${String(mode)} is invalid: use 0 to 0o7777`,
      {
        details: { field: "mode", value: mode },
      },
    );
  }
  const result = await runScript(
    ctx,
    `write ${path}`,
    WRITE_FILE_SCRIPT,
    [path, mode.toString(8)],
    {
      input: content,
    },
  );
  return result.stdout.trim() === "changed";
}

function checkPath(path: string): void {
  // eslint-disable-next-line no-control-regex
  if (!path.startsWith("/") || /[\u0000-\u001f]/.test(path) || path.endsWith("/")) {
    throw new IptablesError(
      "INVALID_INPUT",
      `file path ${quoteForMessage(path)} is invalid: use an absolute path of a file, without ` +
        `control characters`,
      { details: { field: "path", value: path } },
    );
  }
}
