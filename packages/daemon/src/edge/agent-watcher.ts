import type { Logger, pb } from '@hyperfarm/api';
import { agentView, type AgentVmView, type HostInventory } from '../controllers/index.js';
import type { AgentPort, HostRef } from './agent-port.js';
import type { InventoryHook } from './inventory-index.js';
import type { Timers } from './timers.js';

/**
 * Follows one agent's VMs: its WatchEvents stream (with initial_state, since agents do not
 * replay), and a full listing after each (re)connect, after which the inventory is current
 * (`synced`) and a VM missing from it is known to be missing. On a broken stream the inventory
 * is dropped and the watcher reconnects with backoff.
 */
export class AgentWatcher implements HostInventory {
  synced = false;
  readonly vms = new Map<string, AgentVmView>();
  private stream: { cancel(): void } | undefined;
  private retry: unknown;
  private backoffMs = 250;
  private generation = 0;
  private stopped = false;

  constructor(
    private host: HostRef,
    private readonly port: AgentPort,
    private readonly timers: Timers,
    private readonly logger: Logger,
    /** Called when the inventory changed: one VM's entry, or (no id) all of it. */
    private readonly changed: (vmId?: string) => void,
    /** Told of each entry the inventory gains or loses (the leader's indexes of inventories). */
    private readonly hook?: InventoryHook,
  ) {}

  start(): void {
    const gen = ++this.generation;
    // Events that arrive while the listing is under way are newer than it: they win.
    const seen = new Set<string>();
    this.stream = this.port.watchEvents(this.host, {
      event: (e) => {
        if (gen !== this.generation || !e.vmId) return;
        seen.add(e.vmId);
        if (e.type === 'deleted') this.drop(e.vmId);
        else if (e.vm) this.take(e.vm);
        if (this.synced) this.changed(e.vmId);
      },
      closed: (err) => {
        if (gen !== this.generation || this.stopped) return;
        this.logger.debug({ host: this.host.id, err }, 'agent event stream closed; reconnecting');
        this.reconnect();
      },
    });
    this.port.listVms(this.host).then(
      (vms) => {
        if (gen !== this.generation) return;
        for (const vm of vms) if (!seen.has(vm.id)) this.take(vm);
        this.synced = true;
        this.backoffMs = 250;
        this.changed();
      },
      (err: unknown) => {
        if (gen !== this.generation || this.stopped) return;
        this.logger.debug({ host: this.host.id, err }, "could not list the agent's VMs; reconnecting");
        this.reconnect();
      },
    );
  }

  /** An answer from the agent is as current as its stream: take it at once. */
  observe(vm: pb.Vm__Output): void {
    if (this.synced && this.take(vm)) this.changed(vm.id);
  }

  /**
   * Keeps the newer of two descriptions of a VM by the agent's own sequence: an answer and an
   * event travel on different streams and may cross.
   */
  private take(vm: pb.Vm__Output): boolean {
    const known = this.vms.get(vm.id);
    if (known && known.revision > vm.revision) return false;
    this.vms.set(vm.id, agentView(vm));
    this.hook?.held(vm.id);
    return true;
  }

  private drop(vmId: string): boolean {
    if (!this.vms.delete(vmId)) return false;
    this.hook?.dropped(vmId);
    return true;
  }

  forget(vmId: string): void {
    if (this.drop(vmId) && this.synced) this.changed(vmId);
  }

  /** The agent moved (it registered again from another address). */
  moveTo(host: HostRef): void {
    if (host.address === this.host.address) return;
    this.host = host;
    this.reconnect(0);
  }

  private reconnect(delayMs = this.backoffMs): void {
    this.generation++;
    this.stream?.cancel();
    this.stream = undefined;
    const wasSynced = this.synced;
    this.synced = false;
    this.dropAll();
    if (wasSynced) this.changed();
    this.timers.clear(this.retry);
    this.retry = this.timers.set(() => this.start(), delayMs);
    this.backoffMs = Math.min(5_000, this.backoffMs * 2);
  }

  private dropAll(): void {
    this.unhook();
    this.vms.clear();
  }

  private unhook(): void {
    if (this.hook) for (const vmId of this.vms.keys()) this.hook.dropped(vmId);
  }

  /** Stops following the agent (for good: the watcher is not used again, nor indexed). */
  stop(): void {
    this.stopped = true;
    this.unhook();
    this.generation++;
    this.timers.clear(this.retry);
    this.stream?.cancel();
    this.synced = false;
  }
}
