// The typed client library: @hyperfarm/client.
export * from './client/index.js';
// The CLI's pieces, for embedding and tests.
export { vhdCommand, runVhd, runProgram, processIo, UsageError, type CliIo } from './cli/vhd.js';
export { farmCommand, membersCommand } from './cli/farm.js';
export { status } from '@hyperfarm/api';
export { hyperfarmProgram } from './cli/program.js';
export { bashCompletion } from './cli/completion.js';
export { ProcessFarm, PROGRAMS, type ProcessFarmOptions } from './farm/process-farm.js';
export { LoopbackNetwork, NetnsNetwork, netnsUnavailable, type FarmNetwork } from './farm/network.js';
export { runLauncher } from './farm/launcher.js';
// The drill runner: drill files, their verdicts and reports (docs/drills.md).
export {
  runDrillFile,
  runPlan,
  loadDrill,
  DrillFileError,
  DRILL_SCHEMA,
  judge,
  buildReport,
  renderHtml,
  summary,
  type DrillReport,
  type Verdict,
  type Observation,
  type Plan,
  type RunDrillOptions,
  // What the farm simulator's drill runner (@hyperfarm/sim, `drill run --sim`) shares.
  writeReport,
  EXECUTING,
  ms,
  describeCondition,
  playTimeline,
  until,
  Writer,
  createVmRequest,
  nlbClusterRequest,
  nlbMemberRequests,
  switchRequest,
  trafficRequest,
  trafficTotals,
  writerVmConfig,
  type DrillOutcome,
  type SimDrillOptions,
  type RunSimDrill,
  type FarmProbe,
  type RunClock,
  type Condition,
  type HostRef,
  type Step,
  type StepKind,
} from './drills/index.js';
