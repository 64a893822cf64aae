import { status, statusOf, type Logger, type pb } from '@hyperfarm/api';
import {
  afterCreate,
  atRest,
  failoverRound,
  fencedHosts,
  hostTransitions,
  staleCopies,
  observedReports,
  placementRound,
  reconcileVms,
  reportOf,
  agentView,
  type AgentAction,
  type LivenessConfig,
  type VmReport,
} from '../controllers/index.js';
import type { CommandBody, ErrorCode, FarmStateMachine, HostLiveView, HostStateName } from '../fsm/index.js';
import type { SchedulerOptions } from '../scheduler/index.js';
import type { AgentPort, HostRef } from './agent-port.js';
import { AgentWatcher } from './agent-watcher.js';
import { ForeignCopies, RestingVms } from './inventory-index.js';
import { MigrationOrchestrator } from './migration-orchestrator.js';
import { PlacementsInFlight } from './placements-in-flight.js';
import type { Proposer } from './proposer.js';
import type { Timers } from './timers.js';

export interface RunnerConfig {
  daemonId: string;
  liveness: LivenessConfig & { intervalMs: number };
  /** The lease each grant gives a host (0: the agent's own default). */
  leaseMs: number;
  /** Failover waits this long past the end of a Down host's last lease (clock drift, a late agent). */
  leaseMarginMs: number;
  scheduler: SchedulerOptions;
  /** VMs placed per round at most. */
  placementBatch: number;
  /** Agent calls in flight at once at most. */
  maxCalls: number;
  /** Migrations a host takes part in at once at most. */
  maxMigrationsPerHost: number;
  /**
   * How often the controllers look at every VM, not only the changed ones (SWEEP_MS when
   * absent). A farm of tens of thousands of VMs may sweep less often: the sweep is a safety net.
   */
  sweepMs?: number;
  /** VMs a sweep looks at per run of the controllers at most (SWEEP_SLICE when absent). */
  sweepSlice?: number;
}

/** Most items per command (placements, reports): an entry stays well under 1 MiB. */
const CHUNK = 2_000;
/** At most this often the controllers run, however fast the log moves. */
const MIN_TICK_MS = 20;
/**
 * The controllers look at the VMs that changed since they last ran; every so often at all of
 * them, in case a change went unnoticed (a safety net, not the mechanism).
 */
const SWEEP_MS = 5_000;
/**
 * A sweep goes through the farm a slice of hosts at a time, about this many VMs per run, a run
 * every MIN_TICK_MS: all 50,000 VMs in one run held the leader's event loop 0.5 to 1.7 s every
 * 5 s at load 16 to 28 (bench:scale's calls with the farm full waited for it: p99 0.4 to 1.4 s);
 * a slice of 2,000 held it 55 to 89 ms at load 28.
 */
const SWEEP_SLICE = 1_000;
/**
 * Agents a run of the controllers starts following at most (a stream and a listing each); the
 * rest wait for the next run, 20 ms later. A new leader of 1,000 hosts opened all of them in one
 * turn: 3.2 to 3.4 s of its event loop at load 20.
 */
const FOLLOW_PER_RUN = 100;
/** The agent's own lease, when grants leave it to the agent (leaseMs 0). */
const AGENT_DEFAULT_LEASE_MS = 10_000;
/**
 * Hosts whose grants share one GrantLease call at most. One call for all 250 hosts of a process
 * was all-or-nothing: on a loaded machine it outlived its deadline, and every host of the process
 * missed its grant at once (bench:placement saw 333 Up hosts fall to 6); 32 a call still turns
 * 1,000 calls a second into about 32.
 */
const GRANT_BATCH = 32;
/** A grant this recent and unanswered holds its host's judgment until it settles. */
const GRANT_GRACE_MS = 250;
/** How often the failover plan is made again for VMs that could not restart yet. */
const FAILOVER_RETRY_MS = 1_000;
/** A refusal the host will give again: the operation fails with it. Anything else is retried. */
const DEFINITIVE = new Set<number>([
  status.INVALID_ARGUMENT,
  status.FAILED_PRECONDITION,
  status.ALREADY_EXISTS,
  status.NOT_FOUND,
  status.RESOURCE_EXHAUSTED,
  status.PERMISSION_DENIED,
  status.UNIMPLEMENTED,
  status.OUT_OF_RANGE,
]);

/**
 * Runs the controllers while this daemon leads, and only then (Nomad's leader loops): grants
 * leases and judges liveness, follows every agent's events, and on each change runs placement,
 * the observed-state controller and the reconciler, carrying out their actions through the
 * agent port and committing what came of them. Everything it knows besides the log belongs to
 * one term and is dropped when leadership goes.
 */
export class ControllerRunner {
  private session: LeaderSession | undefined;
  /** Placements proposed and not applied yet, by the controllers and by the create path. */
  readonly placements = new PlacementsInFlight();

  constructor(
    private readonly machine: FarmStateMachine,
    private readonly proposer: Proposer,
    private readonly port: AgentPort,
    private readonly timers: Timers,
    private readonly logger: Logger,
    private readonly cfg: RunnerConfig,
  ) {}

