/** The host layer: SSH transport, remote commands, host facts, locking and safe table changes. */
export { getHost, closeAllHosts } from "./host";
export type { GetHostOptions, Host, RunOptions } from "./host";
export type { HostConnection, ProxyConnection } from "./connection";
export type { ApplyOptions, ApplyResult } from "./apply";
export { DEFAULT_CONFIRM_TIMEOUT_SECONDS } from "./apply";
export type { RollbackMode } from "./rollback-scope";
export type { CommandResult } from "./exec";
export type { HostFacts, TableBinaries } from "./facts";
export { setHostEventSink } from "./events";
export type { HostEvent, HostEventListener } from "./events";
