import { failedPrecondition } from '@hyperfarm/api';
import type { Packet } from '../frame.js';
import type { Scheduler, Timer } from '../scheduler.js';
import { BUCKETS, bucketOf, rebalance } from './buckets.js';
import {
  memberRuleSettings,
  ruleIndex,
  type MemberRuleSetting,
  type NlbClusterConfig,
  type PortRule,
} from './config.js';
import {
  bit,
  hashNumbers,
  priorities,
  rulesHash,
  type Heartbeat,
  type HeartbeatState,
  type RuleAdvert,
} from './heartbeat.js';

// One member of an NLB cluster, as the NLB driver on one Windows host: there is no balancer, so
// every member sees every packet for the virtual IP and decides alone, from the same hash and the
// same bucket map, whether it is its own. The map comes from convergence: members exchange
// heartbeats, and once every member they count alive reports the same view and settings, each
// computes the same map from the same inputs. Connections a member accepted stay with it through
// any later convergence (its connection descriptors), so only new connections move.

export type NlbMemberState = 'stopped' | 'suspended' | 'converging' | 'converged' | 'draining';

export interface ConvergenceRecord {
  startedAtMs: number;
  finishedAtMs: number;
  durationMs: number;
  /** The priorities of the members it converged on. */
  members: number[];
}

export interface NlbMemberStatus {
  vmId: string;
  priority: number;
  state: NlbMemberState;
  /** Members this one counts alive, by priority. */
  view: number[];
  defaultHost: number;
  /** Per rule, the bucket owners (priorities; 0 for none), or null before the first convergence. */
  maps: (number[] | null)[];
  lastConvergence: ConvergenceRecord | undefined;
  connections: number;
  /** Buckets it gained but the other members have not yet confirmed: no new connection starts there. */
  unconfirmedBuckets: number;
  peers: { priority: number; member: string; lastHeardMs: number; state: HeartbeatState }[];
  warnings: string[];
}

export interface NlbMemberHooks {
  /** Sends a heartbeat out of the member's adapter. */
  send(hb: Heartbeat): void;
  /** Drainstop finished: the last connection closed and the member stopped. */
  stopped?(reason: string): void;
}

interface Peer {
  hb: Heartbeat;
  lastHeardMs: number;
}

interface Descriptor {
  rule: number;
  bucket: number;
  token: number;
  lastMs: number;
}

/** State that moves with the VM in a migration (it lives in the guest's memory). */
export interface NlbMemberSnapshot {
  running: 'stopped' | 'active' | 'suspended';
  drainstopping: boolean;
  drained: number[];
  disabled: number[];
  view: number;
  maps: (number[] | null)[];
  defaultHost: number;
  peers: Heartbeat[];
  descriptors: [string, Descriptor][];
  lastConvergence: ConvergenceRecord | undefined;
}

/** A descriptor idle this long is forgotten (a client that vanished without closing). */
export const DESCRIPTOR_IDLE_MS = 300_000;

const connKey = (ip: number, port: number, conn: number): string => `${ip}:${port}:${conn}`;

function sameMaps(
  a: readonly (readonly number[] | null)[],
  b: readonly (readonly number[] | null)[],
): boolean {
  if (a.length !== b.length) return false;
  return a.every((m, i) => {
    const o = b[i];
    return m === null || o === null || o === undefined ? m === (o ?? null) : m.every((p, k) => p === o[k]);
  });
}

export class NlbMember {
  readonly priority: number;
  private cluster!: NlbClusterConfig;
  private settings!: MemberRuleSetting[];
  private running: 'stopped' | 'active' | 'suspended' = 'stopped';
  private paused = false;
  private converging = false;
  private convergingSinceMs = 0;
  private activeSinceMs = 0;
  private drainstopping = false;
  private readonly drained = new Set<number>();
  private readonly disabled = new Set<number>();
  private readonly peers = new Map<number, Peer>();
  private view = 0;
  private agreement = 0;
  private myRulesHash: number;
  private maps: (number[] | null)[];
  private defaultHost = 0;
  private lastConvergence: ConvergenceRecord | undefined;
  private readonly descriptors = new Map<string, Descriptor>();
  private connCount: Uint32Array[];
  /** Buckets this member gained at its last convergence, still unconfirmed by the old owners. */
  private readonly acquired = new Set<number>();
  private readonly pendingConfirm = new Set<number>();
  private readonly warnings = new Set<string>();
  /** Counts the heartbeats sent, to tell whether handling one already answered it. */
  private heartbeatsSent = 0;
  private heartbeatTimer: Timer | undefined;
  private lossTimer: Timer | undefined;
  private joinTimer: Timer | undefined;

