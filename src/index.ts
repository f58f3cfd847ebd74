// netfilter: pure rule handling, usable without Pulumi
export { parseSave, renderSave } from "./netfilter/parse";
export { canonicalRule, sameRule } from "./netfilter/canonical";
export { ruleMarker } from "./netfilter/managed";
export { MAX_CHAIN_NAME_LENGTH, planTableChange, validateChainName } from "./netfilter/plan";
export type { DesiredRule, PlanOptions, PlanStep, TableChange, TablePlan } from "./netfilter/plan";
export { simulateRateLimit } from "./netfilter/simulate";
export type {
  Arrival,
  ArrivalEvent,
  RateLimitSpec,
  SimulateOptions,
  SimulationResult,
} from "./netfilter/simulate";
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

// resources: the Pulumi dynamic resources and the RateLimit component
export { Chain } from "./resources/chain";
export type { ChainArgs } from "./resources/chain";
export { Rule } from "./resources/rule";
export type { RuleArgs } from "./resources/rule";
export { HashlimitRule } from "./resources/hashlimit-rule";
export type { HashlimitMode, HashlimitRuleArgs } from "./resources/hashlimit-rule";
export type { MatchArgs, RulePlacementArgs, TargetArgs } from "./resources/rule-inputs";
export { RateLimit } from "./resources/rate-limit";
export type {
  RateLimitArgs,
  RateLimitFamily,
  RateLimitHookArgs,
  RateLimitLogArgs,
} from "./resources/rate-limit";
export { PersistenceUnit } from "./resources/persistence-unit";
export type { PersistenceUnitArgs } from "./resources/persistence-unit";
export { ConntrackSysctl } from "./resources/conntrack-sysctl";
export type { ConntrackSysctlArgs } from "./resources/conntrack-sysctl";
export type { ConnectionArgs } from "./resources/connection";
export { deriveMarkerId } from "./resources/marker-id";
