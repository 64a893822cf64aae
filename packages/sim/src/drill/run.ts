/**
 * Plays a drill's timeline on the farm simulator, on its virtual clock, and records what happens
 * as the same observations the runner of real processes records (@hyperfarm/client's
 * drills/runner.ts), so the same verdicts judge them. The timeline runs in the simulated client's
 * process: its requests cross the simulated network to the real daemon handlers, and its waits
 * are virtual time.
 */
import { ApiError, status, statusOf, type pb } from '@hyperfarm/api';
import {
  createVmRequest,
  ms,
  nlbClusterRequest,
  nlbMemberRequests,
  switchRequest,
  trafficRequest,
  trafficTotals,
  playTimeline,
  until,
  Writer,
  writerVmConfig,
  type FarmProbe,
  type HostRef,
  type RunClock,
  type Observation,
  type Plan,
  type Step,
  type StepKind,
} from '@hyperfarm/client';
import { migrationView, type FarmState, type OperationRecord } from '@hyperfarm/daemon';
import { Role } from '@hyperfarm/raft';
import { VirtualClock } from '../clock.js';
import { nlbSummary } from '../nlb-checks.js';
import { overWire, wireMethod } from '../wire.js';
import type { DrillHandle, FarmSimulation } from '../farm.js';
import type { SimHost } from '../host.js';
import type { SimDaemon } from '../replica.js';

/** How long a step waits for the operation it started, as a person would before giving up. */
const OPERATION_MS = 120_000;

export class SimDrillRun {
  readonly obs: Observation[] = [];
  private readonly h: DrillHandle;
  /** The drill's names and the simulator's ids, both ways. */
  private readonly hostIds = new Map<string, string>();
  private readonly hostNames = new Map<string, string>();
  private readonly daemonIds = new Map<string, string>();
  private readonly daemonNames = new Map<string, string>();
  private readonly ids = new Map<string, string>();
  private readonly names = new Map<string, string>();
  /** What the daemons reported last, to record changes only. */
  private viewKey = '';
  private readonly vmSeen = new Map<string, string>();
  private readonly hostSeen = new Map<string, string>();
  private leaderSeen: string | undefined;
  /** The host incarnation each agent stream follows. */
  private readonly following = new Map<SimHost, number>();
  private readonly clock: RunClock;
  private readonly writer: Writer;
  private checking = true;
  /** The drill's switches and NLB clusters made so far; each traffic run and the host it runs on. */
  private readonly created = new Set<string>();
  private readonly trafficHosts = new Map<string, string>();
  private sampling = false;

  constructor(
    private readonly plan: Plan,
    private readonly farm: FarmSimulation,
    private readonly onStep?: (line: string) => void,
  ) {
    this.h = farm.drillHandle();
    this.clock = {
      now: () => this.now(),
      sleep: (n) => this.sleep(n),
      record: (o) => this.record(o),
      ...(onStep ? { onStep } : {}),
    };
    this.writer = new Writer(plan, this.clock, async (name) => {
      await this.operation('CreateVm', {
        config: writerVmConfig(name),
        hostId: '',
        start: false,
        requestId: name,
      });
    });
    const simHosts = [...farm.hosts.keys()];
    plan.hosts.forEach((host, i) => {
      this.hostIds.set(host.name, simHosts[i]!);
      this.hostNames.set(simHosts[i]!, host.name);
    });
    [...farm.daemons.keys()].forEach((id, i) => {
      this.daemonIds.set(`daemon-${i + 1}`, id);
      this.daemonNames.set(id, `daemon-${i + 1}`);
    });
  }

  private now(): number {
    return this.farm.clock.now - VirtualClock.EPOCH;
  }

  private record(o: Observation): void {
    this.obs.push(o);
  }

  private sleep(n: number): Promise<void> {
    return new Promise((resolve) => this.h.client.set(resolve, n));
  }

