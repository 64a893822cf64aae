/**
 * Plays a drill's timeline against a farm and records what happens. This is the I/O edge: it
 * calls the farm, follows the daemons' Watch stream and every agent's own event stream, and
 * appends observations; the verdicts are computed from them afterwards (verdict.ts).
 */
import type * as grpc from '@grpc/grpc-js';
import { createClient, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';
import { HyperfarmClient } from '../client/hyperfarm-client.js';
import { ms, type Plan } from './format.js';
import type { DrillFarm } from './drill-farm.js';
import type { Observation } from './observations.js';
import {
  createVmRequest,
  nlbClusterRequest,
  nlbMemberRequests,
  switchRequest,
  trafficRequest,
  trafficTotals,
  writerVmConfig,
} from './requests.js';
import { playTimeline, until, Writer, type FarmProbe, type RunClock } from './timeline.js';
import type { HostRef, Step, StepKind } from './types.js';

const proto = () => hyperfarmProto().hyperfarm.v1;
const sleep = (n: number) => new Promise<void>((r) => setTimeout(r, n));

/** A fault call waits for its channel (see CallOptions.waitForReady), within 5 s. */
const FAULT_CALL = { timeoutMs: 5_000, waitForReady: true };

export interface RunOptions {
  /** Told of each step as it starts and ends, for a person watching. */
  onStep?: (line: string) => void;
}

export class DrillRun {
  readonly obs: Observation[] = [];
  private readonly started = Date.now();
  private readonly client: HyperfarmClient;
  private readonly clock: RunClock;
  private readonly writer: Writer;
  private readonly stop = new AbortController();
  private readonly background: Promise<void>[] = [];
  private readonly ids = new Map<string, string>();
  private readonly names = new Map<string, string>();
  private readonly trafficHosts = new Map<string, string>();
  private readonly channels = new Map<string, grpc.Client>();

  constructor(
    private readonly plan: Plan,
    private readonly farm: DrillFarm,
    private readonly opts: RunOptions = {},
  ) {
    this.client = new HyperfarmClient({ endpoints: farm.endpoints, deadlineMs: 20_000 });
    this.clock = {
      now: () => this.now(),
      sleep,
      record: (o) => this.record(o),
      ...(opts.onStep ? { onStep: opts.onStep } : {}),
    };
    this.writer = new Writer(plan, this.clock, async (name) => {
      // Acknowledged means done: a create the farm accepts can still fail (no host has room)
      // and is then undone, which its operation reports.
      await this.client.run('createVm', { config: writerVmConfig(name) });
    });
  }

  private now(): number {
    return Date.now() - this.started;
  }

  private record(o: Observation): void {
    this.obs.push(o);
  }

  /** Plays the whole timeline (stopping at the first step that fails), then reads the end state. */
  async run(): Promise<Observation[]> {
    this.watchDaemons();
    for (const h of this.farm.hostNames()) this.watchAgent(h);
    this.background.push(this.sampleLeader());
    await this.waitReady();
    await playTimeline(this.plan, this.clock, this.probe, this.writer, (step, kind) => this.play(step, kind));
    await this.finish();
    return this.obs;
  }

  /** Every daemon answers and every host is Up before the timeline starts. */
  private async waitReady(): Promise<void> {
    await until(this.clock, 'every host Up', 60_000, async () => {
      const hosts = await this.client.list('listHosts', {}, (r) => r.hosts);
      const up = new Set(
        hosts.filter((h) => h.state === 'HOST_STATE_UP').map((h) => this.farm.hostName(h.id)),
      );
      const missing = this.farm.hostNames().filter((h) => !up.has(h));
      return missing.length ? `not Up: ${missing.join(', ')}` : true;
    });
  }

  private async finish(): Promise<void> {
    await this.writer.stop();
    await this.sampleTraffic().catch(() => undefined);
    try {
      const vms = await this.client.list('listVms', {}, (r) => r.vms);
      this.record({ t: this.now(), type: 'final', vms: vms.map((v) => v.config?.name ?? v.id) });
    } catch (err) {
      this.opts.onStep?.(`could not read the farm's VMs at the end: ${(err as Error).message}`);
    }
    if (
      this.plan.expectations.some((e) => e.kind === 'migrationDowntime') ||
      this.plan.steps.some((s) => s.kind === 'migrate' || s.kind === 'drain')
    )
      try {
        for (const m of await this.client.list('listMigrations', {}, (r) => r.migrations))
          this.recordMigration(m);
      } catch (err) {
        this.opts.onStep?.(`could not read the farm's migrations: ${(err as Error).message}`);
      }
    this.stop.abort();
    await Promise.allSettled(this.background);
    this.client.close();
    for (const c of this.channels.values()) c.close();
  }

  private recordMigration(m: pb.Migration__Output): void {
    // An attached farm keeps the migrations of earlier runs: only this run's count.
    if (m.phase === 'MIGRATION_PHASE_UNSPECIFIED' || Number(m.startedAtMs) < this.started) return;
    this.record({
      t: this.now(),
      type: 'migration',
      id: m.id,
      vm: this.names.get(m.vmId) ?? m.vmId,
      phase: m.phase,
      downtimeMs: Number(m.downtimeMs),
      error: m.error,
      from: this.farm.hostName(m.sourceHostId),
      to: this.farm.hostName(m.targetHostId),
    });
  }

  // --- observers ---

  private watchDaemons(): void {
    this.background.push(
      (async () => {
        try {
          for await (const e of this.client.watch({ fromRevision: 0 }, { signal: this.stop.signal })) {
            if (e.vm) {
              const name = e.vm.config?.name ?? e.id;
              this.ids.set(name, e.vm.id);
              this.names.set(e.vm.id, name);
              this.record({
                t: this.now(),
                type: 'vm',
                vm: name,
                state: e.type === 'EVENT_TYPE_DELETE' ? 'DELETED' : (e.vm.status?.state ?? ''),
                host: this.farm.hostName(e.vm.status?.hostId ?? ''),
              });
            } else if (e.host) {
              this.record({
                t: this.now(),
                type: 'host',
                host: this.farm.hostName(e.host.id),
                state: e.host.state,
              });
            }
          }
        } catch (err) {
          if (!this.stop.signal.aborted)
            this.opts.onStep?.(`the daemons' watch ended: ${(err as Error).message}`);
        }
      })(),
    );
  }

  /**
   * Follows a host's own agent events for the whole run, reconnecting (with its initial state)
   * after a break and to the new address after a restart.
   */
  private watchAgent(host: string): void {
    this.background.push(
      (async () => {
        while (!this.stop.signal.aborted) {
          if (!this.farm.running(this.farm.hostId(host))) {
            await sleep(100);
            continue;
          }
          const raw = createClient(proto().AgentService, this.farm.hostAddress(host));
          await new Promise<void>((resolve) => {
            const call = raw.watchEvents({ initialState: true });
            const end = () => {
              this.stop.signal.removeEventListener('abort', cancel);
              resolve();
            };
            const cancel = () => call.cancel();
            this.stop.signal.addEventListener('abort', cancel);
            call.on('data', (e: pb.AgentEvent__Output) => {
              if (!e.vmId) return;
              this.record({
                t: Number(e.timeMs) - this.started,
                type: 'agent',
                host,
                vm: e.vm?.config?.name || this.names.get(e.vmId) || e.vmId,
                state: e.vm?.status?.state ?? '',
                event: e.type,
              });
            });
            call.on('error', end);
            call.on('end', end);
          });
          raw.close();
          await sleep(100);
        }
      })(),
    );
  }

  private async sampleLeader(): Promise<void> {
    let last = '';
    while (!this.stop.signal.aborted) {
      const leader = await this.agreedLeader().catch(() => '');
      if (leader !== last) {
        this.record({ t: this.now(), type: 'leader', leader });
        last = leader;
      }
      await sleep(100);
    }
  }

  /**
   * The leader every live daemon names, or '' while they disagree or know none. A daemon whose
   * link is down (network namespaces) cannot be asked: the others decide.
   */
  private async agreedLeader(): Promise<string> {
    const live = [...this.farm.daemons].filter(([id]) => this.farm.running(id) && !this.linkDown.has(id));
    const views = await Promise.all(
      live.map(async ([, address]) => {
        const c = promiseClient(
          this.cached(`cluster@${address}`, () => createClient(proto().ClusterService, address)),
        );
        return (await c.getClusterStatus({}, { timeoutMs: 500 })).leaderId;
      }),
    );
    const ids = new Set(views);
    const [id] = ids;
    return ids.size === 1 && id && live.some(([d]) => d === id) ? id : '';
  }

  private async sampleTraffic(): Promise<void> {
    for (const [name, hostId] of this.trafficHosts) {
      const r = await this.client.call('getTraffic', { hostId, id: name });
      this.record({ t: this.now(), type: 'traffic', name, ...trafficTotals(r) });
    }
  }

  // --- steps ---

  private vms(set: string[] | 'all' | undefined): string[] {
    return set === undefined || set === 'all' ? this.plan.vms.map((v) => v.name) : set;
  }

  private vmId(name: string): string {
    return this.ids.get(name) ?? name;
  }

  private async hostOf(ref: HostRef): Promise<string> {
    if (ref.host) return ref.host;
    const vm = await this.client.call('getVm', { id: this.vmId(ref.hostOf!) });
    if (!vm.status?.hostId) throw new Error(`${ref.hostOf} is on no host`);
    return this.farm.hostName(vm.status.hostId);
  }

  private faults(address: string) {
    return promiseClient(this.cached(`fault@${address}`, () => createClient(proto().FaultService, address)));
  }

  private agent(host: string) {
    const address = this.farm.hostAddress(host);
    return promiseClient(this.cached(`agent@${address}`, () => createClient(proto().AgentService, address)));
  }

  /** One channel per service and address for the whole run, closed at its end. */
  private cached<C extends grpc.Client>(key: string, make: () => C): C {
    let c = this.channels.get(key) as C | undefined;
    if (!c) {
      c = make();
      this.channels.set(key, c);
    }
    return c;
  }

  /** Every process's address by name: daemons by id, hosts by the drill's names. */
  private address(name: string): string {
    return this.farm.daemons.get(name) ?? this.farm.hostAddress(name);
  }

  /**
   * A process the drill names; 'leader' is the one every reachable daemon agrees on, waited for
   * up to 10 s (just after a heal, a daemon that was cut off may not have heard of it yet).
   */
  private async resolveProcess(name: string): Promise<string> {
    if (name !== 'leader') return name;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const leader = await this.agreedLeader().catch(() => '');
      if (leader) return leader;
      if (Date.now() > deadline) throw new Error('no leader is agreed on within 10 s');
      await sleep(100);
    }
  }

  /**
   * Cuts the links between two groups of processes, both ways, on both sides. In network
   * namespaces, side `a` (the minority, the isolated host) loses its link for real instead: cut
   * from every process, as a machine whose cable is pulled.
   */
  private async cut(a: string[], b: string[]): Promise<void> {
    if (this.farm.cutLinks) {
      const ids = a.filter((n) => this.running(n)).map((n) => this.processId(n));
      await this.farm.cutLinks(ids);
      for (const id of ids) this.linkDown.add(id);
      return;
    }
    const peer = (n: string) => ({
      name: this.farm.daemons.has(n) ? n : this.farm.hostId(n),
      addresses: [this.address(n)],
    });
    const side = async (from: string[], to: string[]) => {
      for (const f of from) {
        if (!this.running(f)) continue;
        await this.faults(this.address(f)).setLinkFaults(
          { rules: to.map((t) => ({ peer: peer(t), direction: 'LINK_DIRECTION_BOTH', cut: true })) },
          FAULT_CALL,
        );
      }
    };
    await side(a, b);
    await side(b, a);
  }

  private running(name: string): boolean {
    return this.farm.running(this.processId(name));
  }

  private processId(name: string): string {
    return this.farm.daemons.has(name) ? name : this.farm.hostId(name);
  }

  private readonly created = new Set<string>();
  /** Processes whose link a cut took down (network namespaces), until the next heal. */
  private readonly linkDown = new Set<string>();

  /** The drill's switches, once. */
  private async createSwitches(): Promise<void> {
    for (const sw of this.plan.switches) {
      if (this.created.has(`switch/${sw.name}`)) continue;
      await this.client.call('createSwitch', switchRequest(sw));
      this.created.add(`switch/${sw.name}`);
    }
  }

  /** NLB clusters whose members all exist now, once; then waits until their members converge. */
  private async createNlbClusters(): Promise<string[]> {
    const made: string[] = [];
    for (const n of this.plan.nlb) {
      if (this.created.has(`nlb/${n.name}`) || !n.members.every((m) => this.ids.has(m))) continue;
      const cluster = await this.client.call('createNlbCluster', nlbClusterRequest(n));
      for (const req of nlbMemberRequests(n, cluster.id, (m) => this.vmId(m)))
        await this.client.call('addNlbMember', req);
      this.created.add(`nlb/${n.name}`);
      await until(this.clock, `NLB ${n.name} converged`, 60_000, async () => {
        const st = await this.client.call('getNlbClusterState', { id: cluster.id });
        return st.converged && st.members.length === n.members.length
          ? true
          : `${st.members.length} members converged`;
      });
      made.push(n.name);
    }
    return made;
  }

  private async play(step: Step, kind: StepKind): Promise<string | undefined> {
    switch (kind) {
      case 'create': {
        const c = step.create ?? {};
        const names = c.vms
          ? this.vms(c.vms)
          : this.plan.vms.map((v) => v.name).filter((n) => !this.ids.has(n));
        await this.createSwitches();
        await Promise.all(
          names.map(async (name) => {
            const op = await this.client.run(
              'createVm',
              createVmRequest(this.plan, name, c.start ?? true, (h) => this.farm.hostId(h)),
            );
            this.record({ t: this.now(), type: 'write', name, ok: true });
            if (op.vm) {
              this.ids.set(name, op.vm.id);
              this.names.set(op.vm.id, name);
            }
          }),
        );
        const nlbs = await this.createNlbClusters();
        return `created ${[...names, ...nlbs.map((n) => `NLB ${n}`)].join(', ')}`;
      }
      case 'start': {
        const names = this.vms(step.start?.vms);
        await Promise.all(
          names.map((n) => this.client.run('changeVmState', { id: this.vmId(n), action: 'VM_ACTION_START' })),
        );
        return `started ${names.join(', ')}`;
      }
      case 'migrate': {
        const m = step.migrate!;
        const req = {
          vmId: this.vmId(m.vm),
          ...(m.to ? { targetHostId: this.farm.hostId(m.to) } : {}),
          kind: (m.kind === 'quick' ? 'MIGRATION_KIND_QUICK' : 'MIGRATION_KIND_LIVE') as pb.MigrationKind,
        };
        if (m.wait === false) {
          await this.client.call('migrateVm', req);
          return `migration of ${m.vm} started`;
        }
        await this.client.run('migrateVm', req);
        const vm = await this.client.call('getVm', { id: this.vmId(m.vm) });
        return `${m.vm} now on ${this.farm.hostName(vm.status?.hostId ?? '')}`;
      }
      case 'drain': {
        const host = await this.hostOf(step.drain!);
        this.record({ t: this.now(), type: 'fault', what: `drain ${host}`, on: true });
        if (step.drain!.wait === false) await this.client.call('drainHost', { id: this.farm.hostId(host) });
        else await this.client.run('drainHost', { id: this.farm.hostId(host) });
        return `${host} drained`;
      }
      case 'undrain': {
        const host = await this.hostOf(step.undrain!);
        await this.client.call('undrainHost', { id: this.farm.hostId(host) });
        this.record({ t: this.now(), type: 'fault', what: `undrain ${host}`, on: false });
        return undefined;
      }
      case 'kill-agent': {
        const host = await this.hostOf(step['kill-agent']!);
        await this.farm.killAgent(host);
        this.record({ t: this.now(), type: 'agent-gone', host });
        this.record({ t: this.now(), type: 'fault', what: `kill -9 ${host}`, on: true });
        return `killed ${host}'s agent`;
      }
      case 'restart-agent': {
        const host = await this.hostOf(step['restart-agent']!);
        if (this.running(host)) {
          await this.farm.killAgent(host);
          this.record({ t: this.now(), type: 'agent-gone', host });
        }
        this.record({ t: this.now(), type: 'fault', what: `restart ${host}`, on: false });
        await this.farm.restartAgent(host);
        await until(this.clock, `${host} Up again`, 60_000, async () => {
          const h = await this.client.call('getHost', { id: this.farm.hostId(host) });
          return h.state === 'HOST_STATE_UP' ? true : `${host} is ${h.state}`;
        });
        return `${host} restarted and Up`;
      }
      case 'kill-leader': {
        const leader = await this.resolveProcess('leader');
        await this.farm.killDaemon(leader);
        this.record({ t: this.now(), type: 'fault', what: `kill -9 ${leader} (leader)`, on: true });
        return `killed ${leader}, the leader`;
      }
      case 'kill-daemon': {
        await this.farm.killDaemon(step['kill-daemon']!);
        this.record({ t: this.now(), type: 'fault', what: `kill -9 ${step['kill-daemon']}`, on: true });
        return undefined;
      }
      case 'restart-daemons': {
        const dead = [...this.farm.daemons.keys()].filter((d) => !this.farm.running(d));
        for (const d of dead) this.farm.startDaemon(d);
        this.record({
          t: this.now(),
          type: 'fault',
          what: `restart ${dead.join(', ') || 'no daemon'}`,
          on: false,
        });
        return dead.length ? `started ${dead.join(', ')}` : 'every daemon was running';
      }
      case 'partition': {
        const all = [...this.farm.daemons.keys()];
        let side = step.partition!.daemons;
        if (!side) {
          const leader = await this.resolveProcess('leader');
          side = [leader, ...all.filter((d) => d !== leader)].slice(0, Math.floor((all.length - 1) / 2));
        }
        await this.cut(
          side,
          all.filter((d) => !side.includes(d)),
        );
        this.record({ t: this.now(), type: 'fault', what: `partition ${side.join(', ')} | rest`, on: true });
        return `cut ${side.join(', ')} off from the other daemons${this.farm.cutLinks ? ' (link down)' : ''}`;
      }
      case 'isolate': {
        const host = await this.hostOf(step.isolate!);
        await this.cut([host], [...this.farm.daemons.keys()]);
        this.record({ t: this.now(), type: 'fault', what: `isolate ${host}`, host, on: true });
        return `cut ${host} off from every daemon${this.farm.cutLinks ? ' (link down)' : ''}`;
      }
      case 'heal': {
        await this.farm.healLinks?.();
        // A link brought back up carries traffic again once TCP's retransmissions get through:
        // the heal is done when every process answers, within 30 s.
        const deadline = Date.now() + (this.linkDown.size > 0 ? 30_000 : 0);
        this.linkDown.clear();
        const procs = [...this.farm.daemons.keys(), ...this.farm.hostNames()].filter((p) => this.running(p));
        await Promise.all(
          procs.map(async (p) => {
            for (;;) {
              try {
                return await this.faults(this.address(p)).clearLinkFaults({}, FAULT_CALL);
              } catch (err) {
                if (Date.now() > deadline) throw err;
                await sleep(200);
              }
            }
          }),
        );
        this.record({ t: this.now(), type: 'fault', what: 'heal every link', on: false });
        return undefined;
      }
      case 'slow-link': {
        const s = step['slow-link']!;
        const from = await this.resolveProcess(s.from);
        const to = s.to
          ? [await this.resolveProcess(s.to)]
          : [...this.farm.daemons.keys()].filter((d) => d !== from);
        await this.faults(this.address(from)).setLinkFaults(
          {
            rules: to.map((t) => ({
              peer: {
                name: this.farm.daemons.has(t) ? t : this.farm.hostId(t),
                addresses: [this.address(t)],
              },
              direction: 'LINK_DIRECTION_OUTBOUND' as const,
              delayMs: s.delay === undefined ? 0 : ms(s.delay),
              dropShare: s.drop ?? 0,
            })),
          },
          FAULT_CALL,
        );
        const host = this.farm.daemons.has(from) ? undefined : from;
        this.record({
          t: this.now(),
          type: 'fault',
          what: `slow ${from} -> ${to.join(', ')}`,
          ...(host ? { host } : {}),
          on: true,
        });
        return undefined;
      }
      case 'fill-disk': {
        const host = await this.hostOf(step['fill-disk']!);
        const full = step['fill-disk']!.full ?? true;
        await this.faults(this.address(host)).fillStorage({ full }, FAULT_CALL);
        this.record({
          t: this.now(),
          type: 'fault',
          what: `${host} storage ${full ? 'full' : 'emptied'}`,
          host,
          on: full,
        });
        return undefined;
      }
      case 'stall': {
        const s = step.stall!;
        const p = await this.resolveProcess(s.process);
        const duration = ms(s.duration);
        await this.faults(this.address(p)).stall({ durationMs: duration }, FAULT_CALL);
        const host = this.farm.daemons.has(p) ? undefined : p;
        this.record({
          t: this.now(),
          type: 'fault',
          what: `stall ${p} ${duration} ms`,
          ...(host ? { host } : {}),
          on: true,
        });
        this.record({
          t: this.now() + duration,
          type: 'fault',
          what: `${p} resumes`,
          ...(host ? { host } : {}),
          on: false,
        });
        return undefined;
      }
      case 'start-traffic': {
        const t = this.plan.traffic.find((x) => x.name === step['start-traffic'])!;
        const r = await this.client.call('startTraffic', trafficRequest(this.plan, t));
        this.trafficHosts.set(t.name, r.hostId);
        this.background.push(this.sampleTrafficEvery(1_000));
        return `traffic ${t.name} from ${this.farm.hostName(r.hostId)}`;
      }
      case 'mark-traffic': {
        const m = step['mark-traffic']!;
        await this.client.call('markTrafficPhase', {
          hostId: this.trafficHosts.get(m.traffic) ?? '',
          id: m.traffic,
          phase: m.phase,
        });
        return undefined;
      }
      case 'stop-traffic': {
        const name = step['stop-traffic']!;
        await this.client.call('stopTraffic', { hostId: this.trafficHosts.get(name) ?? '', id: name });
        return undefined;
      }
      default:
        throw new Error(`step ${kind} is not known`);
    }
  }

  private sampleTrafficEvery(period: number): Promise<void> {
    return (async () => {
      while (!this.stop.signal.aborted) {
        await this.sampleTraffic().catch(() => undefined);
        await sleep(period);
      }
    })();
  }

  /** What the conditions see: the daemons' answers, and each host's own agent. */
  private readonly probe: FarmProbe = {
    vms: async () =>
      (await this.client.list('listVms', {}, (r) => r.vms)).map((v) => ({
        id: v.id,
        name: v.config?.name ?? v.id,
        state: v.status?.state ?? '',
        host: this.farm.hostName(v.status?.hostId ?? ''),
      })),
    hostStates: async () =>
      new Map(
        (await this.client.list('listHosts', {}, (r) => r.hosts)).map((h) => [
          this.farm.hostName(h.id),
          h.state,
        ]),
      ),
    hostNames: () => this.farm.hostNames(),
    agentRuns: async (host, vmId) => {
      if (!host || !this.running(host)) return false;
      try {
        const own = await this.agent(host).getVm({ vmId }, { timeoutMs: 2_000 });
        return own.status?.state === 'VM_STATE_RUNNING';
      } catch {
        return false;
      }
    },
    agentVms: async (host) =>
      (await this.agent(host).listVms({}, { timeoutMs: 5_000 })).vms.map((v) => ({
        name: v.config?.name ?? v.id,
        state: v.status?.state ?? '',
      })),
    leader: () => this.agreedLeader(),
    migrating: async () =>
      (await this.client.list('listMigrations', {}, (r) => r.migrations))
        .filter((m) => !['MIGRATION_PHASE_COMPLETED', 'MIGRATION_PHASE_FAILED'].includes(m.phase))
        .map((m) => this.names.get(m.vmId) ?? m.vmId),
  };
}
