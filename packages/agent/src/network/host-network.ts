import { alreadyExists, failedPrecondition, notFound } from '@hyperfarm/api';
import { hashString32, seededRng } from '../engine/rng.js';
import type { Cidr, Mac } from './addr.js';
import type { Frame } from './frame.js';
import type { NlbClusterConfig } from './nlb/config.js';
import { NlbMember, type NlbMemberSnapshot, type NlbMemberStatus } from './nlb/member.js';
import { Scheduler } from './scheduler.js';
import { GuestStack, type GuestInfo, type StackSnapshot } from './stack.js';
import { LearningSwitch, type Counters, type MacTableEntry, type PortKind } from './switch.js';
import { TrafficGenerator, type Phase, type TrafficReport, type TrafficSpec } from './traffic.js';

// One host's network: its virtual switches, the adapters of its VMs and their guest stacks, the
// NLB members among them, the traffic generators attached to it, and the tunnels to the other
// hosts. A sans-I/O core like the engine: configuration and frames in, frames for the tunnels
// out (`takeOutbound`), time only through `advance`.

export type SwitchType = 'external' | 'internal' | 'private';

export interface SwitchSpec {
  name: string;
  type: SwitchType;
  agingMs: number;
  /** Internal switches: the host's own address on its port (the root partition's adapter). */
  hostIp?: Cidr | undefined;
}

export interface AdapterSpec {
  /** The adapter's place in the VM's list: what names its port. */
  index: number;
  mac: Mac;
  switchName: string;
  vlan: number;
  ip?: Cidr | undefined;
}

export type VmRunState = 'running' | 'paused' | 'off';

/** A frame on its way to another host, through the tunnel to `peer`. */
export interface OutboundFrame {
  peer: string;
  switchName: string;
  frame: Frame;
}

export interface HostNetworkOptions {
  hostId: string;
  seed: number;
  startMs: number;
  /** What the guest's workload and CPU share make of one request now. */
  guest(vmId: string): GuestInfo;
}

interface Nic {
  vmId: string;
  spec: AdapterSpec;
  portId: string;
  stack: GuestStack;
}

interface Vm {
  state: VmRunState;
  nics: Nic[];
}

/** What a VM's network state is while it moves: its stacks' connections and its NLB members. */
export interface VmNetworkSnapshot {
  nics: { index: number; stack: StackSnapshot; nlb?: { clusterId: string; member: NlbMemberSnapshot } }[];
}

export interface PortStatus {
  id: string;
  kind: PortKind;
  vlan: number;
  /** The VM whose adapter it is, for VM ports. */
  vmId: string;
  counters: Counters;
}

export interface SwitchStatus {
  name: string;
  type: SwitchType;
  counters: Counters;
  ports: PortStatus[];
  macTable: MacTableEntry[];
}

export type NlbAction =
  'start' | 'stop' | 'drainstop' | 'suspend' | 'resume' | 'drain' | 'disable' | 'enable';

const HOST_PORT = 'host';
const peerPort = (host: string): string => `peer:${host}`;
const nicPort = (vmId: string, index: number): string => `${vmId}#${index}`;
/** How often aged-out MAC entries are swept (lookups ignore them anyway). */
const SWEEP_MS = 10_000;
const HOST_SERVICE: GuestInfo = { serviceTimeMs: 1, workers: 1 };

export class HostNetwork {
  readonly sched: Scheduler;
  private readonly switches = new Map<string, { spec: SwitchSpec; sw: LearningSwitch; host?: GuestStack }>();
  private readonly vms = new Map<string, Vm>();
  private peers: string[] = [];
  private clusters: NlbClusterConfig[] = [];
  private readonly members = new Map<string, { clusterId: string; nic: Nic; member: NlbMember }>();
  private readonly traffic = new Map<string, { gen: TrafficGenerator; switchName: string }>();
  private readonly queue: { switchName: string; portId: string; frame: Frame }[] = [];
  private pumping = false;
  private outbound: OutboundFrame[] = [];

  constructor(private readonly opts: HostNetworkOptions) {
    this.sched = new Scheduler(opts.startMs);
    const sweep = (): void => {
      for (const { sw } of this.switches.values()) sw.sweep(this.sched.nowMs);
      this.sched.after(SWEEP_MS, sweep);
    };
    this.sched.after(SWEEP_MS, sweep);
  }

  get hostId(): string {
    return this.opts.hostId;
  }

  // --- Time ---

  advance(toMs: number): void {
    this.sched.runUntil(toMs, () => this.pump());
  }

  nextDeadline(): number | undefined {
    return this.sched.nextDeadline();
  }

  // --- Configuration ---

