import {
  failedPrecondition,
  invalidArgument,
  notFound,
  type Logger,
  type pb,
  type TlsFiles,
} from '@hyperfarm/api';
import type { HypervisorEngine } from '../../engine/engine.js';
import type { VmEntry } from '../../engine/model.js';
import type { VmState } from '../../engine/states.js';
import { parseCidr } from '../addr.js';
import type { Frame } from '../frame.js';
import { parseVmNetworkSnapshot } from '../codec.js';
import { HostNetwork, type AdapterSpec, type VmNetworkSnapshot, type VmRunState } from '../host-network.js';
import { checkMemberNetworks, type NlbClusterConfig } from '../nlb/config.js';
import type { GuestInfo } from '../stack.js';
import { nlbClusterConfig, switchSpec } from './convert.js';
import { Tunnels, type TunnelOptions } from './tunnel.js';

// One host's network in the agent: the HostNetwork core driven by the real clock, kept in step
// with the engine's VMs (their adapters, whether they run, their CPU share), fed by the tunnels,
// and told about migrations.

/** What the network needs of the agent around it: time, the engine, and its events. */
export interface NetworkHostPort {
  readonly settings: { id: string };
  readonly logger: Logger;
  now(): number;
  read<T>(fn: (engine: HypervisorEngine) => T): T;
  onEvent(listener: (event: pb.AgentEvent) => void): () => void;
}

/**
 * The network's timers: the real ones in the agent, a virtual clock's in the farm simulator
 * (packages/sim), which runs this same class.
 */
export interface NetworkTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
  /** Soon, after what runs now: setImmediate's place. */
  soon(fn: () => void): void;
}

export const realNetworkTimers: NetworkTimers = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
  soon: (fn) => void setImmediate(fn),
};

/**
 * A one-shot timer at the earliest time asked of it: asking for a time no earlier than the one
 * armed changes nothing. What the host's pump and the network's timers wait with.
 */
export class EarliestTimer {
  private handle: unknown;
  /** When it fires (Infinity: not armed). */
  at = Infinity;

  constructor(
    private readonly timers: Pick<NetworkTimers, 'set' | 'clear'>,
    private readonly now: () => number,
    private readonly fire: () => void,
  ) {}

  armAt(at: number): void {
    if (at >= this.at) return;
    this.clear();
    this.at = at;
    this.handle = this.timers.set(
      () => {
        this.handle = undefined;
        this.at = Infinity;
        this.fire();
      },
      Math.max(0, at - this.now()),
    );
  }

  clear(): void {
    if (this.handle !== undefined) this.timers.clear(this.handle);
    this.handle = undefined;
    this.at = Infinity;
  }
}

/** What carries frames to the other hosts: gRPC tunnels in the agent, the simulated network in the simulator. */
export interface FrameLinks {
  setPeers(peers: { hostId: string; address: string }[]): void;
  send(peer: string, switchName: string, frame: Frame): void;
  close(): void;
}

/** How the network is wired to the world; the defaults are the agent's. */
export interface AgentNetworkIo<L extends FrameLinks> {
  timers: NetworkTimers;
  links(opts: Pick<TunnelOptions, 'deliver' | 'dropped'>): L;
}

/** Guest states in which its network stack runs, and in which it is frozen but kept. */
const RUNNING = new Set<VmState>(['VM_STATE_RUNNING', 'VM_STATE_RUNNING_CRITICAL']);
const FROZEN = new Set<VmState>([
  'VM_STATE_PAUSED',
  'VM_STATE_PAUSING',
  'VM_STATE_RESUMING',
  'VM_STATE_SAVING',
]);
/** A starved guest still makes some progress: at worst 20 times slower. */
const MIN_SPEED = 0.05;
const ADOPTION_TTL_MS = 60_000;
/**
 * The sync's period while a running guest's speed follows its CPU share (it has a CPU demand):
 * shares move without an event (a throttle, the shares settling after a change).
 */