  start(term: number): void {
    if (this.session?.term === term) return;
    this.stop();
    this.logger.info({ term }, 'leading: controllers started');
    this.session = new LeaderSession(
      term,
      this.machine,
      this.proposer,
      this.port,
      this.timers,
      this.logger,
      this.cfg,
      this.placements,
    );
  }

  /** Whether this daemon runs the controllers (it leads). */
  get leading(): boolean {
    return this.session !== undefined;
  }

  stop(): void {
    if (!this.session) return;
    this.session.close();
    this.logger.info({ term: this.session.term }, 'controllers stopped');
    this.session = undefined;
  }

  /** What the leader knows of a host between committed changes (undefined on a follower). */
  live(hostId: string): HostLiveView | undefined {
    return this.session?.live.get(hostId);
  }

  /**
   * The network configuration the host's last lease answer said it applied (undefined: no
   * answer yet this term, or a follower).
   */
  appliedNetwork(hostId: string): AppliedNetworkReport | undefined {
    return this.session?.appliedNetwork.get(hostId);
  }
}

/** What a lease answer said of a host's network (GrantLeaseResponse.network). */
export interface AppliedNetworkReport {
  /** The revision the host applied last; undefined from an agent that does not say (older). */
  revision: number | undefined;
  /** When the grant it answered was sent: the answer shows nothing done after that. */
  sentMs: number;
}

class LeaderSession {
  readonly live = new Map<string, HostLiveView>();
  readonly appliedNetwork = new Map<string, AppliedNetworkReport>();
  private readonly since: number;
  private lastRound: number | undefined;
  private resumedAt = 0;
  private readonly lastGrant = new Map<string, number>();
  /**
   * Per host, the latest instant a lease this leader granted may count from: an answer, or the
   * base a grant was sent with (leaseBase). Failover waits a lease and the margin past it.
   */
  private readonly leaseFrom = new Map<string, number>();
  /** Per host that came Up since it last answered: when, and when its first grant since went out. */
  private readonly firstGrant = new Map<string, { upSinceMs: number; atMs: number }>();
  private readonly granting = new Set<string>();
  /** When each grant in flight was sent. */
  private readonly grantSent = new Map<string, number>();
  /** Per host, the other hosts of its agent process, as its last grant answer named them. */
  private readonly siblings = new Map<string, string[]>();
  private readonly proposedStates = new Map<string, HostStateName>();
  private readonly watchers = new Map<string, AgentWatcher>();
  private readonly inFlight = new Set<string>();
  private readonly backoff = new Map<string, { untilMs: number; delayMs: number }>();
  private readonly pendingReports = new Map<string, string>();
  /** VMs only a host that is not Up could take, with the reason committed for each. */
  private readonly waiting = new Map<string, string>();
  /** Reports from agent answers of this turn, committed together. */
  private reports: { reports: VmReport[]; committed: Promise<void> } | undefined;
  /**
   * VMs to look at on the next tick, and hosts whose VMs to look at: all of them (true: the host
   * or its agent's inventory changed), or those not at rest (false: the sweep), in the order the
   * hosts came.
   */
  private readonly dirtyVms = new Set<string>();
  private readonly dirtyHosts = new Map<string, boolean>();
  /**
   * VMs the reconciler last found at rest (controllers' `atRest`) with nothing said of them since:
   * anything said of one (its record, its operation, its host, its agent) brings it to the next
   * tick, which takes it out of here. The sweep passes them by: at 10,000 VMs it looked at every
   * one of them each minute, and found nothing to do for almost all. Per session, so a new
   * leader sweeps every VM; emptied when a snapshot replaces the state (no events say what
   * changed). A VM whose record changes leaves it at once (it is in dirtyVms then, so the next
   * tick looks at it either way): each VM here is on the host it was counted on.
   */
  private readonly restingVms = new RestingVms();
  /** Per host, the VMs of its agent's inventory that the farm places elsewhere (stale copies' candidates). */
  private readonly foreign = new ForeignCopies((vmId) => this.state.vms.get(vmId)?.hostId);
  /**
   * Changed VMs the reconciler has not weighed yet for want of room for agent calls, oldest
   * first. Kept apart from dirtyVms so a backlog of thousands of creates is not looked at again
   * on every tick by the observed-state controller (nothing new was said of them).
   */
  private readonly awaitingCall = new Set<string>();
  /** Hosts whose record changed: one that came Up since it last answered is granted at once. */
  private readonly cameUp = new Set<string>();
  private nextSweep = 0;
  /** The hosts the sweep under way has still to look at, from `sweepAt` on. */
  private sweepHosts: string[] = [];
  private sweepAt = 0;
  /** A host record changed since the watchers were last matched to the hosts. */
  private hostsChanged = true;
  private placing = false;
  private failingOver = false;
  /** The fenced hosts of the last failover round, and when to plan again for them anyway. */
  private fencedBefore = '';
  private nextFailoverMs = 0;
  private fenceTimer: { handle: unknown; atMs: number } | undefined;
  /** Stale copies being dropped, as host/vm. */
  private readonly dropping = new Set<string>();
  private closed = false;
  private tickTimer: unknown;
  private tickAt = 0;
  private lastTick = 0;
  private leaseTimer: unknown;
  private judgeTimer: unknown;
  private judgeQueued = false;
  private readonly unsubscribe: () => void;
  private readonly unrestored: () => void;
  private readonly migrations: MigrationOrchestrator;
  /**
   * What the reconciler reads of this session, looked up in place: copying the synced watchers
   * and the backoffs into a set and a map on every run cost work per host and per failed VM
   * 50 times a second. Nothing here changes while a run weighs its VMs (the calls it starts
   * settle later), so the lookups see what copies made at its start would.
   */
  private readonly reconcileView = {
    synced: { has: (hostId: string) => this.watchers.get(hostId)?.synced === true },
    inFlight: this.inFlight,
    backoffUntilMs: { get: (vmId: string) => this.backoff.get(vmId)?.untilMs },
  };