  constructor(
    cluster: NlbClusterConfig,
    readonly vmId: string,
    private readonly sched: Scheduler,
    private readonly hooks: NlbMemberHooks,
  ) {
    const me = cluster.members.find((m) => m.vmId === vmId);
    if (!me) throw failedPrecondition(`VM '${vmId}' is not a member of NLB cluster '${cluster.id}'`);
    this.priority = me.priority;
    this.setCluster(cluster);
    this.myRulesHash = rulesHash(cluster.rules);
    this.maps = cluster.rules.map(() => null);
    this.connCount = cluster.rules.map(() => new Uint32Array(BUCKETS));
  }

  get config(): NlbClusterConfig {
    return this.cluster;
  }

  private setCluster(cluster: NlbClusterConfig): void {
    this.cluster = cluster;
    this.settings = memberRuleSettings(
      cluster,
      cluster.members.find((m) => m.vmId === this.vmId)!,
    );
  }

  // --- Control: start, stop, drainstop, suspend, resume, per-rule drain ---

  start(): void {
    if (this.running === 'suspended')
      throw failedPrecondition(`NLB member '${this.vmId}' is suspended: resume it first`);
    if (this.running === 'active') return;
    this.running = 'active';
    this.activeSinceMs = this.sched.nowMs;
    this.drainstopping = false;
    this.view = bit(this.priority);
    this.agreement = 0;
    this.beginConvergence();
    this.armTimers();
    // A starting member listens for a heartbeat period and a half before it may converge, so it
    // hears every member that is already there instead of claiming every bucket for itself.
    this.joinTimer = this.sched.after(this.joinDelayMs(), () => this.evaluate());
    this.evaluate();
  }

  /** Stops cluster operations at once: connections this member held are lost. */
  stop(reason = 'stopped'): void {
    if (this.running === 'active' && !this.paused) this.sendHeartbeat('leaving');
    this.halt('stopped');
    this.hooks.stopped?.(reason);
  }

  /** The VM turned off: its NLB driver stops without a word; the others notice by its silence. */
  powerOff(): void {
    this.halt('stopped');
  }

  /** Takes no new connections; when the last existing one closes, stops. */
  drainstop(): void {
    if (this.running !== 'active') throw failedPrecondition(`NLB member '${this.vmId}' is not running`);
    this.drainstopping = true;
    this.evaluate();
    this.finishDrainstopIfDone();
  }

  suspend(): void {
    if (this.running === 'active' && !this.paused) this.sendHeartbeat('leaving');
    this.halt('suspended');
  }

  resume(): void {
    if (this.running !== 'suspended') return;
    this.running = 'stopped';
    this.start();
  }

  /** Windows' "drain port": no new connections of the rule covering `port`; existing ones finish. */
  drainRule(port: number): void {
    this.drained.add(this.ruleAt(port));
    this.evaluate();
  }

  /** Windows' "disable port": drops the rule's traffic at once, existing connections included. */
  disableRule(port: number): void {
    this.disabled.add(this.ruleAt(port));
    this.evaluate();
  }

  enableRule(port: number): void {
    const i = this.ruleAt(port);
    this.drained.delete(i);
    this.disabled.delete(i);
    this.evaluate();
  }

  /** New settings for the cluster (rules, weights, timers); members converge on them. */
  reconfigure(cluster: NlbClusterConfig): void {
    const rulesChanged = rulesHash(cluster.rules) !== this.myRulesHash;
    this.setCluster(cluster);
    if (rulesChanged) {
      this.myRulesHash = rulesHash(cluster.rules);
      this.maps = cluster.rules.map(() => null);
      this.connCount = cluster.rules.map(() => new Uint32Array(BUCKETS));
      this.descriptors.clear();
      this.drained.clear();
      this.disabled.clear();
      this.acquired.clear();
    }
    if (this.running === 'active') {
      this.armTimers();
      this.evaluate();
    }
  }