const SYNC_MS = 250;
/**
 * The sync's period otherwise, a safety net: every change the sync follows (a VM created,
 * changed, started, stopped, deleted, migrated in) comes with an engine event, which syncs at
 * once. At SYNC_MS, a 250-host agent process made 1,000 syncs a second of nothing.
 */
const SLOW_SYNC_MS = 5_000;

/** A VM's adapters as the host's network attaches them. */
const adapterSpecs = (c: Readonly<VmEntry['config']>): AdapterSpec[] =>
  c.networkAdapters.map((a, index) => ({
    index,
    mac: a.macAddress,
    switchName: a.switchName,
    vlan: a.vlanId,
    ip: parseCidr(a.ipv4Address),
  }));

interface KnownVm {
  adapters: string;
  guest: GuestInfo;
  /** The configuration `adapters` was read from: the engine replaces it whole on any change. */
  config: Readonly<VmEntry['config']>;
}

export class AgentNetwork<L extends FrameLinks = Tunnels> {
  readonly net: HostNetwork;
  readonly tunnels: L;
  private applied: pb.NetworkConfig__Output = { revision: 0, switches: [], nlbClusters: [], peers: [] };
  private clusters = new Map<string, NlbClusterConfig>();
  private readonly vms = new Map<string, KnownVm>();
  private readonly adoptions = new Map<string, { snap: VmNetworkSnapshot; until: number }>();
  /** Network state of VMs migrating away, kept until the migration ends, to restore on failure. */
  private readonly leaving = new Map<string, VmNetworkSnapshot>();
  /** The core's next deadline. */
  private readonly timer: EarliestTimer;
  /** The next periodic sync. */
  private readonly syncTimer: EarliestTimer;
  /** Whether a running guest's speed follows its CPU share: the periodic sync at SYNC_MS. */
  private fastSync = false;
  private readonly timers: NetworkTimers;
  private readonly unsubscribe: () => void;
  private stopped = false;

  constructor(
    private readonly host: NetworkHostPort,
    tls?: TlsFiles | undefined,
    io?: AgentNetworkIo<L>,
  ) {
    this.timers = io?.timers ?? realNetworkTimers;
    const now = () => host.now();
    this.timer = new EarliestTimer(this.timers, now, () => {
      if (!this.stopped) this.run(() => undefined);
    });
    // Re-armed before the sync runs, so a sync that throws does not end the loop (as setInterval).
    this.syncTimer = new EarliestTimer(this.timers, now, () => {
      if (this.stopped) return;
      this.armSync();
      this.run(() => this.sync());
    });
    this.net = new HostNetwork({
      hostId: host.settings.id,
      seed: 1,
      startMs: host.now(),
      guest: (vmId) => this.vms.get(vmId)?.guest ?? { serviceTimeMs: 1, workers: 1 },
    });
    const ends: Pick<TunnelOptions, 'deliver' | 'dropped'> = {
      deliver: (peer, switchName, frames) => {
        if (this.stopped) return;
        this.run(() => {
          for (const f of frames) this.net.receiveFromPeer(peer, switchName, f);
        });
      },
      dropped: (peer, switchName, n) => this.net.countTunnelDrops(peer, switchName, n),
    };
    this.tunnels = io
      ? io.links(ends)
      : (new Tunnels({ hostId: host.settings.id, logger: host.logger, tls, ...ends }) as FrameLinks as L);
    // Events arrive from inside the host's pump: sync right after it, not within it.
    this.unsubscribe = host.onEvent(() => this.scheduleSync());
    this.armSync();
    this.run(() => this.sync());
  }

  /** The next periodic sync, SYNC_MS or SLOW_SYNC_MS from now as the last sync found needed. */
  private armSync(): void {
    if (!this.stopped) this.syncTimer.armAt(this.host.now() + (this.fastSync ? SYNC_MS : SLOW_SYNC_MS));
  }

  private syncQueued = false;

  private scheduleSync(): void {
    if (this.syncQueued) return;
    this.syncQueued = true;
    this.timers.soon(() => {
      this.syncQueued = false;
      if (!this.stopped) this.run(() => this.sync());
    });
  }

