export { SimRng } from './rng.js';
export { SimNetwork, RELIABLE, type NetworkFaults } from './network.js';
export { SimDisk, cloneStorage, type DiskOp } from './disk.js';
export { describeMessage } from './trace.js';
export { randomNetworkFaults, randomPartition } from './faults.js';
export { InvariantChecker, entryKey, type Violation } from './invariants.js';
export { KvStateMachine, encodeCommand, decodeCommand, type KvCommand } from './kv-app.js';
export type { SimNode, SimNodeFactory, SimNodeOptions, ReadyDiscipline } from './node.js';
export { RawSimNode, rawNodeFactory, type SimRaftConfig } from './raw-node-adapter.js';
export {
  Simulation,
  runSimulation,
  UNITS_PER_TICK,
  type CrashPoint,
  type SimOptions,
  type SimResult,
} from './simulation.js';
