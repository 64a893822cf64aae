import { GUEST_EXECUTES } from '@hyperfarm/api';

/**
 * What a drill run records: every fact the verdicts are computed from, each with `t`, the
 * milliseconds since the run began on the farm's clock (one machine: the runner's and the
 * processes' clocks are the same clock; agents' own event times are converted to it).
 */
export type Observation =
  | { t: number; type: 'step-start'; index: number; kind: string; label?: string; detail?: string }
  | { t: number; type: 'step-end'; index: number; ok: boolean; error?: string; detail?: string }
  /** A VM as the daemons report it (their Watch stream). */
  | { t: number; type: 'vm'; vm: string; state: string; host: string }
  /** A host as the daemons report it. */
  | { t: number; type: 'host'; host: string; state: string }
  /** A VM as its host's own agent reports it (that agent's WatchEvents stream). */
  | { t: number; type: 'agent'; host: string; vm: string; state: string; event: string }
  /** The host's agent process died (killed by the runner): it runs nothing from now on. */
  | { t: number; type: 'agent-gone'; host: string }
  /** A fault put on a host or taken off it; `host` empty for daemon-only faults. */
  | { t: number; type: 'fault'; what: string; host?: string; on: boolean }
  | { t: number; type: 'leader'; leader: string }
  /** One write of the background writer or a create step: acknowledged or not. */
  | { t: number; type: 'write'; name: string; ok: boolean; error?: string }
  | {
      t: number;
      type: 'traffic';
      name: string;
      started: number;
      completed: number;
      lost: number;
      reset: number;
    }
  | {
      t: number;
      type: 'migration';
      id: string;
      vm: string;
      phase: string;
      downtimeMs: number;
      error: string;
      from: string;
      to: string;
    }
  /** The VMs the farm holds at the end (a linearizable read). */
  | { t: number; type: 'final'; vms: string[] };

export type ObservationOf<K extends Observation['type']> = Extract<Observation, { type: K }>;

/** VM states in which a guest executes, as the states arrive here: plain strings. */
export const EXECUTING: ReadonlySet<string> = GUEST_EXECUTES;

export const of = <K extends Observation['type']>(obs: Observation[], type: K): ObservationOf<K>[] =>
  obs.filter((o): o is ObservationOf<K> => o.type === type);
