// netfilter: pure rule handling, usable without Pulumi
export { parseSave, renderSave } from "./netfilter/parse";
export type {
  Backend,
  Counters,
  Family,
  RuleContext,
  SaveChain,
  SaveDump,
  SaveNote,
  SaveRule,
  SaveTable,
  TableName,
} from "./netfilter/types";