  /** The switches this host should have; others go (their adapters stay, unconnected). */
  setSwitches(specs: SwitchSpec[]): void {
    const wanted = new Map(specs.map((s) => [s.name, s]));
    for (const [name, entry] of this.switches) {
      const spec = wanted.get(name);
      if (!spec || spec.type !== entry.spec.type) {
        this.switches.delete(name);
      }
    }
    for (const spec of specs) {
      let entry = this.switches.get(spec.name);
      if (!entry) {
        entry = { spec, sw: new LearningSwitch(spec.name, spec.agingMs) };
        this.switches.set(spec.name, entry);
      }
      entry.spec = spec;
      entry.sw.agingMs = spec.agingMs;
      this.connectHostPort(entry);
    }
    this.connectUplinks();
    for (const vm of this.vms.values()) for (const nic of vm.nics) this.connectNic(nic);
    this.bindMembers();
  }

  /** The other hosts, each reached through a tunnel: an uplink on every External switch. */
  setPeers(hostIds: string[]): void {
    this.peers = [...new Set(hostIds)].filter((h) => h !== this.opts.hostId).sort();
    this.connectUplinks();
  }

  setNlbClusters(clusters: NlbClusterConfig[]): void {
    this.clusters = clusters;
    this.bindMembers();
  }

  /** A VM's adapters join their switches; `imported` carries its network state from the host it left. */
  attachVm(vmId: string, adapters: AdapterSpec[], state: VmRunState, imported?: VmNetworkSnapshot): void {
    if (this.vms.has(vmId)) throw alreadyExists('VM network', vmId);
    const rng = seededRng(hashString32(`${this.opts.hostId}/${vmId}`) ^ this.opts.seed);
    const vm: Vm = { state, nics: [] };
    for (const spec of adapters) {
      const stack = new GuestStack(vmId, spec.mac, spec.ip, {
        sched: this.sched,
        rng,
        send: (f) => this.fromDevice(nic, f),
        guest: () => this.opts.guest(vmId),
      });
      const nic: Nic = { vmId, spec, portId: nicPort(vmId, spec.index), stack };
      vm.nics.push(nic);
    }
    this.vms.set(vmId, vm);
    for (const nic of vm.nics) {
      const snap = imported?.nics.find((n) => n.index === nic.spec.index);
      if (snap) nic.stack.restore(snap.stack);
      this.connectNic(nic);
    }
    this.bindMembers(imported);
    this.pump();
  }

  /** The VM leaves this host (deleted, or migrated away): returns its network state. */
  detachVm(vmId: string): VmNetworkSnapshot {
    const vm = this.vms.get(vmId);
    if (!vm) return { nics: [] };
    const snap: VmNetworkSnapshot = { nics: [] };
    for (const nic of vm.nics) {
      const bound = this.members.get(nic.portId);
      snap.nics.push({
        index: nic.spec.index,
        stack: nic.stack.snapshot(),
        ...(bound ? { nlb: { clusterId: bound.clusterId, member: bound.member.snapshot() } } : {}),
      });
      if (bound) {
        bound.member.pause();
        this.members.delete(nic.portId);
      }
      nic.stack.unbindNlb();
      this.disconnect(nic);
    }
    this.vms.delete(vmId);
    return snap;
  }

  setVmState(vmId: string, state: VmRunState): void {
    const vm = this.vms.get(vmId);
    if (!vm || vm.state === state) return;
    const before = vm.state;
    vm.state = state;
    for (const nic of vm.nics) {
      const m = this.members.get(nic.portId)?.member;
      if (state === 'off') {
        nic.stack.reset();
        m?.powerOff();
      } else if (state === 'paused') {
        m?.pause();
      } else if (before === 'paused') {
        m?.unpause();
      } else {
        nic.stack.reset();
        m?.start();
      }
    }
    this.pump();
  }

  vmState(vmId: string): VmRunState | undefined {
    return this.vms.get(vmId)?.state;
  }

  /** After a migration: every adapter of the VM announces itself so switches learn its new port. */
  announce(vmId: string): void {
    for (const nic of this.vms.get(vmId)?.nics ?? []) nic.stack.announce();
    this.pump();
  }

  // --- Data plane ---

  receiveFromPeer(peer: string, switchName: string, frame: Frame): void {
    const entry = this.switches.get(switchName);
    if (!entry || entry.spec.type !== 'external' || !this.peers.includes(peer)) {
      // Not a switch this host shares with that peer: count it where it would have entered.
      entry?.sw.countDrop(peerPort(peer));
      return;
    }
    this.queue.push({ switchName, portId: peerPort(peer), frame });
    this.pump();
  }

  /** Frames for a peer that its tunnel could not carry, counted on that uplink. */
  countTunnelDrops(peer: string, switchName: string, count: number): void {
    const sw = this.switches.get(switchName)?.sw;
    for (let i = 0; i < count; i++) sw?.countDrop(peerPort(peer));
  }

