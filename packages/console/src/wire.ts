/**
 * The gateway's JSON protocol as the browser sees it (docs/console.md). Resources are the gRPC
 * JSON mapping of the API's messages, exactly what grpc-js decodes, so their types are the API's
 * generated ones.
 */
import type { pb } from '@hyperfarm/api';
import type { DrillReport } from '../../client/src/drills/report.js';

/** A drill's report.json, as `hyperfarm drill run` writes it (packages/client/src/drills). */
export type { DrillReport };
export type DrillObservation = DrillReport['observations'][number];

export type Host = pb.Host__Output;
export type Vm = pb.Vm__Output;
export type Checkpoint = pb.Checkpoint__Output;
export type Migration = pb.Migration__Output;
export type Operation = pb.Operation__Output;
export type FarmEvent = pb.Event__Output;
export type ClusterStatus = pb.ClusterStatus__Output;
export type Member = pb.Member__Output;
export type HostVerdict = pb.HostVerdict__Output;
export type ExplainPlacementResponse = pb.ExplainPlacementResponse__Output;
export type ListCheckpointsResponse = pb.ListCheckpointsResponse__Output;
export type ListHostsResponse = pb.ListHostsResponse__Output;
export type VmConfig = pb.VmConfig;
export type NlbCluster = pb.NlbCluster__Output;
export type NlbClusterState = pb.NlbClusterState__Output;
export type NlbBucketMap = pb.NlbBucketMap__Output;
export type TrafficReport = pb.TrafficReport__Output;
export type VmStateName = pb.VmState__Output;
export type VmActionName = pb.VmAction__Output;

/** A failed call, or a refused message: a gRPC status with its name and message. */
export interface WireError {
  code: number;
  codeName: string;
  message: string;
  field?: string;
  leaderId?: string;
}

export interface ConsoleEndpoint {
  id: string;
  address: string;
}

export type ServerMessage =
  | { type: 'hello'; protocol: number; daemonId: string; consoles: ConsoleEndpoint[] }
  | { type: 'result'; id: number; response: unknown }
  | { type: 'error'; id?: number; error: WireError }
  | { type: 'event'; event: FarmEvent }
  | { type: 'events'; events: FarmEvent[] }
  | { type: 'watchError'; error: WireError }
  | { type: 'resync'; fromRevision: number; reason: string }
  | { type: 'consoles'; id: number; consoles: ConsoleEndpoint[] }
  | { type: 'drills'; id: number; folder: string; reports: DrillReportEntry[] }
  | { type: 'drill'; id: number; path: string; report: DrillReport };

/** A drill report as the gateway lists it: its folder's path and its verdicts counted. */
export interface DrillReportEntry {
  path: string;
  drill: string;
  passed: boolean;
  quick: boolean;
  startedAt: string;
  durationMs: number;
  held: number;
  failed: number;
  /** Set when the folder's report.json is not a drill report. */
  error?: string;
}

export interface DrillList {
  /** The daemon's reports folder, absolute. */
  folder: string;
  reports: DrillReportEntry[];
}

export type ClientMessage =
  | { type: 'call'; id: number; method: string; request: object }
  | { type: 'watch'; fromRevision: number }
  | { type: 'unwatch' }
  | { type: 'consoles'; id: number }
  | { type: 'drills'; id: number }
  | { type: 'drill'; id: number; path: string };
