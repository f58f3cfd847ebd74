// netfilter: pure rule handling, usable without Pulumi
export { parseSave, renderSave } from "./netfilter/parse";
export { canonicalRule, sameRule } from "./netfilter/canonical";
export { ruleMarker } from "./netfilter/managed";
export { MAX_CHAIN_NAME_LENGTH, planTableChange, validateChainName } from "./netfilter/plan";
export type { DesiredRule, PlanOptions, PlanStep, TableChange, TablePlan } from "./netfilter/plan";
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