  takeOutbound(): OutboundFrame[] {
    const out = this.outbound;
    this.outbound = [];
    return out;
  }

  /** Sends one frame into a switch as if from one of its ports (benchmarks, tests). */
  inject(switchName: string, portId: string, frame: Frame): void {
    this.queue.push({ switchName, portId, frame });
    this.pump();
  }

  // --- NLB control and state ---

  nlbControl(clusterId: string, vmId: string, action: NlbAction, port = 0): NlbMemberStatus {
    const m = this.nlbMember(clusterId, vmId);
    if (!m) throw notFound('NLB member on this host', `${clusterId}/${vmId}`);
    if (action !== 'start' && action !== 'resume' && this.vms.get(vmId)?.state === 'off')
      throw failedPrecondition(`NLB member '${vmId}' is not running: its VM is off`);
    switch (action) {
      case 'start':
        m.start();
        break;
      case 'stop':
        m.stop();
        break;
      case 'drainstop':
        m.drainstop();
        break;
      case 'suspend':
        m.suspend();
        break;
      case 'resume':
        m.resume();
        break;
      case 'drain':
        m.drainRule(port);
        break;
      case 'disable':
        m.disableRule(port);
        break;
      case 'enable':
        m.enableRule(port);
        break;
    }
    this.pump();
    return m.status();
  }

  /** The NLB member a VM runs on this host, if it does (for inspection). */
  nlbMember(clusterId: string, vmId: string): NlbMember | undefined {
    return [...this.members.values()].find((b) => b.clusterId === clusterId && b.member.vmId === vmId)
      ?.member;
  }

  /** The members of a cluster that run on this host. */
  nlbStatus(clusterId: string): NlbMemberStatus[] {
    return [...this.members.values()]
      .filter((b) => b.clusterId === clusterId)
      .map((b) => b.member.status())
      .sort((a, b) => a.priority - b.priority);
  }

  // --- Traffic ---

  startTraffic(id: string, switchName: string, vlan: number, spec: TrafficSpec): void {
    if (this.traffic.has(id)) throw alreadyExists('traffic run', id);
    const entry = this.switches.get(switchName);
    if (!entry) throw notFound('switch', switchName);
    if (entry.spec.type !== 'external')
      throw failedPrecondition(
        `switch '${switchName}' is ${entry.spec.type}: traffic clients live on an External switch`,
      );
    const portId = `ext:${id}`;
    const gen = new TrafficGenerator(spec, this.sched, (f) => this.inject(switchName, portId, f));
    entry.sw.addPort(portId, 'external', vlan).device = (f) => gen.receive(f);
    this.traffic.set(id, { gen, switchName });
  }

  trafficReport(id: string): TrafficReport {
    return this.trafficRun(id).report();
  }

  markTrafficPhase(id: string, phase: Phase): void {
    this.trafficRun(id).markPhase(phase);
  }

  stopTraffic(id: string): TrafficReport {
    const t = this.traffic.get(id);
    if (!t) throw notFound('traffic run', id);
    t.gen.stop();
    return t.gen.report();
  }

  /** Detaches a finished (or stopped) run from its switch. */
  removeTraffic(id: string): void {
    const t = this.traffic.get(id);
    if (!t) return;
    t.gen.stop();
    this.switches.get(t.switchName)?.sw.removePort(`ext:${id}`);
    this.traffic.delete(id);
  }

  private trafficRun(id: string): TrafficGenerator {
    const t = this.traffic.get(id);
    if (!t) throw notFound('traffic run', id);
    return t.gen;
  }

  // --- Reading the switches ---

  switchNames(): string[] {
    return [...this.switches.keys()].sort();
  }

  switchStatus(name: string): SwitchStatus {
    const entry = this.switches.get(name);
    if (!entry) throw notFound('switch', name);
    const owner = new Map<string, string>();
    for (const [vmId, vm] of this.vms) for (const nic of vm.nics) owner.set(nic.portId, vmId);
    return {
      name,
      type: entry.spec.type,
      counters: { ...entry.sw.counters },
      ports: [...entry.sw.ports.values()]
        .map((p) => ({
          id: p.id,
          kind: p.kind,
          vlan: p.vlan,
          vmId: owner.get(p.id) ?? '',
          counters: { ...p.counters },
        }))
        .sort((a, b) => a.id.localeCompare(b.id)),
      macTable: entry.sw.macTable(this.sched.nowMs),
    };
  }

  // --- Plumbing ---