  constructor(
    readonly term: number,
    private readonly machine: FarmStateMachine,
    private readonly proposer: Proposer,
    private readonly port: AgentPort,
    private readonly timers: Timers,
    private readonly logger: Logger,
    private readonly cfg: RunnerConfig,
    private readonly proposed: PlacementsInFlight,
  ) {
    this.since = timers.now();
    this.migrations = new MigrationOrchestrator(
      machine,
      (cmd) => proposer.submit(cmd),
      port,
      timers,
      logger.child({ component: 'migrations' }),
      {
        maxPerHost: cfg.maxMigrationsPerHost,
        observe: (hostId, vm) => this.watchers.get(hostId)?.observe(vm),
      },
    );
    this.unsubscribe = machine.onApplied((applied) => {
      for (const e of applied.events) {
        if (e.kind === 'RESOURCE_KIND_VM') {
          this.dirtyVms.add(e.id);
          this.restingVms.delete(e.id);
          this.foreign.vmChanged(e.id);
        } else if (e.kind === 'RESOURCE_KIND_OPERATION') this.dirtyVms.add(e.resource.targetId);
        else if (e.kind === 'RESOURCE_KIND_HOST') {
          this.dirtyHosts.set(e.id, true);
          this.cameUp.add(e.id);
          this.hostsChanged = true;
          // A host changed: the VMs waiting for one are planned again.
          this.waiting.clear();
        }
      }
      this.schedule();
    });
    this.unrestored = machine.onRestored(() => {
      this.restingVms.clear();
      this.foreign.recheckAll();
    });
    this.leases();
    this.schedule();
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    this.unrestored();
    this.migrations.close();
    this.timers.clear(this.tickTimer);
    this.timers.clear(this.leaseTimer);
    if (this.judgeTimer !== undefined) this.timers.clear(this.judgeTimer);
    if (this.fenceTimer) this.timers.clear(this.fenceTimer.handle);
    for (const w of this.watchers.values()) w.stop();
  }

  private get state() {
    return this.machine.state;
  }

  private hostRef(id: string): HostRef | undefined {
    const h = this.state.hosts.get(id);
    return h ? { id: h.id, address: h.address } : undefined;
  }

  // --- liveness ---

  private leases(): void {
    if (this.closed) return;
    const sent = this.timers.now();
    const hosts = this.state.hosts;
    const grouped = new Set<string>();
    for (const host of hosts.values()) {
      if (this.granting.has(host.id) || grouped.has(host.id)) continue;
      // The hosts its agent process also serves (learnt from its last answer) ride on this call,
      // up to GRANT_BATCH of them (the first that fit: not the whole list of 250 each time).
      const more: string[] = [];
      for (const id of this.siblings.get(host.id) ?? []) {
        if (more.length === GRANT_BATCH - 1) break;
        if (hosts.has(id) && !this.granting.has(id) && !grouped.has(id)) more.push(id);
      }
      for (const id of [host.id, ...more]) {
        grouped.add(id);
        this.granting.add(id);
        this.grantSent.set(id, sent);
      }
      this.grant({ id: host.id, address: host.address }, more, sent);
    }
    const now = this.timers.now();
    // A round far later than planned means this process stalled (a starved CPU, a long pause):
    // no grant went out meanwhile, so the hosts' silence then is ours, and is not counted.
    if (now - (this.lastRound ?? now) > 2 * this.cfg.liveness.intervalMs) this.resumedAt = now;
    this.lastRound = now;
    this.judge();
    this.leaseTimer = this.timers.set(() => this.leases(), this.cfg.liveness.intervalMs);
  }

  /**
   * A host that came Up (registered, or back after a restart) since it last answered is granted
   * its lease now rather than at the next round, up to a heartbeat later: until its first grant
   * arrives its agent refuses to start VMs. The grant is the one the round would have sent
   * (leaseBase counts it from when it is sent), only earlier.
   */
  private grantCameUp(): void {
    const sent = this.timers.now();
    for (const id of this.cameUp) {
      const h = this.state.hosts.get(id);
      if (!h || h.state !== 'HOST_STATE_UP' || this.granting.has(id)) continue;
      if (h.stateChangedAtMs <= Math.max(this.lastGrant.get(id) ?? this.since, this.since)) continue;
      this.granting.add(id);
      this.grantSent.set(id, sent);
      this.grant({ id, address: h.address }, [], sent);
    }
    this.cameUp.clear();
  }

