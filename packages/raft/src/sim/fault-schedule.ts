import { type ConfChange, ConfChangeType } from '../types.js';
import type { Cluster } from './cluster.js';
import { SimDisk } from './disk.js';
import { randomNetworkFaults, randomPartition } from './faults.js';
import { isRefusal } from '../core/errors.js';
import { isAlive, type Member } from './member.js';

/**
 * The chaos, drawn once per tick from the fault generator: partitions and new network faults,
 * crashes (now or armed inside the next Ready), clock pauses, membership changes and
 * leadership transfers.
 */
export class FaultSchedule {
  confChanges = 0;
  transfers = 0;
  private nextNodeNumber: number;
  private confInFlight = false;

  constructor(private readonly cluster: Cluster) {
    this.nextNodeNumber = cluster.opts.nodes + 1;
  }

  inject(): void {
    const { cluster } = this;
    const k = cluster.opts.chaos;
    if (k <= 0) return;
    const r = cluster.faultRng;
    const ids = cluster.current().map((m) => m.id);
    if (r.chance(0.03 * k)) {
      cluster.log(`network: ${randomPartition(r, ids, cluster.network)}`);
      if (r.chance(0.3)) {
        cluster.network.faults = randomNetworkFaults(r, k);
        cluster.log(`network: faults ${JSON.stringify(cluster.network.faults)}`);
      }
    }
    const live = [...cluster.members.values()].filter((m) => isAlive(m) && !m.removed);
    if (live.length > 0 && r.chance(0.012 * k)) {
      const m = r.pick(live);
      const how = r.next();
      if (how < 0.3) cluster.crash(m, 'between steps');
      else m.crashIn = how < 0.5 ? 'before-persist' : how < 0.7 ? 'mid-send' : 'after-promise';
    }
    if (live.length > 0 && r.chance(0.01 * k)) {
      cluster.pause(r.pick(live), r.between(3, 40));
    }
    if (cluster.opts.membership && !this.confInFlight && r.chance(0.01 * k)) this.changeMembership();
    if (r.chance(0.005 * k)) this.transferLeadership();
  }

  /** The leader applied a membership change. */
  confApplied(cc: ConfChange): void {
    const { cluster } = this;
    this.confInFlight = false;
    this.confChanges++;
    cluster.log(`membership: applied ${JSON.stringify(cc)}`);
    if (cc.type === ConfChangeType.RemoveNode) {
      const m = cluster.members.get(cc.node);
      if (m && !m.removed) {
        // The removed server is shut down for good, as an operator would do.
        m.removed = true;
        cluster.crash(m, 'removed from the cluster');
        m.restartAt = Infinity;
      }
    }
  }

  /** The leader adds a learner, promotes one, or removes a voter. */
  private changeMembership(): void {
    const { cluster } = this;
    const leader = cluster.leaderMember();
    if (!leader) return;
    const conf = leader.conf;
    const r = cluster.faultRng;
    const founders = cluster.opts.nodes;
    let cc: ConfChange;
    if (conf.learners.length > 0 && r.chance(0.6)) {
      cc = { type: ConfChangeType.PromoteLearner, node: r.pick(conf.learners) };
    } else if (conf.voters.length > founders && r.chance(0.7)) {
      cc = { type: ConfChangeType.RemoveNode, node: r.pick(conf.voters) };
    } else if (conf.voters.length + conf.learners.length < founders + 2) {
      cc = { type: ConfChangeType.AddLearner, node: `n${this.nextNodeNumber}` };
    } else {
      return;
    }
    try {
      leader.node.proposeConfChange(cc);
    } catch (err) {
      this.refusedAdmin(leader, err, `proposeConfChange ${JSON.stringify(cc)}`);
      return;
    }
    cluster.log(`membership: ${leader.id} proposes ${JSON.stringify(cc)}`);
    if (cc.type === ConfChangeType.AddLearner) {
      this.nextNodeNumber++;
      cluster.addMember(cc.node, new SimDisk());
    }
    this.confInFlight = true;
    cluster.drain(leader);
  }

  /** The leader hands over to another voter, under the clients' load. */
  private transferLeadership(): void {
    const { cluster } = this;
    const leader = cluster.leaderMember();
    if (!leader?.node.transferLeader) return;
    const others = leader.conf.voters.filter((v) => v !== leader.id);
    if (others.length === 0) return;
    const to = cluster.faultRng.pick(others);
    this.transfers++;
    cluster.log(`transfer leadership ${leader.id} → ${to}`);
    try {
      leader.node.transferLeader(to);
    } catch (err) {
      this.refusedAdmin(leader, err, 'transferLeader');
      return;
    }
    cluster.drain(leader);
  }

  private refusedAdmin(m: Member, err: unknown, what: string): void {
    if (!isRefusal(err)) this.cluster.violation('node-error', `${m.id} threw on ${what}: ${String(err)}`);
    else this.cluster.log(`${m.id} refused ${what}: ${(err as Error).message}`);
  }
}
