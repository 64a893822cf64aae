export { RaftNode, type RaftNodeOptions, type StateMachine } from './raft-node.js';
export { RequestTimeoutError, NodeStoppedError } from './errors.js';
export { RaftMetrics } from './metrics.js';