  private fromDevice(nic: Nic, frame: Frame): void {
    const vm = this.vms.get(nic.vmId);
    if (!vm || vm.state !== 'running' || !this.switches.has(nic.spec.switchName)) return;
    this.queue.push({ switchName: nic.spec.switchName, portId: nic.portId, frame });
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (let i = 0; i < this.queue.length; i++) {
        const { switchName, portId, frame } = this.queue[i]!;
        const entry = this.switches.get(switchName);
        if (!entry) continue;
        const { frame: f, out } = entry.sw.forward(portId, frame, this.sched.nowMs);
        for (const port of out) {
          if (port.kind === 'uplink') {
            this.outbound.push({ peer: port.id.slice(5), switchName, frame: f });
            continue;
          }
          if (port.device) port.device(f);
          else entry.sw.countDrop(port.id);
        }
      }
    } finally {
      this.queue.length = 0;
      this.pumping = false;
    }
  }

  private connectHostPort(entry: { spec: SwitchSpec; sw: LearningSwitch; host?: GuestStack }): void {
    if (entry.spec.type !== 'internal') {
      entry.sw.removePort(HOST_PORT);
      entry.host = undefined;
      return;
    }
    if (!entry.host) {
      const hostMac = hostPortMac(this.opts.hostId, entry.spec.name);
      entry.host = new GuestStack(`host:${this.opts.hostId}`, hostMac, entry.spec.hostIp, {
        sched: this.sched,
        rng: seededRng(hashString32(`${this.opts.hostId}/${entry.spec.name}`)),
        send: (f) => this.inject(entry.spec.name, HOST_PORT, f),
        guest: () => HOST_SERVICE,
      });
    }
    entry.host.ip = entry.spec.hostIp;
    const stack = entry.host;
    entry.sw.addPort(HOST_PORT, 'host', 0).device = (f) => stack.receive(f);
  }

  private connectUplinks(): void {
    for (const { spec, sw } of this.switches.values()) {
      const wanted = new Set(spec.type === 'external' ? this.peers.map(peerPort) : []);
      for (const p of [...sw.ports.values()])
        if (p.kind === 'uplink' && !wanted.has(p.id)) sw.removePort(p.id);
      for (const id of wanted) sw.addPort(id, 'uplink');
    }
  }

  private connectNic(nic: Nic): void {
    const entry = this.switches.get(nic.spec.switchName);
    if (!entry) return;
    const vm = this.vms.get(nic.vmId)!;
    entry.sw.addPort(nic.portId, 'vm', nic.spec.vlan).device = (f) => {
      if (vm.state === 'running') nic.stack.receive(f);
      else entry.sw.countDrop(nic.portId);
    };
  }

  private disconnect(nic: Nic): void {
    this.switches.get(nic.spec.switchName)?.sw.removePort(nic.portId);
  }

  /** Binds an NLB member to each local adapter that a cluster names, and unbinds the rest. */
  private bindMembers(imported?: VmNetworkSnapshot): void {
    const wanted = new Map<string, { cluster: NlbClusterConfig; nic: Nic }>();
    for (const cluster of this.clusters) {
      if (!this.switches.has(cluster.switchName)) continue;
      for (const m of cluster.members) {
        const nic = this.vms.get(m.vmId)?.nics.find((n) => n.spec.switchName === cluster.switchName);
        if (nic) wanted.set(nic.portId, { cluster, nic });
      }
    }
    for (const [portId, bound] of this.members) {
      const w = wanted.get(portId);
      const priority = w?.cluster.members.find((m) => m.vmId === bound.member.vmId)?.priority;
      if (w && w.cluster.id === bound.clusterId && priority === bound.member.priority) continue;
      bound.member.stop('removed from the cluster');
      bound.nic.stack.unbindNlb();
      this.members.delete(portId);
    }
    for (const [portId, { cluster, nic }] of wanted) {
      const existing = this.members.get(portId);
      if (existing) {
        if (existing.member.config !== cluster) {
          existing.member.reconfigure(cluster);
          nic.stack.bindNlb(existing.member, cluster);
        }
        continue;
      }
      const member = new NlbMember(cluster, nic.vmId, this.sched, {
        send: (hb) => nic.stack.sendHeartbeat(hb),
      });
      this.members.set(portId, { clusterId: cluster.id, nic, member });
      nic.stack.bindNlb(member, cluster);
      const state = this.vms.get(nic.vmId)!.state;
      const snap = imported?.nics.find((n) => n.index === nic.spec.index)?.nlb;
      if (snap && snap.clusterId === cluster.id) {
        member.restore(snap.member);
        if (state === 'paused') member.pause();
      } else if (state !== 'off') {
        member.start();
        if (state === 'paused') member.pause();
      }
    }
    this.pump();
  }
}

/** The root partition's adapter on an Internal switch: a stable address in Hyper-V's range. */
function hostPortMac(hostId: string, switchName: string): Mac {
  const h = hashString32(`${hostId}|${switchName}`);
  const b = [0x00, 0x15, 0x5d, 0xfe, (h >>> 8) & 0xff, h & 0xff];
  return b.map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('-');
}