  /**
   * Judges the hosts once the grants failing in this turn have all settled: a new leader's
   * grants to a thousand hosts that all fail (an overloaded machine) judged every host once per
   * failed grant, a million host checks in one turn (the leader held its event loop 4 to 9 s at
   * load 20 to 26, and lost its followers).
   */
  private judgeSoon(): void {
    if (this.judgeQueued) return;
    this.judgeQueued = true;
    this.timers.set(() => {
      this.judgeQueued = false;
      this.judge();
    }, 0);
  }

  /** Commits the hosts' state changes due now, and looks again when the next one falls due. */
  private judge(): void {
    if (this.closed) return;
    const now = this.timers.now();
    const from = Math.max(this.since, this.resumedAt);
    let graceEnds = Infinity;
    for (const sent of this.grantSent.values())
      if (now - sent < GRANT_GRACE_MS) graceEnds = Math.min(graceEnds, sent + GRANT_GRACE_MS);
    // Looked up in place: right after a round every host's grant is in flight, and a set of
    // them all was made every second.
    const awaiting = {
      has: (id: string) => {
        const sent = this.grantSent.get(id);
        return sent !== undefined && now - sent < GRANT_GRACE_MS;
      },
    };
    const { transitions, nextMs } = hostTransitions(
      this.state,
      this.lastGrant,
      from,
      now,
      this.cfg.liveness,
      awaiting,
    );
    for (const t of transitions) {
      if (this.proposedStates.get(t.hostId) === t.state) continue;
      this.proposedStates.set(t.hostId, t.state);
      this.logger.warn({ host: t.hostId, state: t.state, reason: t.reason }, 'host state changes');
      this.commit({ type: 'host.state', id: t.hostId, state: t.state, reason: t.reason }).finally(() =>
        this.proposedStates.delete(t.hostId),
      );
    }
    const at = Math.min(nextMs, graceEnds);
    if (this.judgeTimer !== undefined) this.timers.clear(this.judgeTimer);
    this.judgeTimer = at === Infinity ? undefined : this.timers.set(() => this.judge(), at - now);
  }

  /**
   * One GrantLease call: to `host`, carrying the grants of `more` (hosts of the same agent
   * process). Each host's lease counts from when the answer arrived, as for a call of its own.
   * When the call fails, the others are granted again each on its own at once: the carrier may
   * be the one host of the process that is gone, and its siblings are not to pay for it.
   */
  private grant(host: HostRef, more: string[], sent: number): void {
    const req = {
      daemonId: this.cfg.daemonId,
      term: this.term,
      durationMs: this.grantMs(host.id, sent),
      more: more.map((id) => ({ hostId: id, durationMs: this.grantMs(id, sent) })),
      // Of each answered host only its usage is read (heard): the whole Hosts, encoded by the
      // agents and decoded here 1,000 times a second, were most of an idle farm's lease cost.
      brief: true,
    };
    let failed = false;
    this.port
      .grantLease(host, req)
      .then(
        (answer) => {
          if (this.closed) return;
          const now = this.timers.now();
          this.heard(host.id, now, answer.host?.usage?.cpuPercent ?? 0);
          this.appliedNetwork.set(host.id, { revision: answer.network?.revision, sentMs: sent });
          this.siblings.set(host.id, answer.siblingHostIds ?? []);
          // Answered in the order asked (GrantLeaseResponse.more), so no map of them is made.
          const results = answer.more ?? [];
          for (const [i, id] of more.entries()) {
            const r = results[i]?.hostId === id ? results[i] : results.find((x) => x.hostId === id);
            if (!r || r.error) continue;
            this.heard(id, now, r.host?.usage?.cpuPercent ?? 0);
            this.appliedNetwork.set(id, { revision: r.network?.revision, sentMs: sent });
          }
        },
        () => {
          this.siblings.delete(host.id);
          if (this.closed) return;
          failed = true;
          for (const id of more) {
            const h = this.state.hosts.get(id);
            this.granting.delete(id);
            if (!h || this.granting.has(id)) continue;
            this.granting.add(id);
            this.grant({ id, address: h.address }, [], sent);
          }
          more = [];
        },
      )
      .finally(() => {
        for (const id of [host.id, ...more]) {
          this.granting.delete(id);
          this.grantSent.delete(id);
        }
        // The host may have been held while this grant was on its way: judged again now.
        if (failed && !this.closed) this.judgeSoon();
      });
  }

  private heard(hostId: string, now: number, cpuPercent: number): void {
    this.lastGrant.set(hostId, now);
    this.leaseFrom.set(hostId, Math.max(this.leaseFrom.get(hostId) ?? now, now));
    this.live.set(hostId, { lastHeartbeatMs: now, cpuPercent });
  }

  /**
   * How long a grant sent now may make the host's lease last. Fencing waits until `leaseMs` (plus
   * the margin) after the latest instant a grant of this term counted from (`leaseFrom`), so no
   * grant may promise more than that: a grant whose answer is lost, or that arrives late, would
   * otherwise keep the host's VMs running past the moment the leader restarts them elsewhere
   * (found by the farm simulator). A host silent for a whole lease gets 1 ms: it is probed (its
   * answer shows it is back) but not extended.
   */
  private grantMs(hostId: string, nowMs: number): number {
    const base = this.leaseBase(hostId, nowMs);
    this.leaseFrom.set(hostId, Math.max(this.leaseFrom.get(hostId) ?? base, base));
    return Math.max(1, Math.min(this.cfg.leaseMs, base + this.cfg.leaseMs - nowMs));
  }