  /**
   * Runs the farm's clock until the timeline (and its end) has played: one callback at a time,
   * the promises it settled, then the observers and the simulator's safety invariants.
   */
  async run(): Promise<Observation[]> {
    let done = false;
    let failure: unknown;
    this.script().then(
      () => (done = true),
      (err: unknown) => ((failure = err), (done = true)),
    );
    const clock = this.farm.clock;
    while (!done) {
      const ev = clock.pop();
      if (!ev) break;
      ev.fn();
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      this.observe();
      // The first violation is the one to replay; what follows from it is noise.
      if (this.checking) {
        this.h.checkSafety();
        if (this.farm.violations.length > 0) this.checking = false;
      }
    }
    if (failure) throw failure;
    return this.obs;
  }

  private async script(): Promise<void> {
    this.h.client.set(() => this.h.registerHosts(), 500);
    // Every daemon serves and sees every host Up (a follower that has not applied the
    // registrations yet would refuse a create for want of a guest catalog).
    await until(this.clock, 'every host Up', 60_000, () => {
      for (const d of this.farm.daemons.values()) {
        if (!d.serving) return `${this.daemonNames.get(d.id)} does not serve yet`;
        const missing = this.plan.hosts
          .map((x) => x.name)
          .filter((n) => d.machine.state.hosts.get(this.hostIds.get(n)!)?.state !== 'HOST_STATE_UP');
        if (missing.length) return `not Up for ${this.daemonNames.get(d.id)}: ${missing.join(', ')}`;
      }
      return true;
    });
    await playTimeline(this.plan, this.clock, this.probe, this.writer, (step, kind) => this.play(step, kind));
    await this.finish();
  }

  private async finish(): Promise<void> {
    await this.writer.stop();
    this.sampling = false;
    await this.sampleTraffic().catch(() => undefined);
    // A linearizable listing: the leader's, once there is one.
    try {
      await until(this.clock, 'a leader to list the VMs', 30_000, () =>
        this.leaderDaemon() ? true : 'no leader',
      );
      const s = this.leaderDaemon()!.machine.state;
      this.record({ t: this.now(), type: 'final', vms: [...s.vms.values()].map((v) => v.config.name) });
      for (const m of s.migrations.values()) {
        const v = migrationView(m);
        if (v.phase === 'MIGRATION_PHASE_UNSPECIFIED') continue;
        this.record({
          t: this.now(),
          type: 'migration',
          id: v.id,
          vm: this.names.get(v.vmId) ?? v.vmId,
          phase: v.phase,
          downtimeMs: Number(v.downtimeMs),
          error: v.error,
          from: this.hostName(v.sourceHostId),
          to: this.hostName(v.targetHostId),
        });
      }
    } catch (err) {
      this.onStep?.(`could not read the farm's VMs at the end: ${(err as Error).message}`);
    }
  }

  /** The drill's NLB clusters as the hosts' networks hold them now (none without networks). */
  nlbReport(): ReturnType<typeof nlbSummary> {
    const clusterNames = new Map([...this.clusterIds].map(([name, id]) => [id, name]));
    return nlbSummary(
      this.farm.hosts.values(),
      (id) => clusterNames.get(id) ?? id,
      (id) => this.names.get(id) ?? id,
      (id) => this.hostName(id),
    );
  }

  // --- observers ---

  private hostName(id: string): string {
    return this.hostNames.get(id) ?? id;
  }

  private hostOfName(name: string): SimHost {
    return this.farm.hosts.get(this.hostIds.get(name)!)!;
  }

  private leaderDaemon(): SimDaemon | undefined {
    const d = this.farm.leader();
    return d?.serving ? d : undefined;
  }

  /** The farm as the daemons report it: the leader's state, else the daemon that applied most. */
  private view(): FarmState | undefined {
    return (this.leaderDaemon() ?? this.h.mostApplied())?.machine.state;
  }

  /** After each callback: what the daemons report, every agent's events, the agreed leader. */
  private observe(): void {
    const d = this.leaderDaemon() ?? this.h.mostApplied();
    const key = d ? `${d.id}#${d.boots}@${d.appliedIndex}` : '';
    if (d && key !== this.viewKey) {
      this.viewKey = key;
      this.recordView(d.machine.state);
    }
    for (const host of this.farm.hosts.values())
      if (host.alive && this.following.get(host) !== host.boots) this.followAgent(host);
    const leader = this.agreedLeader();
    if (leader !== this.leaderSeen) {
      this.leaderSeen = leader;
      this.record({ t: this.now(), type: 'leader', leader });
    }
  }