  get hostId(): string {
    return this.host.settings.id;
  }

  /** Brings the network to now, does `fn`, sends what it produced and re-arms the timer. */
  run<T>(fn: () => T): T {
    if (this.stopped) throw failedPrecondition(`the network of host '${this.hostId}' is stopped`);
    this.net.advance(this.host.now());
    try {
      return fn();
    } finally {
      this.flush();
      this.arm();
    }
  }

  private flush(): void {
    for (const o of this.net.takeOutbound()) this.tunnels.send(o.peer, o.switchName, o.frame);
  }

  private arm(): void {
    // Only at the core's own next deadline: an idle host has just its MAC table sweep (every
    // 10 s); NLB heartbeats, guests' requests and traffic arm theirs.
    const at = this.net.nextDeadline();
    if (at !== undefined && !this.stopped) this.timer.armAt(at);
  }

  // --- Configuration ---

  /** Checks the whole configuration before any of it takes effect. */
  apply(cfg: pb.NetworkConfig__Output): pb.ApplyNetworkConfigResponse {
    if (cfg.revision !== 0 && cfg.revision < this.applied.revision)
      throw failedPrecondition(
        `network configuration revision ${cfg.revision} is older than the one applied (${this.applied.revision})`,
      );
    const me = this.hostId;
    const names = new Set<string>();
    const specs = cfg.switches.flatMap((s, i) => {
      const spec = switchSpec(s, `switches[${i}]`);
      if (names.has(s.name))
        throw invalidArgument(`switches[${i}].name`, `switch '${s.name}' is named twice`);
      names.add(s.name);
      return spec.type === 'external' || s.hostId === me ? [spec] : [];
    });
    const clusters = cfg.nlbClusters.map((c, i) => {
      const f = `nlb_clusters[${i}]`;
      const config = nlbClusterConfig(c, f);
      if (!names.has(c.switchName))
        throw invalidArgument(`${f}.switch_name`, `there is no switch '${c.switchName}'`);
      return config;
    });
    const ids = new Set<string>();
    clusters.forEach((c, i) => {
      if (ids.has(c.id)) throw invalidArgument(`nlb_clusters[${i}].id`, `cluster '${c.id}' is named twice`);
      ids.add(c.id);
    });
    cfg.peers.forEach((p, i) => {
      if (!p.hostId) throw invalidArgument(`peers[${i}].host_id`, 'is required');
      if (!/^[^\s:]+:\d{1,5}$/.test(p.address))
        throw invalidArgument(`peers[${i}].address`, `'${p.address}' is not host:port`);
    });
    const warnings = this.memberWarnings(clusters);
    this.run(() => {
      this.net.setSwitches(specs);
      this.net.setPeers(cfg.peers.map((p) => p.hostId));
      this.net.setNlbClusters(clusters);
    });
    this.tunnels.setPeers(cfg.peers);
    this.applied = cfg;
    this.clusters = new Map(clusters.map((c) => [c.id, c]));
    return { revision: cfg.revision, warnings };
  }

  config(): pb.NetworkConfig__Output {
    return this.applied;
  }

  cluster(id: string): NlbClusterConfig {
    const c = this.clusters.get(id);
    if (!c) throw notFound('NLB cluster', id);
    return c;
  }

  /** Members running here whose VM cannot reach the cluster: not refused, but said. */
  private memberWarnings(clusters: NlbClusterConfig[]): string[] {
    const warnings: string[] = [];
    const local = this.host.read((e) => new Map(e.vms.peek().map((v) => [v.id, v])));
    for (const c of clusters) {
      try {
        checkMemberNetworks(c, (vmId) =>
          local.get(vmId)?.config?.networkAdapters.map((a) => ({
            switchName: a.switchName,
            ip: parseCidr(a.ipv4Address),
          })),
        );
      } catch (err) {
        warnings.push(`NLB cluster '${c.id}': ${(err as Error).message}`);
      }
    }
    return warnings;
  }

  // --- The engine's VMs ---