  /**
   * The instant a grant sent now may count the host's lease from: its last answered grant, never
   * before this leader took over. A host that came Up (registered, re-registered) after that has
   * answered nothing yet: counted from the election it got 1 ms, and refused VM starts for a
   * heartbeat round. Its first grant since it came Up counts from when it is sent (a full lease);
   * the grants after it count from that one until it answers, so a host that never answers is
   * not kept alive by them, and fencing waits from it.
   */
  private leaseBase(hostId: string, nowMs: number): number {
    const base = Math.max(this.lastGrant.get(hostId) ?? this.since, this.since);
    const host = this.state.hosts.get(hostId);
    if (host?.state !== 'HOST_STATE_UP' || host.stateChangedAtMs <= base) return base;
    let first = this.firstGrant.get(hostId);
    if (first?.upSinceMs !== host.stateChangedAtMs)
      this.firstGrant.set(hostId, (first = { upSinceMs: host.stateChangedAtMs, atMs: nowMs }));
    return Math.max(base, first.atMs);
  }

  // --- the controllers ---

  /**
   * Runs the controllers soon (at most every MIN_TICK_MS). A later run already set (the idle
   * timer waiting for the next sweep) is brought forward: a change must not wait for the sweep.
   */
  private schedule(): void {
    if (this.closed) return;
    const now = this.timers.now();
    const at = Math.max(now, this.lastTick + MIN_TICK_MS);
    if (this.tickTimer !== undefined) {
      if (this.tickAt <= at) return;
      this.timers.clear(this.tickTimer);
    }
    this.tickAt = at;
    this.tickTimer = this.timers.set(() => {
      this.tickTimer = undefined;
      this.tick();
    }, at - now);
  }

  private tick(): void {
    if (this.closed) return;
    this.lastTick = this.timers.now();
    this.grantCameUp();
    // Matching a watcher to every host is work per host: only when one changed (or at a sweep).
    const follow = this.hostsChanged || this.lastTick >= this.nextSweep;
    this.hostsChanged = false;
    if (follow) this.followHosts();
    this.place();
    this.failover();
    this.migrations.tick();
    this.sweep();
    const returned = [...this.dirtyHosts.keys()];
    const only = this.changedVms();
    this.dropStale(returned);
    this.observe(only);
    this.reconcile(only);
    // Backoffs end, and sweeps fall due, without any event to wake the loop; a sweep under way,
    // or agents still to follow, go on at the next run.
    if (this.tickTimer === undefined) {
      const busy = this.backoff.size > 0 || this.dirtyVms.size > 0 || this.awaitingCall.size > 0;
      const sweeping = this.sweepAt < this.sweepHosts.length || this.hostsChanged;
      const wait = sweeping
        ? MIN_TICK_MS
        : busy
          ? 500
          : Math.max(MIN_TICK_MS, this.nextSweep - this.timers.now());
      this.tickAt = this.timers.now() + wait;
      this.tickTimer = this.timers.set(() => {
        this.tickTimer = undefined;
        this.tick();
      }, wait);
    }
  }

  /**
   * The sweep: every `sweepMs` the controllers look at every VM, not only the changed ones. It
   * marks the next hosts of the farm as changed, about `sweepSlice` VMs' worth per run, so that
   * a large farm is swept over several runs rather than in one long turn. A sweep falling due
   * before the last one ended starts again from the first host.
   */
  private sweep(): void {
    const now = this.timers.now();
    if (now >= this.nextSweep) {
      this.nextSweep = now + (this.cfg.sweepMs ?? SWEEP_MS);
      this.waiting.clear();
      this.sweepHosts = [...this.state.hosts.keys()];
      this.sweepAt = 0;
    }
    const slice = this.cfg.sweepSlice ?? SWEEP_SLICE;
    let vms = 0;
    while (this.sweepAt < this.sweepHosts.length && vms < slice) {
      const hostId = this.sweepHosts[this.sweepAt++]!;
      if (!this.dirtyHosts.has(hostId)) this.dirtyHosts.set(hostId, false);
      vms += this.state.vmsByHost.get(hostId)?.size ?? 1;
    }
  }

  /** The VMs to look at now, leaving the set empty. */
  private changedVms(): Set<string> {
    const now = this.timers.now();
    for (const [vmId, b] of this.backoff) if (b.untilMs <= now) this.dirtyVms.add(vmId);
    for (const [hostId, all] of this.dirtyHosts) {
      const placed = this.state.vmsByHost.get(hostId);
      if (!placed || (!all && this.restingVms.allAtRest(hostId, placed))) continue;
      for (const vmId of placed) if (all || !this.restingVms.has(vmId)) this.dirtyVms.add(vmId);
    }
    this.dirtyHosts.clear();
    const changed = new Set(this.dirtyVms);
    this.dirtyVms.clear();
    // Looked at again: at rest only if the reconciler finds it so once more.
    for (const vmId of changed) this.restingVms.delete(vmId);
    return changed;
  }