  private recordView(s: FarmState): void {
    for (const vm of s.vms.values()) {
      const name = vm.config.name;
      this.ids.set(name, vm.id);
      this.names.set(vm.id, name);
      const host = this.hostName(vm.hostId);
      const seen = `${vm.observed.state}|${host}`;
      if (this.vmSeen.get(vm.id) === seen) continue;
      this.vmSeen.set(vm.id, seen);
      this.record({ t: this.now(), type: 'vm', vm: name, state: vm.observed.state, host });
    }
    for (const id of this.vmSeen.keys())
      if (!s.vms.has(id)) {
        this.vmSeen.delete(id);
        this.record({ t: this.now(), type: 'vm', vm: this.names.get(id) ?? id, state: 'DELETED', host: '' });
      }
    for (const host of s.hosts.values()) {
      if (this.hostSeen.get(host.id) === host.state) continue;
      this.hostSeen.set(host.id, host.state);
      this.record({ t: this.now(), type: 'host', host: this.hostName(host.id), state: host.state });
    }
  }

  /** A host's own events (its initial state first), for this incarnation: it dies with it. */
  private followAgent(host: SimHost): void {
    this.following.set(host, host.boots);
    const name = this.hostName(host.id);
    host.watch(
      (e) => {
        if (!e.vmId) return;
        this.record({
          t: Number(e.timeMs) - VirtualClock.EPOCH,
          type: 'agent',
          host: name,
          vm: e.vm?.config?.name || this.names.get(e.vmId) || e.vmId,
          state: e.vm?.status?.state ?? '',
          event: e.type,
        });
      },
      () => undefined,
    );
  }

  /** The leader every live daemon names, or '' while they disagree or know none. */
  private agreedLeader(): string {
    const live = [...this.farm.daemons.values()].filter((d) => d.alive);
    const named = new Set(live.map((d) => (d.role === Role.Leader ? d.id : d.leader)));
    const [id] = named;
    return named.size === 1 && id && live.some((d) => d.id === id) ? this.daemonNames.get(id)! : '';
  }

  // --- the client ---

  /**
   * A ClusterService call, tried again on another daemon while the farm cannot answer (a dead
   * or cut-off daemon, an election), for up to 30 s, as the CLI's client does.
   */
  private async call<T>(method: string, req: unknown): Promise<T> {
    const deadline = this.now() + 30_000;
    for (;;) {
      try {
        return await this.h.request<T>(method, req);
      } catch (err) {
        const code = statusOf(err);
        const retry = code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === undefined;
        if (!retry || this.now() > deadline) throw err;
        await this.sleep(200);
      }
    }
  }

  /**
   * A network API call, its request and answer as gRPC carries them (every field present): the
   * network handlers read fields the drill's requests leave out.
   */
  private async netCall<T>(method: string, req: unknown): Promise<T> {
    const { def } = wireMethod('ClusterService', method);
    return overWire.response(def, await this.call(method, overWire.request(def, req))) as T;
  }

  /** The drill's switches, once. */
  private async createSwitches(): Promise<void> {
    for (const sw of this.plan.switches) {
      if (this.created.has(`switch/${sw.name}`)) continue;
      await this.netCall('CreateSwitch', switchRequest(sw));
      this.created.add(`switch/${sw.name}`);
    }
  }

  /** NLB clusters whose members all exist now, once; then waits until their members converge. */
  private async createNlbClusters(): Promise<string[]> {
    const made: string[] = [];
    for (const n of this.plan.nlb) {
      if (this.created.has(`nlb/${n.name}`) || !n.members.every((m) => this.ids.has(m))) continue;
      const cluster = await this.netCall<pb.NlbCluster__Output>('CreateNlbCluster', nlbClusterRequest(n));
      for (const req of nlbMemberRequests(n, cluster.id, (m) => this.ids.get(m) ?? m))
        await this.netCall('AddNlbMember', req);
      this.created.add(`nlb/${n.name}`);
      this.clusterIds.set(n.name, cluster.id);
      let st: pb.NlbClusterState__Output | undefined;
      await until(this.clock, `NLB ${n.name} converged`, 60_000, async () => {
        st = await this.netCall<pb.NlbClusterState__Output>('GetNlbClusterState', { id: cluster.id });
        return st.converged && st.members.length === n.members.length
          ? true
          : `${st.members.length} members converged`;
      });
      made.push(n.name);
    }
    return made;
  }

