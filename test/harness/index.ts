export { CheckFailedError, Deployment, DeploymentError } from "./deployment";
export type {
  CallCounts,
  DeploymentOptions,
  OperationResult,
  Program,
  ResourceState,
  Step,
  StepOp,
} from "./deployment";
export { fixtureProject, REPO_ROOT } from "./fixture";
export { ProviderServer, ProviderCallError } from "./provider-server";
export { isSecret, stripSecrets, SECRET_SIG, SIG_KEY, UNKNOWN } from "./wire";