  /**
   * One watcher per registered host, following it if it moves; at most FOLLOW_PER_RUN new ones a
   * run (the next run starts the others: `hostsChanged` stays set).
   */
  private followHosts(): void {
    let started = 0;
    for (const host of this.state.hosts.values()) {
      const ref = { id: host.id, address: host.address };
      const w = this.watchers.get(host.id);
      if (w) w.moveTo(ref);
      else if (started++ >= FOLLOW_PER_RUN) this.hostsChanged = true;
      else {
        const watcher = new AgentWatcher(
          ref,
          this.port,
          this.timers,
          this.logger,
          (vmId) => {
            if (vmId) this.dirtyVms.add(vmId);
            else this.dirtyHosts.set(host.id, true);
            this.schedule();
          },
          this.foreign.hook(host.id),
        );
        this.watchers.set(host.id, watcher);
        watcher.start();
      }
    }
    for (const [id, w] of this.watchers) {
      if (this.state.hosts.has(id)) continue;
      w.stop();
      this.watchers.delete(id);
    }
  }

  private place(): void {
    if (this.placing) return;
    const plan = placementRound(
      this.state,
      this.cfg.scheduler,
      this.cfg.placementBatch,
      { has: (vmId) => this.waiting.has(vmId) || this.proposed.has(vmId) },
      this.proposed.values(),
    );
    // Each waiting VM's reason is committed when it changes; the VM is planned again once a
    // host changes (or at the next sweep).
    const waiting = plan.waiting.filter((w) => this.waiting.get(w.vmId) !== w.message);
    for (const w of plan.waiting) this.waiting.set(w.vmId, w.message);
    if (plan.placements.length === 0 && plan.failures.length === 0 && waiting.length === 0) return;
    this.placing = true;
    const commits = [
      ...chunks(plan.placements).map((c) =>
        this.proposed.during(
          c.map((p) => ({ ...p, config: this.state.vms.get(p.vmId)!.config })),
          this.commit({
            type: 'vm.place',
            placements: c.map(({ vmId, hostId, note }) => ({ vmId, hostId, note })),
          }),
        ),
      ),
      ...chunks(waiting).map((c) => this.commit({ type: 'vm.place', placements: [], waiting: c })),
      ...chunks(plan.failures).map((c) => this.commit({ type: 'vm.place_failed', failures: c })),
    ];
    void Promise.all(commits).finally(() => {
      this.placing = false;
      this.schedule();
    });
  }

  // --- failover ---

  /**
   * Restarts the HA VMs of Down hosts elsewhere, once each host has surely fenced itself (its
   * lease ran out, so the agent turned its VMs off). Fencing first, then the restart, under a new
   * generation, so no VM runs on two hosts.
   */
  private failover(): void {
    if (this.failingOver) return;
    const now = this.timers.now();
    const { fenced, nextMs } = fencedHosts(this.state, this.leaseFrom, this.since, now, {
      leaseMs: this.cfg.leaseMs > 0 ? this.cfg.leaseMs : AGENT_DEFAULT_LEASE_MS,
      marginMs: this.cfg.leaseMarginMs,
    });
    if (nextMs < Infinity) this.wakeAt(nextMs);
    const key = fenced.join(',');
    if (fenced.length === 0 || (key === this.fencedBefore && now < this.nextFailoverMs)) return;
    this.fencedBefore = key;
    this.nextFailoverMs = now + FAILOVER_RETRY_MS;
    this.wakeAt(this.nextFailoverMs);
    const round = failoverRound(this.state, fenced, now, this.cfg.scheduler);
    if (round.restarts.length + round.held.length + round.stranded.length === 0) return;
    this.logger.warn(
      {
        hosts: fenced,
        restarts: round.restarts.length,
        held: round.held.length,
        stranded: round.stranded.length,
      },
      'failing over the VMs of Down hosts',
    );
    this.failingOver = true;
    const commits = [
      ...chunks(round.restarts).map((c) =>
        this.commit({ type: 'vm.failover', restarts: c, held: [], stranded: [] }),
      ),
      ...chunks(round.held).map((c) =>
        this.commit({ type: 'vm.failover', restarts: [], held: c, stranded: [] }),
      ),
      ...chunks(round.stranded).map((c) =>
        this.commit({ type: 'vm.failover', restarts: [], held: [], stranded: c }),
      ),
    ];
    void Promise.all(commits).finally(() => {
      this.failingOver = false;
      this.schedule();
    });
  }

  /** Runs the controllers at `atMs` (a fencing wait ends), unless a run is due sooner. */
  private wakeAt(atMs: number): void {
    if (this.fenceTimer && this.fenceTimer.atMs <= atMs) return;
    if (this.fenceTimer) this.timers.clear(this.fenceTimer.handle);
    const handle = this.timers.set(
      () => {
        this.fenceTimer = undefined;
        this.schedule();
      },
      Math.max(0, atMs - this.timers.now()),
    );
    this.fenceTimer = { handle, atMs };
  }

  /** Has hosts drop the copies of VMs the farm placed elsewhere (an old host back after a failover). */
  private dropStale(hosts: Iterable<string>): void {
    for (const c of staleCopies(this.state, this.watchers, hosts, (id) => this.foreign.of(id))) {
      const key = `${c.hostId}/${c.vmId}`;
      const host = this.hostRef(c.hostId);
      if (!host || this.dropping.has(key)) continue;
      this.dropping.add(key);
      this.logger.info(c, 'dropping a stale copy of a VM placed elsewhere');
      this.port
        .dropStaleVm(host, c.vmId, c.generation)
        .then(
          () => this.watchers.get(c.hostId)?.forget(c.vmId),
          (err: unknown) => {
            if (statusOf(err) === status.NOT_FOUND) this.watchers.get(c.hostId)?.forget(c.vmId);
            else this.logger.warn({ ...c, err }, 'could not drop a stale copy; the next sweep tries again');
          },
        )
        .finally(() => this.dropping.delete(key));
    }
  }

