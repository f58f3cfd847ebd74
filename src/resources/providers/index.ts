/**
 * The provider implementations the serialised shims load at call time, by resource type.
 * This module path is part of every stack's state, so it must not move.
 */
import { chainProvider } from "./chain";
import { conntrackSysctlProvider } from "./conntrack-sysctl";
import { persistenceUnitProvider } from "./persistence-unit";
import { ruleProvider } from "./rule";

export const providers = {
  Chain: chainProvider,
  Rule: ruleProvider("Rule"),
  HashlimitRule: ruleProvider("HashlimitRule"),
  PersistenceUnit: persistenceUnitProvider,
  ConntrackSysctl: conntrackSysctlProvider,
};
