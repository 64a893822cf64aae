import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** RaftNode's Prometheus metrics, registered on the registry the program passes in. */
export class RaftMetrics {
  readonly term: Gauge;
  readonly isLeader: Gauge;
  readonly leaderChanges: Counter;
  readonly commitLatency: Histogram;
  readonly fsyncSeconds: Histogram;
  readonly entriesPerFsync: Histogram;
  readonly appliedIndex: Gauge;
  readonly droppedMessages: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.term = new Gauge({ name: 'raft_term', help: 'Current Raft term', registers });
    this.isLeader = new Gauge({ name: 'raft_is_leader', help: '1 when this node leads', registers });
    this.leaderChanges = new Counter({
      name: 'raft_leader_changes_total',
      help: 'Times this node saw the leader change',
      registers,
    });
    this.commitLatency = new Histogram({
      name: 'raft_commit_latency_seconds',
      help: 'From propose() to the entry being applied',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.fsyncSeconds = new Histogram({
      name: 'raft_fsync_seconds',
      help: 'Duration of each synced LevelDB batch',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.entriesPerFsync = new Histogram({
      name: 'raft_entries_per_fsync',
      help: 'Log entries written by each synced batch',
      buckets: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers,
    });
    this.appliedIndex = new Gauge({ name: 'raft_applied_index', help: 'Last applied log index', registers });
    this.droppedMessages = new Counter({
      name: 'raft_dropped_messages_total',
      help: "Peers' messages the core refused as malformed or out of place, by error",
      labelNames: ['reason'],
      registers,
    });
  }
}
