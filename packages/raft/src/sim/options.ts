import type { Verdict } from '../checker/checker.js';
import type { Violation } from './invariants.js';
import type { SimNetwork } from './network.js';
import type { ReadyDiscipline, SimNodeFactory } from './node.js';

/** Virtual time units per node tick: messages take a few units, so several fit in one tick. */
export const UNITS_PER_TICK = 10;

/**
 * Where inside the next Ready a crash strikes: before anything is written, after a random part
 * of the messages went out, after every message went out (and before a late sync, if the
 * discipline syncs late), or like that but in the first Ready that grants a vote or acknowledges
 * an append: the moment a broken edge would break its promise.
 */
export type CrashPoint = 'before-persist' | 'mid-send' | 'after-send' | 'after-promise';

export interface SimOptions {
  seed: number;
  /** Founding voters: 3 or 5. */
  nodes: number;
  factory: SimNodeFactory;
  /** Ticks of faults before the network heals. */
  chaosTicks?: number;
  /** Ticks allowed, after healing, for a leader to emerge. */
  leaderBoundTicks?: number;
  /** Ticks allowed, after a leader emerged, for a fresh proposal from each client to commit. */
  proposalBoundTicks?: number;
  clients?: number;
  keys?: number;
  /** Client operation timeout, in ticks: a write that times out has an unknown outcome. */
  opTimeoutTicks?: number;
  /** Add learners, promote them and remove voters during the chaos. */
  membership?: boolean;
  /** Take a snapshot and compact the log every this many applied entries (0: never). */
  compactEvery?: number;
  /** Scale every fault rate (0: a perfect network and no crashes). */
  chaos?: number;
  /** How each Ready is processed; the default persists and syncs before sending. */
  discipline?: ReadyDiscipline;
  /** Record a replayable trace of every event. */
  trace?: boolean;
  /** Give the linearizability search at most this many steps. */
  checkerMaxSteps?: number;
  /** Restart crashed nodes after a random downtime (scenario tests restart them by hand). */
  autoRestart?: boolean;
}

/** The options with every default filled in. */
export type ResolvedSimOptions = Required<Omit<SimOptions, 'factory' | 'discipline'>> & {
  factory: SimNodeFactory;
  discipline: Required<ReadyDiscipline>;
};

export interface SimResult {
  seed: number;
  nodes: number;
  violations: Violation[];
  linearizable: Verdict;
  ops: { total: number; ok: number; unknown: number; failed: number };
  elections: number;
  crashes: number;
  /** Ticks from healing to a leader, or -1 if none emerged. */
  ticksToLeader: number;
  committed: number;
  /** Membership changes the leader applied. */
  confChanges: number;
  /** Snapshots followers installed from a leader. */
  snapshotsInstalled: number;
  /** Leadership transfers asked for. */
  transfers: number;
  /** Client writes a follower forwarded to the leader (ForwardPropose). */
  forwarded: number;
  network: SimNetwork['stats'];
  trace: string[];
}

/** Checks the options and fills in the defaults. */
export function resolveSimOptions(options: SimOptions): ResolvedSimOptions {
  if (!Number.isInteger(options.nodes) || options.nodes < 1) {
    throw new Error(`nodes: must be a positive integer, got ${options.nodes}`);
  }
  return {
    chaosTicks: 300,
    leaderBoundTicks: 60,
    proposalBoundTicks: 40,
    clients: 3,
    keys: 3,
    opTimeoutTicks: 40,
    membership: false,
    compactEvery: 40,
    chaos: 1,
    trace: false,
    checkerMaxSteps: 2_000_000,
    autoRestart: true,
    ...options,
    discipline: { syncBeforeSend: true, leaderSendsFirst: true, ...options.discipline },
  };
}
