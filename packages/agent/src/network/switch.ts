import { BROADCAST_MAC, isGroupMac, type Mac } from './addr.js';
import { frameBytes, type Frame } from './frame.js';

// A learning switch, one per virtual switch per host. Access ports put what enters them in
// their VLAN; uplinks (the tunnels to the other hosts of an External switch) are trunks that
// carry the VLAN along. Frames from an uplink are never sent out another uplink: every host
// floods to every other host itself, so split horizon is what keeps the mesh free of loops.

/** vm: a VM adapter; host: the root partition (Internal); external: the physical network; uplink: a tunnel. */
export type PortKind = 'vm' | 'host' | 'external' | 'uplink';

export interface Counters {
  received: number;
  sent: number;
  flooded: number;
  dropped: number;
  receivedBytes: number;
  sentBytes: number;
}

const zero = (): Counters => ({
  received: 0,
  sent: 0,
  flooded: 0,
  dropped: 0,
  receivedBytes: 0,
  sentBytes: 0,
});

export interface Port {
  id: string;
  kind: PortKind;
  /** Access VLAN, 0 untagged; ignored on uplinks. */
  vlan: number;
  counters: Counters;
  /** What is plugged in: takes the frames the port sends. The switch itself never calls it. */
  device?: ((frame: Frame) => void) | undefined;
}

export interface MacTableEntry {
  vlan: number;
  mac: Mac;
  port: string;
  /** Milliseconds since a frame from this MAC was last seen. */
  ageMs: number;
}

/** How long an IGMP report keeps a port in a group (RFC 2236's group membership interval). */
export const IGMP_MEMBERSHIP_MS = 260_000;

const key = (vlan: number, mac: Mac): string => `${vlan}|${mac}`;

export class LearningSwitch {
  readonly ports = new Map<string, Port>();
  readonly counters = zero();
  private readonly table = new Map<string, { vlan: number; mac: Mac; port: string; seenMs: number }>();
  /** IGMP snooping: multicast group -> member ports and when each membership lapses. */
  private readonly groups = new Map<string, Map<string, number>>();

  constructor(
    readonly name: string,
    public agingMs: number,
  ) {}

  addPort(id: string, kind: PortKind, vlan = 0): Port {
    const existing = this.ports.get(id);
    if (existing) {
      existing.vlan = vlan;
      return existing;
    }
    const port: Port = { id, kind, vlan, counters: zero() };
    this.ports.set(id, port);
    return port;
  }

  removePort(id: string): void {
    this.ports.delete(id);
    for (const [k, e] of this.table) if (e.port === id) this.table.delete(k);
    for (const members of this.groups.values()) members.delete(id);
  }

  /**
   * A frame entering through `portId`: learns its source, and returns the frame as it travels
   * inside the switch (tagged with its VLAN) and the ports it leaves by.
   */
  forward(portId: string, frame: Frame, nowMs: number): { frame: Frame; out: Port[] } {
    const inPort = this.ports.get(portId);
    const bytes = frameBytes(frame);
    this.counters.received++;
    this.counters.receivedBytes += bytes;
    if (!inPort) return this.drop(frame);
    inPort.counters.received++;
    inPort.counters.receivedBytes += bytes;
    const fromUplink = inPort.kind === 'uplink';
    const vlan = fromUplink ? frame.vlan : inPort.vlan;
    if (!Number.isInteger(vlan) || vlan < 0 || vlan > 4094) return this.drop(frame, inPort);
    const f = frame.vlan === vlan ? frame : { ...frame, vlan };

    if (!isGroupMac(f.src))
      this.table.set(key(vlan, f.src), { vlan, mac: f.src, port: portId, seenMs: nowMs });
    if (f.body.type === 'igmp') this.snoop(vlan, f.body.group, f.body.op, portId, nowMs);

    let out: Port[];
    if (isGroupMac(f.dst)) {
      const members = f.dst === BROADCAST_MAC ? undefined : this.groupPorts(vlan, f.dst, nowMs);
      out = members
        ? members.filter((p) => p !== inPort && !(fromUplink && p.kind === 'uplink'))
        : this.flood(inPort, vlan);
    } else {
      const entry = this.table.get(key(vlan, f.dst));
      if (entry && nowMs - entry.seenMs > this.agingMs) this.table.delete(key(vlan, f.dst));
      const target = entry && nowMs - entry.seenMs <= this.agingMs ? this.ports.get(entry.port) : undefined;
      if (!target) {
        out = this.flood(inPort, vlan);
      } else if (target === inPort || (fromUplink && target.kind === 'uplink')) {
        // Already on the segment it came from (or another host's to deliver): filtered.
        return this.drop(f, inPort);
      } else {
        out = [target];
      }
    }
    const outBytes = frameBytes(f);
    for (const p of out) {
      p.counters.sent++;
      p.counters.sentBytes += outBytes;
    }
    this.counters.sent += out.length;
    this.counters.sentBytes += outBytes * out.length;
    return { frame: f, out };
  }

  /** A frame the switch gave a port that could not take it (a VM that is not running). */
  countDrop(portId: string): void {
    this.counters.dropped++;
    const p = this.ports.get(portId);
    if (p) p.counters.dropped++;
  }

  macTable(nowMs: number): MacTableEntry[] {
    this.sweep(nowMs);
    return [...this.table.values()]
      .map((e) => ({ vlan: e.vlan, mac: e.mac, port: e.port, ageMs: nowMs - e.seenMs }))
      .sort((a, b) => a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  }

  /** Forgets entries that have aged out. */
  sweep(nowMs: number): void {
    for (const [k, e] of this.table) if (nowMs - e.seenMs > this.agingMs) this.table.delete(k);
    for (const [k, members] of this.groups) {
      for (const [p, until] of members) if (until <= nowMs) members.delete(p);
      if (members.size === 0) this.groups.delete(k);
    }
  }

  private flood(inPort: Port, vlan: number): Port[] {
    const fromUplink = inPort.kind === 'uplink';
    const out: Port[] = [];
    for (const p of this.ports.values()) {
      if (p === inPort) continue;
      if (p.kind === 'uplink' ? fromUplink : p.vlan !== vlan) continue;
      p.counters.flooded++;
      out.push(p);
    }
    this.counters.flooded++;
    return out;
  }

  private drop(frame: Frame, inPort?: Port): { frame: Frame; out: Port[] } {
    this.counters.dropped++;
    if (inPort) inPort.counters.dropped++;
    return { frame, out: [] };
  }

  private snoop(vlan: number, group: Mac, op: 'join' | 'leave', portId: string, nowMs: number): void {
    const k = key(vlan, group);
    let members = this.groups.get(k);
    if (op === 'leave') {
      members?.delete(portId);
      return;
    }
    if (!members) this.groups.set(k, (members = new Map()));
    members.set(portId, nowMs + IGMP_MEMBERSHIP_MS);
  }

  /** The ports that joined a multicast group, or undefined when none did (then it is flooded). */
  private groupPorts(vlan: number, group: Mac, nowMs: number): Port[] | undefined {
    const members = this.groups.get(key(vlan, group));
    if (!members) return undefined;
    const out: Port[] = [];
    for (const [id, until] of members) {
      const p = this.ports.get(id);
      if (p && until > nowMs) out.push(p);
    }
    return out.length > 0 ? out : undefined;
  }
}