  /** The VM is paused: its NLB driver does nothing until it runs again. */
  pause(): void {
    this.paused = true;
    this.cancelTimers();
  }

  /** Its clock stood still while paused, so its peers' silence starts counting from now. */
  unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.running !== 'active') return;
    for (const p of this.peers.values()) p.lastHeardMs = this.sched.nowMs;
    this.distrustMap();
    this.armTimers();
    this.evaluate();
  }

  /**
   * After a pause the cluster may have moved on without this member: until every member it
   * counts alive has confirmed the same agreement, the buckets it owned are treated as another
   * member's may be (a segment of an unknown connection there is dropped, not reset).
   */
  private distrustMap(): void {
    this.acquired.clear();
    this.pendingConfirm.clear();
    this.maps.forEach((map, i) => {
      if (map)
        for (let b = 0; b < BUCKETS; b++) if (map[b] === this.priority) this.acquired.add(i * BUCKETS + b);
    });
    for (const p of this.peers.keys()) this.pendingConfirm.add(p);
    if (this.pendingConfirm.size === 0) this.acquired.clear();
  }

  // --- Heartbeats and convergence ---

  onHeartbeat(hb: Heartbeat): void {
    if (this.running !== 'active' || this.paused || hb.vip !== this.cluster.vip) return;
    if (hb.priority === this.priority) {
      if (hb.member !== this.vmId)
        this.warnings.add(
          `member '${hb.member}' also claims host priority ${hb.priority}; its heartbeats are ignored`,
        );
      return;
    }
    if (hb.rulesHash !== this.myRulesHash) {
      this.warnings.add(`member '${hb.member}' has different port rules; it cannot converge with this one`);
      this.forget(hb.priority);
      return;
    }
    if (hb.state === 'leaving') {
      this.forget(hb.priority);
      return;
    }
    this.peers.set(hb.priority, { hb, lastHeardMs: this.sched.nowMs });
    this.view = (this.view | bit(hb.priority)) >>> 0;
    if (hb.state === 'converged' && hb.agreement === this.agreement) {
      this.pendingConfirm.delete(hb.priority);
      if (this.pendingConfirm.size === 0) this.acquired.clear();
    }
    const sent = this.heartbeatsSent;
    this.evaluate();
    // Same view and settings but another map (one of us was paused while the others moved on):
    // both recompute from the same base, the lowest-numbered member's map, and so end equal.
    if (
      !this.converging &&
      hb.state === 'converged' &&
      hb.agreement === this.agreement &&
      !sameMaps(hb.maps, this.maps)
    )
      this.finishConvergence();
    // It waits for this member's word to use buckets it gained (a member just moved to another
    // host, or back from a pause): a heartbeat now that confirms the same agreement spares it up
    // to a heartbeat period of refusing new connections there. Only a confirming one is sent,
    // so two members waiting for each other settle in one exchange.
    if (
      ((hb.awaiting ?? 0) & bit(this.priority)) !== 0 &&
      this.heartbeatsSent === sent &&
      !this.converging &&
      hb.agreement === this.agreement
    )
      this.sendHeartbeat();
    this.armLossTimer();
  }

  private forget(priority: number): void {
    if (!this.peers.delete(priority)) return;
    this.view = (this.view & ~bit(priority)) >>> 0;
    this.pendingConfirm.delete(priority);
    if (this.pendingConfirm.size === 0) this.acquired.clear();
    this.evaluate();
  }

  private advert(ruleIdx: number): RuleAdvert {
    const s = this.settings[ruleIdx]!;
    const enabled = !this.drainstopping && !this.drained.has(ruleIdx) && !this.disabled.has(ruleIdx);
    return { weight: enabled ? s.loadWeight : 0, handling: s.handlingPriority, enabled };
  }

  private advertsOf(p: number): RuleAdvert[] {
    if (p === this.priority) return this.cluster.rules.map((_, i) => this.advert(i));
    return this.peers.get(p)!.hb.rules;
  }

  private computeAgreement(): number {
    const values = [this.view, this.myRulesHash];
    for (const p of priorities(this.view)) {
      values.push(p, this.isDraining(p) ? 1 : 0);
      for (const a of this.advertsOf(p)) values.push(a.weight, a.handling, a.enabled ? 1 : 0);
    }
    return hashNumbers(values);
  }

  private isDraining(p: number): boolean {
    return p === this.priority ? this.drainstopping : (this.peers.get(p)?.hb.draining ?? false);
  }

  /** Notices a change of view or settings (and tells the others), and finishes convergence once all agree. */
  private evaluate(): void {
    if (this.running !== 'active' || this.paused) return;
    const agreement = this.computeAgreement();
    if (agreement !== this.agreement) {
      this.agreement = agreement;
      this.beginConvergence();
      this.sendHeartbeat();
    }
    if (!this.converging || this.sched.nowMs < this.activeSinceMs + this.joinDelayMs()) return;
    for (const p of priorities(this.view)) {
      if (p !== this.priority && this.peers.get(p)!.hb.agreement !== this.agreement) return;
    }
    this.finishConvergence();
  }

  private beginConvergence(): void {
    if (this.converging) return;
    this.converging = true;
    this.convergingSinceMs = this.sched.nowMs;
  }

  private finishConvergence(): void {
    const members = priorities(this.view);
    const previous = this.maps;
    this.maps = this.cluster.rules.map((rule, i) => this.mapFor(rule, i, members));
    const live = members.filter((p) => !this.isDraining(p));
    this.defaultHost = live[0] ?? members[0] ?? 0;
    this.acquired.clear();
    this.pendingConfirm.clear();
    this.maps.forEach((map, i) => {
      if (!map) return;
      for (let b = 0; b < BUCKETS; b++)
        if (map[b] === this.priority && previous[i]?.[b] !== this.priority)
          this.acquired.add(i * BUCKETS + b);
    });
    if (this.acquired.size > 0) for (const p of members) if (p !== this.priority) this.pendingConfirm.add(p);
    if (this.pendingConfirm.size === 0) this.acquired.clear();
    this.converging = false;
    const now = this.sched.nowMs;
    this.lastConvergence = {
      startedAtMs: this.convergingSinceMs,
      finishedAtMs: now,
      durationMs: now - this.convergingSinceMs,
      members,
    };
    this.sendHeartbeat();
    this.finishDrainstopIfDone();
  }

  private mapFor(rule: PortRule, i: number, members: number[]): number[] | null {
    if (rule.filtering === 'disabled') return null;
    if (rule.filtering === 'single') {
      let owner = 0;
      let best = Infinity;
      for (const p of members) {
        const a = this.advertsOf(p)[i]!;
        if (a.enabled && a.handling < best) {
          best = a.handling;
          owner = p;
        }
      }
      return new Array<number>(BUCKETS).fill(owner);
    }
    const weights = new Map<number, number>();
    for (const p of members) weights.set(p, this.advertsOf(p)[i]!.weight);
    // Start from the map of the lowest-numbered member that has one: every member picks the same.
    let base: number[] | undefined;
    for (const p of members) {
      const m = p === this.priority ? this.maps[i] : this.peers.get(p)!.hb.maps[i];
      if (m && m.length === BUCKETS) {
        base = m;
        break;
      }
    }
    return rebalance(base, weights);
  }

  private sendHeartbeat(state?: HeartbeatState): void {
    const connBuckets = this.connCount.map((counts) => {
      const out: number[] = [];
      for (let b = 0; b < BUCKETS; b++) if (counts[b]! > 0) out.push(b);
      return out;
    });
    this.hooks.send({
      vip: this.cluster.vip,
      member: this.vmId,
      priority: this.priority,
      state: state ?? (this.converging ? 'converging' : 'converged'),
      draining: this.drainstopping,
      view: this.view,
      rulesHash: this.myRulesHash,
      agreement: this.agreement,
      rules: this.cluster.rules.map((_, i) => this.advert(i)),
      maps: this.maps.map((m) => (m ? [...m] : null)),
      connBuckets,
      awaiting:
        this.acquired.size > 0 ? [...this.pendingConfirm].reduce((mask, p) => (mask | bit(p)) >>> 0, 0) : 0,
    });
    this.heartbeatsSent++;
  }

  // --- Timers ---

  private joinDelayMs(): number {
    return this.cluster.heartbeatPeriodMs * 1.5;
  }

  private armTimers(): void {
    this.cancelTimers();
    const tick = (): void => {
      this.sendHeartbeat();
      this.sweepDescriptors();
      this.heartbeatTimer = this.sched.after(this.cluster.heartbeatPeriodMs, tick);
    };
    this.heartbeatTimer = this.sched.after(this.cluster.heartbeatPeriodMs, tick);
    this.armLossTimer();
  }

  private armLossTimer(): void {
    this.lossTimer?.cancel();
    this.lossTimer = undefined;
    let earliest = Infinity;
    for (const p of this.peers.values()) earliest = Math.min(earliest, p.lastHeardMs);
    if (earliest === Infinity) return;
    const lostAfter = this.cluster.heartbeatPeriodMs * this.cluster.heartbeatThreshold;
    this.lossTimer = this.sched.at(earliest + lostAfter, () => {
      this.lossTimer = undefined;
      const now = this.sched.nowMs;
      // The same sum the timer was armed with: a difference could round below it and re-arm forever.
      for (const [p, peer] of [...this.peers]) if (peer.lastHeardMs + lostAfter <= now) this.forget(p);
      this.armLossTimer();
    });
  }

  private cancelTimers(): void {
    for (const t of [this.heartbeatTimer, this.lossTimer, this.joinTimer]) t?.cancel();
    this.heartbeatTimer = this.lossTimer = this.joinTimer = undefined;
  }

  private halt(to: 'stopped' | 'suspended'): void {
    this.cancelTimers();
    this.running = to;
    this.paused = false;
    this.converging = false;
    this.drainstopping = false;
    this.peers.clear();
    this.view = 0;
    this.agreement = 0;
    this.maps = this.cluster.rules.map(() => null);
    this.defaultHost = 0;
    this.descriptors.clear();
    for (const c of this.connCount) c.fill(0);
    this.acquired.clear();
    this.pendingConfirm.clear();
  }

  // --- The filter: is this packet for the virtual IP mine? ---

  /**
   * Decides for an inbound packet addressed to the virtual IP. Connection segments are matched
   * against this member's descriptors first; a new connection goes to the bucket's owner; a
   * segment of a connection nobody here knows is taken (and reset by the stack) only in a bucket
   * this member owns that no other member holds connections in.
   */
  accepts(p: Packet): boolean {
    if (this.running !== 'active' || this.paused) return false;
    const ri = ruleIndex(this.cluster.rules, p.dstPort, p.protocol);
    if (ri < 0) return this.defaultHost === this.priority;
    const rule = this.cluster.rules[ri]!;
    if (rule.filtering === 'disabled' || this.disabled.has(ri)) return false;
    const bucket = rule.filtering === 'single' ? 0 : bucketOf(rule.affinity, p.src, p.srcPort);
    const owner = this.maps[ri]?.[bucket] ?? 0;
    if (p.protocol === 'dgram') return owner === this.priority;
    const seg = p.seg;
    const key = connKey(p.src, p.srcPort, seg.conn);
    const d = this.descriptors.get(key);
    if (d) {
      if (seg.kind !== 'open' && d.token !== 0 && seg.token !== d.token) {
        // The client kept another member's answer to its open: this one was never used.
        this.removeDescriptor(key, d);
        return false;
      }
      d.lastMs = this.sched.nowMs;
      if (seg.kind === 'close' || seg.kind === 'reset') this.removeDescriptor(key, d);
      return true;
    }
    if (owner !== this.priority) return false;
    // A bucket gained at the last convergence (or kept through a pause) is not taken for sure
    // until the other members confirm the map: until then no new connection starts in it.
    if (this.acquired.has(ri * BUCKETS + bucket)) return false;
    if (seg.kind === 'open') {
      this.descriptors.set(key, { rule: ri, bucket, token: 0, lastMs: this.sched.nowMs });
      this.connCount[ri]![bucket]!++;
      return true;
    }
    return !this.isDirty(ri, bucket);
  }

  /** Sees what the guest sends from the virtual IP: the token of an accept, the end of a connection. */
  onSend(p: Packet): void {
    if (p.protocol !== 'conn') return;
    const key = connKey(p.dst, p.dstPort, p.seg.conn);
    const d = this.descriptors.get(key);
    if (!d) return;
    if (p.seg.kind === 'accept') d.token = p.seg.token;
    else if (p.seg.kind === 'close' || p.seg.kind === 'reset') this.removeDescriptor(key, d);
  }

  private isDirty(ri: number, bucket: number): boolean {
    for (const [p, peer] of this.peers) {
      if (this.view & bit(p) && peer.hb.connBuckets[ri]?.includes(bucket)) return true;
    }
    return false;
  }

  private removeDescriptor(key: string, d: Descriptor): void {
    this.descriptors.delete(key);
    this.connCount[d.rule]![d.bucket]!--;
    this.finishDrainstopIfDone();
  }

  private sweepDescriptors(): void {
    const now = this.sched.nowMs;
    for (const [k, d] of [...this.descriptors])
      if (now - d.lastMs > DESCRIPTOR_IDLE_MS) this.removeDescriptor(k, d);
  }

  private finishDrainstopIfDone(): void {
    if (this.drainstopping && this.running === 'active' && !this.converging && this.descriptors.size === 0)
      this.stop('drainstop finished: every connection closed');
  }

  private ruleAt(port: number): number {
    const i = this.cluster.rules.findIndex((r) => port >= r.startPort && port <= r.endPort);
    if (i < 0)
      throw failedPrecondition(`NLB cluster '${this.cluster.id}' has no port rule covering port ${port}`);
    return i;
  }

  // --- Reading and moving ---

  status(): NlbMemberStatus {
    const state: NlbMemberState =
      this.running !== 'active'
        ? this.running
        : this.drainstopping
          ? 'draining'
          : this.converging
            ? 'converging'
            : 'converged';
    return {
      vmId: this.vmId,
      priority: this.priority,
      state,
      view: priorities(this.view),
      defaultHost: this.defaultHost,
      maps: this.maps.map((m) => (m ? [...m] : null)),
      lastConvergence: this.lastConvergence,
      connections: this.descriptors.size,
      unconfirmedBuckets: this.acquired.size,
      peers: [...this.peers].map(([priority, p]) => ({
        priority,
        member: p.hb.member,
        lastHeardMs: p.lastHeardMs,
        state: p.hb.state,
      })),
      warnings: [...this.warnings],
    };
  }

  snapshot(): NlbMemberSnapshot {
    return structuredClone({
      running: this.running,
      drainstopping: this.drainstopping,
      drained: [...this.drained],
      disabled: [...this.disabled],
      view: this.view,
      maps: this.maps,
      defaultHost: this.defaultHost,
      peers: [...this.peers.values()].map((p) => p.hb),
      descriptors: [...this.descriptors],
      lastConvergence: this.lastConvergence,
    });
  }

  /** Takes over a member's state as it was on the host the VM came from; it runs as if only paused. */
  restore(s: NlbMemberSnapshot): void {
    this.halt('stopped');
    if (s.running === 'stopped') return;
    this.running = s.running;
    if (s.running !== 'active') return;
    this.activeSinceMs = -Infinity;
    this.drainstopping = s.drainstopping;
    for (const r of s.drained) this.drained.add(r);
    for (const r of s.disabled) this.disabled.add(r);
    this.view = s.view;
    this.maps = s.maps;
    this.defaultHost = s.defaultHost;
    this.lastConvergence = s.lastConvergence;
    for (const hb of s.peers) this.peers.set(hb.priority, { hb, lastHeardMs: this.sched.nowMs });
    for (const [k, d] of s.descriptors) {
      this.descriptors.set(k, { ...d, lastMs: this.sched.nowMs });
      this.connCount[d.rule]![d.bucket]!++;
    }
    this.agreement = this.computeAgreement();
    this.distrustMap();
    this.armTimers();
    this.sendHeartbeat();
  }
}