  /** Attaches new VMs, follows state and adapter changes, detaches VMs that left. */
  private sync(): void {
    const { vms, cpu } = this.host.read((e) => ({ vms: e.vms.peek(), cpu: e.cpuReport() }));
    const seen = new Set<string>();
    let fast = false;
    for (const vm of vms) {
      const c = vm.config;
      if (!c || this.leaving.has(vm.id)) continue;
      seen.add(vm.id);
      const known = this.vms.get(vm.id);
      // The adapters are read again only from a configuration not seen before: every VM of the
      // host is looked at on each event and each periodic sync, and reading and printing them each
      // time made a copy and a JSON text per VM per sync.
      let adapters: AdapterSpec[] | undefined;
      let key: string;
      if (known && known.config === c) key = known.adapters;
      else {
        adapters = adapterSpecs(c);
        key = JSON.stringify(adapters);
      }
      const vmState = vm.state;
      const state: VmRunState = RUNNING.has(vmState) ? 'running' : FROZEN.has(vmState) ? 'paused' : 'off';
      const w = c.workload;
      const demandLp = ((c.processor?.count ?? 1) * (w?.cpuDemandPercent ?? 0)) / 100;
      const lp = cpu.vms.get(vm.id)?.lp ?? 0;
      const speed = demandLp > 0 ? Math.max(MIN_SPEED, Math.min(1, lp / demandLp)) : 1;
      if (demandLp > 0 && state === 'running') fast = true;
      const guest = {
        serviceTimeMs: (w?.requestServiceTimeMs || 1) / speed,
        workers: c.processor?.count ?? 1,
      };
      if (known && known.adapters !== key) {
        this.net.detachVm(vm.id);
        this.vms.delete(vm.id);
      }
      if (!this.vms.has(vm.id)) {
        const adopted = this.adoptions.get(vm.id)?.snap;
        this.adoptions.delete(vm.id);
        this.net.attachVm(vm.id, adapters ?? adapterSpecs(c), state, adopted);
        if (state === 'running') this.net.announce(vm.id);
      } else {
        const wasRunning = this.net.vmState(vm.id) === 'running';
        this.net.setVmState(vm.id, state);
        if (!wasRunning && state === 'running') this.net.announce(vm.id);
      }
      this.vms.set(vm.id, { adapters: key, guest, config: c });
    }
    for (const id of [...this.vms.keys()]) {
      if (seen.has(id)) continue;
      this.net.detachVm(id);
      this.vms.delete(id);
    }
    const now = this.host.now();
    for (const [id, a] of this.adoptions) if (a.until < now) this.adoptions.delete(id);
    this.fastSync = fast;
    this.armSync();
  }

  // --- Migration ---

  /**
   * The VM is frozen for its last copy: its network state (connections, NLB member) leaves with
   * it, and is kept here until the migration ends.
   */
  handOff(vmId: string): Buffer {
    const snap = this.run(() => this.net.detachVm(vmId));
    this.leaving.set(vmId, snap);
    this.vms.delete(vmId);
    return Buffer.from(JSON.stringify(snap));
  }

  /** The migration ended: on success the state is the target's; on failure the VM gets it back here. */
  migrationEnded(vmId: string, succeeded: boolean): void {
    const snap = this.leaving.get(vmId);
    this.leaving.delete(vmId);
    if (!snap || succeeded) return;
    this.adoptions.set(vmId, { snap, until: this.host.now() + ADOPTION_TTL_MS });
    this.run(() => this.sync());
  }

  /** A VM's network state from the host it leaves; used when the VM is installed here. */
  adopt(vmId: string, state: Buffer): void {
    let snap: VmNetworkSnapshot;
    try {
      snap = parseVmNetworkSnapshot(state);
    } catch (err) {
      throw invalidArgument('state', `not a VM network state: ${(err as Error).message.slice(0, 200)}`);
    }
    this.adoptions.set(vmId, { snap, until: this.host.now() + ADOPTION_TTL_MS });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.unsubscribe();
    this.syncTimer.clear();
    this.timer.clear();
    this.tunnels.close();
  }
}