  /** The drill's NLB clusters by name, with the farm's ids. */
  readonly clusterIds = new Map<string, string>();

  private async sampleTraffic(): Promise<void> {
    for (const [name, hostId] of this.trafficHosts) {
      const r = await this.netCall<pb.TrafficReport__Output>('GetTraffic', { hostId, id: name });
      this.record({ t: this.now(), type: 'traffic', name, ...trafficTotals(r) });
    }
  }

  /** The traffic's counts every second while it runs, as the drill runner samples them. */
  private sampleTrafficEvery(period: number): void {
    if (this.sampling) return;
    this.sampling = true;
    const loop = async (): Promise<void> => {
      while (this.sampling) {
        await this.sampleTraffic().catch(() => undefined);
        await this.sleep(period);
      }
    };
    void loop();
  }

  /** A call that starts an operation, then its end: the operation, or its error thrown. */
  private async operation(method: string, req: unknown): Promise<OperationRecord> {
    const op = await this.call<pb.Operation>(method, req);
    let last: OperationRecord | undefined;
    await until(this.clock, `operation ${op.id} (${method})`, OPERATION_MS, () => {
      last = this.view()?.operations.get(op.id!);
      return last?.done ? true : `${last?.progress ?? 0}%: ${last?.message || 'not done'}`;
    });
    if (last!.error) throw new ApiError(status[last!.error.code], last!.error.message);
    return last!;
  }

  // --- steps ---

  private vmsOf(set: string[] | 'all' | undefined): string[] {
    return set === undefined || set === 'all' ? this.plan.vms.map((v) => v.name) : set;
  }

  private hostOf(ref: HostRef): string {
    if (ref.host) return ref.host;
    const vm = this.view()?.vms.get(this.ids.get(ref.hostOf!) ?? '');
    if (!vm?.hostId) throw new Error(`${ref.hostOf} is on no host`);
    return this.hostName(vm.hostId);
  }

  /** A daemon the drill names ('leader': the one every live daemon agrees on, waited for up to 10 s). */
  private async daemon(name: string): Promise<SimDaemon> {
    if (name === 'leader') {
      await until(this.clock, 'a leader every daemon names', 10_000, () =>
        this.agreedLeader() ? true : 'none',
      );
      name = this.agreedLeader();
    }
    return this.farm.daemons.get(this.daemonIds.get(name)!)!;
  }

  /** The simulator's endpoint name of a process the drill names (a daemon, a host, 'leader'). */
  private async process(name: string): Promise<string> {
    return this.hostIds.get(name) ?? (await this.daemon(name)).id;
  }

  private fault(what: string, on: boolean, host?: string): void {
    this.record({ t: this.now(), type: 'fault', what, ...(host ? { host } : {}), on });
  }

