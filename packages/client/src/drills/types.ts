/** A drill file as the schema (schema.ts) admits it, before names and durations are resolved. */

export type Duration = string | number;
export type VmSet = string[] | 'all';

export interface HostRef {
  host?: string;
  hostOf?: string;
}

export interface Condition {
  vmsRunning?: VmSet;
  leader?: true;
  hostsUp?: VmSet;
  hostDown?: string;
  hostRunsNothing?: string;
  hostEmpty?: string;
  vmOn?: { vm: string; host: string };
  vmNotOn?: { vm: string; host: string };
  migrationsDone?: true;
}

export interface StepActions {
  create?: { vms?: VmSet; start?: boolean } | null;
  start?: { vms?: VmSet } | null;
  migrate?: { vm: string; to?: string; kind?: 'live' | 'quick'; wait?: boolean };
  drain?: HostRef & { wait?: boolean };
  undrain?: HostRef;
  'kill-agent'?: HostRef;
  'restart-agent'?: HostRef;
  'kill-leader'?: null;
  'kill-daemon'?: string;
  'restart-daemons'?: null;
  partition?: { daemons?: string[]; minority?: true };
  isolate?: HostRef;
  heal?: null;
  'slow-link'?: { from: string; to?: string; delay?: Duration; drop?: number };
  'fill-disk'?: HostRef & { full?: boolean };
  stall?: { process: string; duration: Duration };
  writes?: 'start' | 'stop';
  'start-traffic'?: string;
  'mark-traffic'?: { traffic: string; phase: 'before' | 'during' | 'after' };
  'stop-traffic'?: string;
  hold?: Duration;
  wait?: Condition & { within: Duration };
  assert?: Condition;
}

export type StepKind = keyof StepActions;
export type Step = StepActions & { label?: string };

export interface Expectations {
  vmsRunning?: { vms?: VmSet; within: Duration; after: string };
  leaderWithin?: { within: Duration; after: string };
  requestsLost?: { traffic: string; below: number };
  migrationDowntime?: { vm?: string; below: Duration };
  fencedWithin?: { host: string; within: Duration; after: string };
}
export type ExpectationKind = keyof Expectations;

export interface HostSpec {
  name: string;
  memory?: string;
  cpus?: number;
}

export interface VmSpec {
  name: string;
  count?: number;
  memory?: string;
  cpus?: number;
  ha?: 'high' | 'medium' | 'low' | 'none';
  host?: string;
  switch?: string;
  bootMs?: number;
}

export interface DrillBody {
  farm: {
    daemons: number;
    hosts: number | HostSpec[];
    capacity?: { memory?: string; cpus?: number };
    timing?: 'fast' | 'default';
    clusterStorage?: boolean;
    switches?: { name: string; type?: 'external' | 'internal' | 'private' }[];
  };
  workload?: {
    vms?: VmSpec[];
    nlb?: { name: string; vip: string; switch: string; members: string[] }[];
    traffic?: { name: string; nlb: string; rate: number; duration: Duration }[];
    writes?: { concurrency?: number; limit?: number };
  };
  timeline: Step[];
  expect?: Expectations[];
}

export interface DrillFile extends DrillBody {
  name: string;
  description?: string;
  quick?: Partial<DrillBody>;
}
