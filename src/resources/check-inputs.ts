/**
 * The first steps every provider's check() shares: inputs with defaults filled in, the
 * connection checked, and the zod schema applied.
 */
import type { z } from "zod";
import { checkConnection } from "./connection";
import { zodFailures, type CheckFailure } from "./failures";
import { containsUnknown } from "./unknown";

type Props = Record<string, unknown>;

/** The result of `parseInputs`: the parsed inputs, or undefined when the schema failed. */
export interface ParsedInputs {
  readonly inputs: Props | undefined;
  /** The raw inputs with defaults, as failures quote them. */
  readonly input: Props;
  readonly failures: CheckFailure[];
}

/**
 * Fills `defaults` into `news` (leaving out `__provider`, undefined values and `outputKeys`),
 * checks the connection unless it is still unknown, and parses the rest with `schema`.
 */
export function parseInputs(
  news: Props,
  defaults: Readonly<Props>,
  outputKeys: readonly string[],
  schema: z.ZodType,
): ParsedInputs {
  const input: Props = { ...defaults };
  for (const [key, value] of Object.entries(news)) {
    if (key !== "__provider" && value !== undefined && !outputKeys.includes(key))
      input[key] = value;
  }
  const failures: CheckFailure[] = [];
  if (!containsUnknown(input.connection)) failures.push(...checkConnection(input.connection));

  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    return {
      inputs: undefined,
      input,
      failures: [...failures, ...zodFailures(parsed.error, input)],
    };
  }
  return { inputs: parsed.data as Props, input, failures };
}