  private async play(step: Step, kind: StepKind): Promise<string | undefined> {
    const net = this.farm.net;
    switch (kind) {
      case 'create': {
        const c = step.create ?? {};
        const names = c.vms
          ? this.vmsOf(c.vms)
          : this.plan.vms.map((v) => v.name).filter((n) => !this.ids.has(n));
        await this.createSwitches();
        await Promise.all(
          names.map(async (name) => {
            const op = await this.operation('CreateVm', {
              hostId: '',
              requestId: `drill-create-${name}`,
              ...createVmRequest(this.plan, name, c.start ?? true, (h) => this.hostIds.get(h)!),
            });
            this.record({ t: this.now(), type: 'write', name, ok: true });
            this.ids.set(name, op.targetId);
            this.names.set(op.targetId, name);
          }),
        );
        const nlbs = await this.createNlbClusters();
        return `created ${[...names, ...nlbs.map((n) => `NLB ${n}`)].join(', ')}`;
      }
      case 'start': {
        const names = this.vmsOf(step.start?.vms);
        await Promise.all(
          names.map((n) =>
            this.operation('ChangeVmState', { id: this.ids.get(n) ?? n, action: 'VM_ACTION_START' }),
          ),
        );
        return `started ${names.join(', ')}`;
      }
      case 'migrate': {
        const m = step.migrate!;
        const req = {
          vmId: this.ids.get(m.vm) ?? m.vm,
          targetHostId: m.to ? this.hostIds.get(m.to)! : '',
          kind: m.kind === 'quick' ? 'MIGRATION_KIND_QUICK' : 'MIGRATION_KIND_LIVE',
        };
        if (m.wait === false) {
          await this.call('MigrateVm', req);
          return `migration of ${m.vm} started`;
        }
        await this.operation('MigrateVm', req);
        return `${m.vm} now on ${this.hostName(this.view()?.vms.get(req.vmId)?.hostId ?? '')}`;
      }
      case 'drain': {
        const host = this.hostOf(step.drain!);
        this.fault(`drain ${host}`, true);
        const req = { id: this.hostIds.get(host)! };
        if (step.drain!.wait === false) await this.call('DrainHost', req);
        else await this.operation('DrainHost', req);
        return `${host} drained`;
      }
      case 'undrain': {
        const host = this.hostOf(step.undrain!);
        await this.call('UndrainHost', { id: this.hostIds.get(host)! });
        this.fault(`undrain ${host}`, false);
        return undefined;
      }
      case 'kill-agent': {
        const host = this.hostOf(step['kill-agent']!);
        const h = this.hostOfName(host);
        if (h.alive) this.h.crashHost(h);
        this.record({ t: this.now(), type: 'agent-gone', host });
        this.fault(`kill -9 ${host}`, true);
        return `killed ${host}'s agent`;
      }
      case 'restart-agent': {
        const host = this.hostOf(step['restart-agent']!);
        const h = this.hostOfName(host);
        if (h.alive) {
          this.h.crashHost(h);
          this.record({ t: this.now(), type: 'agent-gone', host });
        }
        this.fault(`restart ${host}`, false);
        this.h.bootHost(h);
        await until(this.clock, `${host} Up again`, 60_000, () => {
          const st = this.view()?.hosts.get(h.id)?.state;
          return st === 'HOST_STATE_UP' ? true : `${host} is ${st}`;
        });
        return `${host} restarted and Up`;
      }
      case 'kill-leader': {
        const d = await this.daemon('leader');
        d.crash();
        this.fault(`kill -9 ${this.daemonNames.get(d.id)} (leader)`, true);
        return `killed ${this.daemonNames.get(d.id)}, the leader`;
      }
      case 'kill-daemon': {
        (await this.daemon(step['kill-daemon']!)).crash();
        this.fault(`kill -9 ${step['kill-daemon']}`, true);
        return undefined;
      }
      case 'restart-daemons': {
        const dead = [...this.farm.daemons.values()].filter((d) => !d.alive);
        for (const d of dead) this.h.bootDaemon(d);
        const names = dead.map((d) => this.daemonNames.get(d.id)!);
        this.fault(`restart ${names.join(', ') || 'no daemon'}`, false);
        return names.length ? `started ${names.join(', ')}` : 'every daemon was running';
      }
      case 'partition': {
        const all = [...this.daemonIds.keys()];
        let side = step.partition!.daemons;
        if (!side) {
          const leader = this.daemonNames.get((await this.daemon('leader')).id)!;
          side = [leader, ...all.filter((d) => d !== leader)].slice(0, Math.floor((all.length - 1) / 2));
        }
        for (const a of side)
          for (const b of all.filter((d) => !side.includes(d)))
            net.cut(this.daemonIds.get(a)!, this.daemonIds.get(b)!);
        this.fault(`partition ${side.join(', ')} | rest`, true);
        return `cut ${side.join(', ')} off from the other daemons`;
      }
      case 'isolate': {
        const host = this.hostOf(step.isolate!);
        for (const d of this.farm.daemons.keys()) net.cut(this.hostIds.get(host)!, d);
        this.fault(`isolate ${host}`, true, host);
        return `cut ${host} off from every daemon`;
      }
      case 'heal':
        net.heal();
        this.fault('heal every link', false);
        return undefined;
      case 'slow-link': {
        const s = step['slow-link']!;
        const from = await this.process(s.from);
        const to = s.to
          ? [await this.process(s.to)]
          : [...this.farm.daemons.keys()].filter((d) => d !== from);
        for (const t of to) net.slowLink(from, t, s.delay === undefined ? 0 : ms(s.delay), s.drop ?? 0);
        const name = (id: string) => this.hostNames.get(id) ?? this.daemonNames.get(id)!;
        const host = this.hostNames.get(from);
        this.fault(`slow ${name(from)} -> ${to.map(name).join(', ')}`, true, host);
        return undefined;
      }
      case 'fill-disk': {
        const host = this.hostOf(step['fill-disk']!);
        const full = step['fill-disk']!.full ?? true;
        this.hostOfName(host).diskFull = full;
        this.fault(`${host} storage ${full ? 'full' : 'emptied'}`, full, host);
        return undefined;
      }
      case 'stall': {
        const s = step.stall!;
        const id = await this.process(s.process);
        const duration = ms(s.duration);
        const proc = this.farm.hosts.get(id) ?? this.farm.daemons.get(id)!;
        if (proc.scope) proc.scope.pausedUntil = this.farm.clock.now + duration;
        const host = this.hostNames.get(id);
        const name = host ?? this.daemonNames.get(id)!;
        this.fault(`stall ${name} ${duration} ms`, true, host);
        this.record({
          t: this.now() + duration,
          type: 'fault',
          what: `${name} resumes`,
          ...(host ? { host } : {}),
          on: false,
        });
        return undefined;
      }
      case 'start-traffic': {
        const t = this.plan.traffic.find((x) => x.name === step['start-traffic'])!;
        const r = await this.netCall<pb.TrafficReport__Output>('StartTraffic', trafficRequest(this.plan, t));
        this.trafficHosts.set(t.name, r.hostId);
        this.sampleTrafficEvery(1_000);
        return `traffic ${t.name} from ${this.hostName(r.hostId)}`;
      }
      case 'mark-traffic': {
        const m = step['mark-traffic']!;
        await this.netCall('MarkTrafficPhase', {
          hostId: this.trafficHosts.get(m.traffic) ?? '',
          id: m.traffic,
          phase: m.phase,
        });
        return undefined;
      }
      case 'stop-traffic': {
        const name = step['stop-traffic']!;
        await this.netCall('StopTraffic', { hostId: this.trafficHosts.get(name) ?? '', id: name });
        return undefined;
      }
      default:
        throw new Error(`step ${kind} cannot be played in the simulator`);
    }
  }

