export { VirtualClock, Scope } from './clock.js';
export { SimNetwork, type LinkFaults } from './network.js';
export { SimHost, DEFAULT_SHAPE, type HostShape } from './host.js';
export { SimDaemon, type ReplicaConfig } from './replica.js';
export { SimAgentPort } from './agent-port.js';
export type { Violation } from './invariants.js';
export {
  FarmSimulation,
  runFarm,
  SMALL,
  LARGE,
  type FarmOptions,
  type FarmResult,
  type FarmTiming,
  type UtilisationSample,
  type DrillHandle,
} from './farm.js';
export {
  runSimDrillFile,
  runSimPlan,
  farmOptions as drillFarmOptions,
  unsupported as simUnsupported,
} from './drill/index.js';
