import { createClient, GUEST_EXECUTES, hyperfarmProto, type pb } from '@hyperfarm/api';

interface Interval {
  hostId: string;
  from: number;
  /** Undefined while the host has not said (or died) since. */
  to?: number;
}

/**
 * Follows every agent's own WatchEvents stream (not the daemon's view) and keeps, per VM, the
 * intervals in which each host ran it, on the agents' clocks (one machine: one clock). Two
 * intervals of one VM on two hosts that overlap are a violation, found as soon as both ends are
 * known: a frozen agent (SIGSTOP) that wakes up reports when it turned its VMs off (its lease
 * ran out while it was frozen), so it is judged by what it did, not by its silence. A killed
 * agent runs nothing from its death on. At the end, intervals still open on two hosts overlap.
 */
export class RunIntervals {
  readonly violations: string[] = [];
  readonly events: { hostId: string; e: pb.AgentEvent__Output }[] = [];
  private readonly runs = new Map<string, Interval[]>();
  private readonly streams = new Map<string, { cancel(): void }>();

  follow(hostId: string, address: string): void {
    this.streams.get(hostId)?.cancel();
    const raw = createClient(hyperfarmProto().hyperfarm.v1.AgentService, address);
    const call = raw.watchEvents({ initialState: true });
    call.on('data', (e: pb.AgentEvent__Output) => this.seen(hostId, e));
    call.on('error', () => undefined);
    call.on('close', () => raw.close());
    this.streams.set(hostId, call);
  }

  /** The agent's process died at `atMs`: what it ran ended then. */
  died(hostId: string, atMs: number): void {
    this.streams.get(hostId)?.cancel();
    this.streams.delete(hostId);
    for (const [vmId, list] of this.runs)
      for (const i of list) if (i.hostId === hostId && i.to === undefined) this.close(vmId, i, atMs);
  }

  private seen(hostId: string, e: pb.AgentEvent__Output): void {
    this.events.push({ hostId, e });
    if (!e.vmId) return;
    const list = this.runs.get(e.vmId) ?? [];
    this.runs.set(e.vmId, list);
    const open = list.find((i) => i.hostId === hostId && i.to === undefined);
    const state = e.vm?.status?.state;
    const runs = e.type !== 'deleted' && state !== undefined && GUEST_EXECUTES.has(state);
    if (runs && !open) {
      const started = { hostId, from: Number(e.timeMs) };
      list.push(started);
      // Against what ended already; open ones are judged when they end (or at the end).
      for (const other of list)
        if (other.hostId !== hostId && other.to !== undefined && other.to > started.from)
          this.violation(e.vmId, other, started);
    } else if (!runs && open) this.close(e.vmId, open, Number(e.timeMs));
  }

  private close(vmId: string, i: Interval, atMs: number): void {
    i.to = atMs;
    for (const other of this.runs.get(vmId) ?? []) {
      if (other === i || other.hostId === i.hostId) continue;
      const overlaps = other.from < atMs && (other.to === undefined || other.to > i.from);
      if (overlaps) this.violation(vmId, i, other);
    }
  }

  private violation(vmId: string, a: Interval, b: Interval): void {
    const span = (x: Interval) => `${x.hostId} [${x.from}, ${x.to ?? 'now'})`;
    this.violations.push(`VM ${vmId} ran on two hosts at once: ${span(a)} and ${span(b)}`);
  }

  /** Hosts running the VM now, as their own streams last said. */
  hostsRunning(vmId: string): string[] {
    return (this.runs.get(vmId) ?? []).filter((i) => i.to === undefined).map((i) => i.hostId);
  }

  /** The final verdict: every violation, open intervals on two hosts included. */
  finish(): string[] {
    for (const [vmId, list] of this.runs) {
      const open = list.filter((i) => i.to === undefined);
      if (new Set(open.map((i) => i.hostId)).size > 1) this.violation(vmId, open[0]!, open[1]!);
    }
    for (const s of this.streams.values()) s.cancel();
    return this.violations;
  }
}