  /** What the conditions see: the daemons' state, and each host's own engine. */
  private readonly probe: FarmProbe = {
    vms: () =>
      Promise.resolve(
        [...(this.view()?.vms.values() ?? [])].map((v) => ({
          id: v.id,
          name: v.config.name,
          state: v.observed.state,
          host: this.hostName(v.hostId),
        })),
      ),
    hostStates: () =>
      Promise.resolve(
        new Map(
          [...(this.view()?.hosts.values() ?? [])].map((h) => [this.hostName(h.id), h.state as string]),
        ),
      ),
    hostNames: () => this.plan.hosts.map((h) => h.name),
    agentRuns: (host, vmId) => {
      const h = this.farm.hosts.get(this.hostIds.get(host) ?? '');
      try {
        return Promise.resolve(h?.alive === true && h.getVm(vmId).status?.state === 'VM_STATE_RUNNING');
      } catch {
        return Promise.resolve(false);
      }
    },
    // A host whose agent is dead runs nothing.
    agentVms: (host) => {
      const h = this.hostOfName(host);
      return Promise.resolve(
        h.alive
          ? h.listVms().map((v) => ({ name: v.config?.name ?? v.id, state: v.status?.state ?? '' }))
          : [],
      );
    },
    leader: () => Promise.resolve(this.agreedLeader()),
    migrating: () =>
      Promise.resolve(
        [...(this.view()?.migrations.values() ?? [])]
          .map(migrationView)
          .filter((m) => !['MIGRATION_PHASE_COMPLETED', 'MIGRATION_PHASE_FAILED'].includes(m.phase))
          .map((m) => this.names.get(m.vmId) ?? m.vmId),
      ),
  };
}
