/**
 * The seam every compared tool implements: what the benchmark needs from a tool.
 */
import type { Lab, LabHost } from "../../src/lab";
import type { Variant } from "./recipe";

export type Pass = "first" | "second";

/** The tool's own account of one apply. */
export interface ApplyReport {
  /** True when the tool itself reported that it changed nothing. */
  readonly unchanged: boolean;
  /** That report in the tool's own terms, such as "changed=0" or "exit 0". */
  readonly summary: string;
}

export type ToolKey = "floor" | "library" | "ansible" | "puppet";

export interface Tool {
  readonly key: ToolKey;
  /** Name in the printed tables. */
  readonly name: string;
  /**
   * The managed filter-table lines the tool leaves on `host` after a first apply from a clean
   * host, in iptables-save order.
   */
  expectedLines(target: Variant, host: LabHost): readonly string[];
  /**
   * Forgets what earlier runs left in the tool's own state (a stack, a vardir, SSH control
   * sockets), so the next apply is a first apply. Not timed.
   */
  reset(lab: Lab, hosts: readonly LabHost[], target: Variant): Promise<void>;
  /**
   * Applies `target` to every host at once; this call is what the benchmark times. `pass` is
   * "first" on hosts just reset, "second" right after a first apply, when nothing should change.
   */
  apply(lab: Lab, hosts: readonly LabHost[], target: Variant, pass: Pass): Promise<ApplyReport>;
  /** Releases what the tool holds: processes, temporary files. */
  close(): Promise<void>;
}
