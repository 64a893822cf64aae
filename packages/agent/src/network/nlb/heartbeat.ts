import type { PortRule } from './config.js';

// What an NLB member tells the others every heartbeat period (and at once when something
// changes). Everything a member needs to compute the same bucket map as the others is in here.

/** A member's advertised settings for one port rule. */
export interface RuleAdvert {
  /** Its load weight for the rule; 0 while it drains the rule or the whole host. */
  weight: number;
  /** Its handling priority for single-host rules. */
  handling: number;
  /** False while it drains or disables the rule: it takes no new connections of it. */
  enabled: boolean;
}

export type HeartbeatState = 'converging' | 'converged' | 'leaving';

export interface Heartbeat {
  vip: number;
  /** The member VM that sends it. */
  member: string;
  priority: number;
  state: HeartbeatState;
  /** Drainstop under way: it takes no new connections and is not the default host. */
  draining: boolean;
  /** The members it counts alive, priority p as bit p-1. */
  view: number;
  /** A hash of the cluster's port rules: members whose rules differ do not converge together. */
  rulesHash: number;
  /** A hash of its view and of every member's advertised settings: equal hashes mean agreement. */
  agreement: number;
  rules: RuleAdvert[];
  /** Per rule, the bucket owners it uses now (null before its first convergence). */
  maps: (number[] | null)[];
  /** Per rule, the buckets in which it tracks connections. */
  connBuckets: number[][];
  /**
   * The members whose confirmation of its map it waits for before it starts new connections in
   * the buckets it gained (bit p-1 for priority p): they answer at once rather than at their next
   * heartbeat. Absent from members that predate it, as 0.
   */
  awaiting?: number | undefined;
}

const FNV_OFFSET = 0x811c9dc5;

/** FNV-1a over a list of 32-bit numbers. */
export function hashNumbers(values: Iterable<number>): number {
  let h = FNV_OFFSET;
  for (const v of values) {
    for (let s = 0; s < 32; s += 8) {
      h ^= (v >>> s) & 0xff;
      h = Math.imul(h, 0x01000193);
    }
  }
  return h >>> 0;
}

const FILTERING = { multiple: 1, single: 2, disabled: 3 } as const;
const PROTOCOL = { tcp: 1, udp: 2, both: 3 } as const;
const AFFINITY = { none: 1, single: 2, network: 3 } as const;

export function rulesHash(rules: readonly PortRule[]): number {
  return hashNumbers(
    rules.flatMap((r) => [
      r.startPort,
      r.endPort,
      PROTOCOL[r.protocol],
      FILTERING[r.filtering],
      AFFINITY[r.affinity],
    ]),
  );
}

export const bit = (priority: number): number => (1 << (priority - 1)) >>> 0;

export function priorities(view: number): number[] {
  const out: number[] = [];
  for (let p = 1; p <= 32; p++) if (view & bit(p)) out.push(p);
  return out;
}
