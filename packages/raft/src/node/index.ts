export {
  RAFT_PROFILES,
  RaftNode,
  type RaftNodeOptions,
  type RaftProfile,
  type SnapshotBySize,
  type StateMachine,
} from './raft-node.js';
export {
  NodeStoppedError,
  OutcomeUnknownError,
  ReadNotConfirmedError,
  RequestTimeoutError,
} from './errors.js';
export { raftApiError, raftErrorFromStatus, throwRaftApiError } from './status.js';
export { RaftMetrics } from './metrics.js';
export {
  realNodeTimers,
  type NodeStorage,
  type NodeTimers,
  type NodeTransport,
  type NodeTransportFactory,
} from './node-io.js';
