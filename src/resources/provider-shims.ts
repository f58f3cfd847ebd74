/**
 * The providers Pulumi serialises into state as `__provider`.
 *
 * Each method only requires the implementation from the installed package when it is called,
 * so the serialised text captures no variable, no path and no secret, stays small, and keeps
 * working when the package is upgraded: refresh and destroy run the code installed then. The
 * functions must stay self-contained (no reference to anything outside their own body), because
 * Pulumi serialises each one with its captured variables.
 */
import type * as pulumi from "@pulumi/pulumi";

export const chainProviderShim: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.check(olds, news),
  diff: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.diff(id, olds, news),
  create: (inputs) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.create(inputs),
  read: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.read(id, props),
  update: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.update(id, olds, news),
  delete: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.Chain.delete(id, props),
};

export const ruleProviderShim: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.check(olds, news),
  diff: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.diff(id, olds, news),
  create: (inputs) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.create(inputs),
  read: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.read(id, props),
  update: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.update(id, olds, news),
  delete: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.Rule.delete(id, props),
};

export const hashlimitRuleProviderShim: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.check(olds, news),
  diff: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.diff(
      id,
      olds,
      news,
    ),
  create: (inputs) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.create(inputs),
  read: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.read(id, props),
  update: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.update(
      id,
      olds,
      news,
    ),
  delete: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.HashlimitRule.delete(id, props),
};

export const persistenceUnitProviderShim: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.check(
      olds,
      news,
    ),
  diff: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.diff(
      id,
      olds,
      news,
    ),
  create: (inputs) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.create(inputs),
  read: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.read(id, props),
  update: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.update(
      id,
      olds,
      news,
    ),
  delete: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.PersistenceUnit.delete(
      id,
      props,
    ),
};

export const conntrackSysctlProviderShim: pulumi.dynamic.ResourceProvider = {
  check: (olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.check(
      olds,
      news,
    ),
  diff: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.diff(
      id,
      olds,
      news,
    ),
  create: (inputs) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.create(inputs),
  read: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.read(id, props),
  update: (id, olds, news) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.update(
      id,
      olds,
      news,
    ),
  delete: (id, props) =>
    require("pulumi-iptables/resources/providers/index").providers.ConntrackSysctl.delete(
      id,
      props,
    ),
};