  private observe(only: Set<string>): void {
    // Each report's text is made once: it is what pendingReports holds, and what the commit's
    // end compares (the same string, so the comparison is by identity first). Three
    // JSON.stringify calls per report were 3% of a full 1,000-host farm's simulation.
    const reports: VmReport[] = [];
    const texts: string[] = [];
    for (const r of observedReports(this.state, this.watchers, only)) {
      const text = JSON.stringify(r);
      if (this.pendingReports.get(r.vmId) === text) continue;
      reports.push(r);
      texts.push(text);
    }
    for (let i = 0; i < reports.length; i += CHUNK) {
      const c = reports.slice(i, i + CHUNK);
      const t = texts.slice(i, i + CHUNK);
      c.forEach((r, j) => this.pendingReports.set(r.vmId, t[j]!));
      void this.commit({ type: 'vm.observed', reports: c }).finally(() => {
        c.forEach((r, j) => {
          if (this.pendingReports.get(r.vmId) === t[j]) this.pendingReports.delete(r.vmId);
        });
      });
    }
  }

  private reconcile(only: Set<string>): void {
    const input = { ...this.reconcileView, nowMs: this.timers.now() };
    // Only as many VMs as there is room for calls are weighed, oldest first; the rest wait in
    // awaitingCall unweighed. Weighing (or even copying) all of them each tick (thousands queued
    // behind 256 calls after a large CreateVms) was the leader's largest cost in bench:placement.
    for (const id of only) this.awaitingCall.add(id);
    while (this.awaitingCall.size > 0 && this.inFlight.size < this.cfg.maxCalls) {
      const chunk: string[] = [];
      const room = this.cfg.maxCalls - this.inFlight.size;
      for (const id of this.awaitingCall) {
        chunk.push(id);
        if (chunk.length === room) break;
      }
      for (const id of chunk) this.awaitingCall.delete(id);
      const actions = reconcileVms(this.state, input, chunk);
      for (const action of actions) void this.carryOut(action);
      const acted = new Set(actions.map((a) => a.vmId));
      for (const id of chunk)
        if (
          !acted.has(id) &&
          !this.inFlight.has(id) &&
          !this.backoff.has(id) &&
          atRest(this.state, this.watchers, id)
        )
          this.restingVms.add(id, this.state.vms.get(id)?.hostId);
    }
  }

  // --- agent calls ---

  private async carryOut(a: AgentAction): Promise<void> {
    const host = this.hostRef(a.hostId);
    if (!host) return;
    this.inFlight.add(a.vmId);
    try {
      const outcome = await this.call(host, a);
      if (outcome.vm) this.watchers.get(a.hostId)?.observe(outcome.vm);
      let report = outcome.vm ? reportOf(a.vmId, a.hostId, agentView(outcome.vm)) : undefined;
      if (a.kind === 'create' && report) report = await this.followCreate(host, report);
      this.backoff.delete(a.vmId);
      // What a create brings is the host's report, and reports travel many to a command; an
      // operation's other steps commit their own result.
      if (a.opId && (a.kind !== 'create' || !report))
        await this.commit({
          type: 'op.result',
          opId: a.opId,
          ok: true,
          ...opt('report', report),
          ...opt('tree', outcome.tree),
        });
      else if (report) await this.report(report);
    } catch (err) {
      await this.failed(a, err);
    } finally {
      this.inFlight.delete(a.vmId);
      this.dirtyVms.add(a.vmId);
      this.schedule();
    }
  }

  /**
   * A created VM that should run is started at once, in the same turn as its create, rather than
   * once the create's report has gone through the log and the next tick (a failover of 200 VMs
   * otherwise waits for 200 creates, their reports, then 200 starts). The start is the very call
   * the reconciler would make next (afterCreate), under the same generation. If it fails, the
   * create's report is committed as usual and the reconciler makes the start again, with its
   * usual handling of a refusal or a retry.
   */
  private async followCreate(host: HostRef, created: VmReport): Promise<VmReport> {
    const step = afterCreate(this.state, created);
    if (step?.kind !== 'change-state') return created;
    try {
      const vm = await this.port.changeVmState(host, step.vmId, step.action, step.generation);
      this.watchers.get(step.hostId)?.observe(vm);
      return reportOf(step.vmId, step.hostId, agentView(vm));
    } catch (err) {
      this.logger.debug(
        { vm: step.vmId, host: step.hostId, err },
        'the start after a create failed; the reconciler will ask again',
      );
      return created;
    }
  }

