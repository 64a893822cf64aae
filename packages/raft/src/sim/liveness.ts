import type { Cluster } from './cluster.js';
import { isAlive, type Member } from './member.js';
import { UNITS_PER_TICK } from './options.js';
import type { Client, Workload } from './workload.js';

/** How long a post-heal probe write waits before the client retries it. */
const PROBE_ATTEMPT_TICKS = 8;

/** Advances virtual time by one unit, with or without injected faults and new client operations. */
export type Step = (opts: { faults: boolean; clients: boolean }) => void;

/**
 * The phase after the chaos: heal everything, then demand progress within bounds — a leader
 * followed by a majority, and a committed write from every client.
 */
export class Liveness {
  constructor(
    private readonly cluster: Cluster,
    private readonly workload: Workload,
    private readonly step: Step,
  ) {}

  /** A reliable network, every server back up (at the next unit), nobody paused. */
  heal(): void {
    const { cluster } = this;
    cluster.network.heal();
    cluster.network.faults = {
      drop: 0,
      duplicate: 0,
      minDelay: 1,
      maxDelay: 3,
      longDelayChance: 0,
      longDelay: 0,
    };
    for (const m of cluster.members.values()) {
      m.pausedUntil = 0;
      m.crashIn = undefined;
      m.crashWhen = undefined;
      if (!isAlive(m) && !m.removed) m.restartAt = cluster.now + 1;
    }
    cluster.log('heal: network healed, every node restarted');
  }

  /** Runs until a leader followed by a majority exists, for at most `boundTicks`. */
  awaitLeader(boundTicks: number, clients = false): Member | undefined {
    const deadline = this.cluster.now + boundTicks * UNITS_PER_TICK;
    while (this.cluster.now < deadline) {
      if (this.majorityFollows()) return this.cluster.leaderMember();
      this.step({ faults: false, clients });
    }
    return this.majorityFollows() ? this.cluster.leaderMember() : undefined;
  }

  /** Runs, without new operations, until no client waits or `ticks` have passed. */
  settle(ticks: number): void {
    const end = this.cluster.now + ticks * UNITS_PER_TICK;
    while (this.cluster.now < end && this.workload.clients.some((c) => c.busy))
      this.step({ faults: false, clients: false });
  }

  /** After healing, every client's next write must commit within the bound. */
  probe(boundTicks: number): void {
    const { cluster, workload } = this;
    const { opts } = cluster;
    // Operations from before the heal finish first (at worst by their timeout).
    this.settle(opts.opTimeoutTicks + 1);
    // A leader found right at the heal may have been a stale one about to step down
    // (CheckQuorum): the probe goes to whoever leads now, found within the same bound.
    const leader = this.awaitLeader(opts.leaderBoundTicks);
    if (!leader) {
      cluster.violation('liveness', `no leader within ${opts.leaderBoundTicks} ticks on a healthy network`);
      return;
    }
    // Each client writes until one write commits, as a real client retries a refused or timed
    // out request (a leadership transfer in flight refuses proposals for a moment).
    const deadline = cluster.now + boundTicks * UNITS_PER_TICK;
    const attempts = new Map<number, number>();
    const committed = (c: Client) => c.probe !== undefined && workload.opState.get(c.probe) === 'ok';
    while (cluster.now < deadline && !workload.clients.every(committed)) {
      for (const c of workload.clients) {
        if (c.busy || committed(c) || cluster.now < c.nextAt) continue;
        c.hint = cluster.leaderMember()?.id ?? c.hint;
        attempts.set(c.id, (attempts.get(c.id) ?? 0) + 1);
        c.probe = workload.issue(c, {
          op: 'put',
          key: `k${c.id % opts.keys}`,
          value: `probe-${c.id}-${attempts.get(c.id)}`,
        });
        // A proposal can be lost without an error (a leader deposed right after accepting
        // it, a forwarded one dropped): retry well within the bound, as real clients do.
        const busy = c.busy as Client['busy']; // issue() just set it
        if (busy) busy.deadline = Math.min(busy.deadline, cluster.now + PROBE_ATTEMPT_TICKS * UNITS_PER_TICK);
      }
      this.step({ faults: false, clients: false });
    }
    for (const c of workload.clients) {
      if (!committed(c)) {
        cluster.violation(
          'liveness',
          `client ${c.id}: no write committed within ${boundTicks} ticks of a leader (${attempts.get(c.id) ?? 0} attempts, last ${c.probe === undefined ? 'never issued' : workload.opState.get(c.probe)})`,
        );
      }
    }
  }

  /** A majority of the leader's voters, alive, name it as leader. */
  private majorityFollows(): boolean {
    const { cluster } = this;
    const leader = cluster.leaderMember();
    if (!leader) return false;
    const voters = leader.conf.voters;
    let n = 0;
    for (const v of voters) {
      const m = cluster.members.get(v);
      if (m && isAlive(m) && (m.id === leader.id || (m.leader === leader.id && m.term === leader.term))) n++;
    }
    return n * 2 > voters.length;
  }
}