  private async call(host: HostRef, a: AgentAction): Promise<{ vm?: pb.Vm__Output; tree?: Tree }> {
    const p = this.port;
    switch (a.kind) {
      case 'create':
        try {
          return { vm: await p.createVm(host, a.vmId, a.config, a.generation, a.start) };
        } catch (err) {
          // The host still holds an older copy (it ran the VM before a failover or a move, and
          // had not dropped it yet): under the new generation that copy is stale. The agent
          // drops it only if its generation is older, then the create goes ahead.
          if (statusOf(err) !== status.ALREADY_EXISTS) throw err;
          await p.dropStaleVm(host, a.vmId, a.generation);
          return { vm: await p.createVm(host, a.vmId, a.config, a.generation, a.start) };
        }
      case 'change-state':
        return { vm: await p.changeVmState(host, a.vmId, a.action, a.generation) };
      case 'update':
        return { vm: await p.updateVm(host, a.vmId, a.config, a.paths, a.generation) };
      case 'delete':
        try {
          await p.deleteVm(host, a.vmId, a.generation);
        } catch (err) {
          if (statusOf(err) !== status.NOT_FOUND) throw err;
        }
        this.watchers.get(a.hostId)?.forget(a.vmId);
        return {};
      case 'checkpoint.create':
        await p.createCheckpoint(host, a.vmId, a.checkpointId, a.name, a.generation);
        return { tree: await this.tree(host, a.vmId) };
      case 'checkpoint.rename':
        await p.renameCheckpoint(host, a.checkpointId, a.name, a.generation);
        return { tree: await this.tree(host, a.vmId) };
      case 'checkpoint.delete':
        await p.deleteCheckpoint(host, a.checkpointId, a.subtree, a.generation);
        return { tree: await this.tree(host, a.vmId) };
      case 'checkpoint.apply': {
        const vm = await p.applyCheckpoint(host, a.checkpointId, a, a.generation);
        return { vm, tree: await this.tree(host, a.vmId) };
      }
    }
  }

  private async tree(host: HostRef, vmId: string): Promise<Tree> {
    const t = await this.port.listCheckpoints(host, vmId);
    return {
      currentId: t.currentId,
      checkpoints: t.checkpoints.map((c) => ({
        id: c.id,
        name: c.name,
        parentId: c.parentId,
        createdAtMs: c.createdAtMs,
        includesMemory: c.includesMemory,
        vmState: c.vmState,
      })),
    };
  }

  /**
   * A refusal the host will repeat ends the operation with the host's own reason; anything else
   * (unreachable, timed out) is tried again after a backoff, since every call is idempotent.
   */
  private async failed(a: AgentAction, err: unknown): Promise<void> {
    const code = statusOf(err);
    const message = (err as { details?: string }).details ?? (err as Error).message ?? String(err);
    if (a.opId && code !== undefined && DEFINITIVE.has(code)) {
      this.logger.info({ vm: a.vmId, op: a.opId, action: a.kind, message }, 'the host refused');
      await this.commit({
        type: 'op.result',
        opId: a.opId,
        ok: false,
        error: { code: status[code] as ErrorCode, message: message.slice(0, 4096) },
      });
      return;
    }
    const prev = this.backoff.get(a.vmId)?.delayMs ?? 250;
    const delayMs = Math.min(30_000, prev * 2);
    this.backoff.set(a.vmId, { untilMs: this.timers.now() + delayMs, delayMs });
    this.logger.warn(
      { vm: a.vmId, host: a.hostId, action: a.kind, message, retryInMs: delayMs },
      'agent call failed; will retry',
    );
  }

  /**
   * Commits a report with the others made in the same turn, as one vm.observed command. It is
   * pending (pendingReports) until committed: the agent's answer also went into its watcher's
   * inventory, and a tick before the commit (one every 20 ms; a loaded log takes longer) found
   * the log behind the inventory and proposed the same report again, a second vm.observed per
   * create for every replica to carry and check (bench:placement's VMs were reported twice).
   */
  private report(r: VmReport): Promise<void> {
    const text = JSON.stringify(r);
    this.pendingReports.set(r.vmId, text);
    const settled = () => {
      if (this.pendingReports.get(r.vmId) === text) this.pendingReports.delete(r.vmId);
    };
    return this.batchReport(r).finally(settled);
  }

  private batchReport(r: VmReport): Promise<void> {
    if (!this.reports) {
      const batch = { reports: [] as VmReport[], committed: Promise.resolve() };
      batch.committed = new Promise<void>((resolve) =>
        this.timers.set(() => {
          if (this.reports === batch) this.reports = undefined;
          void Promise.all(
            chunks(batch.reports).map((c) => this.commit({ type: 'vm.observed', reports: c })),
          ).then(() => resolve());
        }, 0),
      );
      this.reports = batch;
    }
    this.reports.reports.push(r);
    return this.reports.committed;
  }

  /** Commits a command unless this session is over; a failure is logged, never thrown. */
  private async commit(cmd: CommandBody): Promise<void> {
    if (this.closed) return;
    try {
      await this.proposer.submit(cmd);
    } catch (err) {
      if (!this.closed) this.logger.warn({ err, command: cmd.type }, 'could not commit a controller command');
    }
  }
}

type Tree = { checkpoints: VmReportTree[]; currentId: string };
type VmReportTree = {
  id: string;
  name: string;
  parentId: string;
  createdAtMs: number;
  includesMemory: boolean;
  vmState: VmReport['state'];
};

function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

const opt = <K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> =>
  value === undefined ? {} : ({ [key]: value } as Record<K, V>);
