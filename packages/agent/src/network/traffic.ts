import { seededRng, type Rng } from '../engine/rng.js';
import { BROADCAST_MAC, type Mac } from './addr.js';
import type { ConnSegment, Datagram, Frame, Packet, Protocol } from './frame.js';
import type { Scheduler, Timer } from './scheduler.js';

// The traffic generator: clients on the external network, behind one router port of an External
// switch, opening connections to a virtual IP at a Poisson rate from many client addresses. It
// measures what a user of the service would: which member answered each request, how long it
// took, and which connections were lost (no answer after the retries) or reset, split into
// before, during and after a fault.

export interface TrafficSpec {
  vip: number;
  port: number;
  protocol: Protocol;
  /** New connections (or datagrams) per second, on average. */
  ratePerSec: number;
  durationMs: number;
  /** Distinct client addresses, spread over `networks` class C networks. */
  clients: number;
  networks: number;
  /** The first client network, as an address in it (its last octet is ignored). */
  firstClientIp: number;
  requestsPerConnection: number;
  requestBytes: number;
  responseBytes: number;
  /** First retransmission timeout; doubled on each retry. */
  rtoMs: number;
  /** Retries before a connection counts as lost. */
  maxRetries: number;
  seed: number;
  /** The router's own MAC and address on the switch. */
  mac: Mac;
  ip: number;
}

export type Phase = 'before' | 'during' | 'after';
export const PHASES: readonly Phase[] = ['before', 'during', 'after'];

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface MemberTraffic {
  /** The member VM that answered; "" for connections no member ever accepted. */
  member: string;
  requests: number;
  /** Its fraction of the phase's answered requests. */
  share: number;
  latencyMs: LatencySummary;
  lostConnections: number;
  resetConnections: number;
}

export interface PhaseTraffic {
  started: number;
  completed: number;
  lost: number;
  reset: number;
  requests: number;
  latencyMs: LatencySummary;
  members: MemberTraffic[];
}

export interface TrafficReport {
  phase: Phase;
  /** Still sending new connections. */
  generating: boolean;
  inFlight: number;
  phases: Record<Phase, PhaseTraffic>;
}

interface Conn {
  id: number;
  ip: number;
  port: number;
  phase: Phase;
  state: 'arp' | 'opening' | 'open';
  token: number;
  member: string;
  seq: number;
  sentAtMs: number;
  retries: number;
  timer: Timer | undefined;
}

class Bucket {
  started = 0;
  completed = 0;
  lost = 0;
  reset = 0;
  readonly latency = new Map<string, number[]>();
  readonly lostBy = new Map<string, number>();
  readonly resetBy = new Map<string, number>();
}

/** Nearest-rank percentiles of a list of latencies. */
export function summarize(values: readonly number[]): LatencySummary {
  if (values.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0 };
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1]! };
}

export class TrafficGenerator {
  private phase: Phase = 'before';
  private readonly stats: Record<Phase, Bucket> = {
    before: new Bucket(),
    during: new Bucket(),
    after: new Bucket(),
  };
  private readonly conns = new Map<number, Conn>();
  private readonly rng: Rng;
  private nextId = 1;
  private readonly nextPort = new Map<number, number>();
  private vipMac: Mac | undefined;
  private arpTimer: Timer | undefined;
  private arrivals: Timer | undefined;
  private readonly endsAtMs: number;

  constructor(
    readonly spec: TrafficSpec,
    private readonly sched: Scheduler,
    private readonly send: (f: Frame) => void,
  ) {
    this.rng = seededRng(spec.seed);
    this.endsAtMs = sched.nowMs + spec.durationMs;
    this.scheduleArrival();
  }

  get generating(): boolean {
    return this.arrivals !== undefined;
  }

  get done(): boolean {
    return !this.generating && this.conns.size === 0;
  }

  /** Requests started from now on count in this phase. */
  markPhase(phase: Phase): void {
    this.phase = phase;
  }

  stop(): void {
    this.arrivals?.cancel();
    this.arrivals = undefined;
  }

  receive(frame: Frame): void {
    if (frame.dst !== this.spec.mac && frame.dst !== BROADCAST_MAC) return;
    const b = frame.body;
    if (b.type === 'arp') {
      if (b.op === 'reply' && b.senderIp === this.spec.vip) this.resolved(b.senderMac);
      else if (b.op === 'request' && b.targetIp === this.spec.ip && b.senderIp !== b.targetIp)
        this.sendFrame(b.senderMac, {
          type: 'arp',
          op: 'reply',
          senderMac: this.spec.mac,
          senderIp: this.spec.ip,
          targetMac: b.senderMac,
          targetIp: b.senderIp,
        });
      return;
    }
    if (b.type !== 'ipv4' || b.packet.src !== this.spec.vip) return;
    this.onPacket(b.packet);
  }

  report(): TrafficReport {
    const phases = {} as Record<Phase, PhaseTraffic>;
    for (const ph of PHASES) {
      const s = this.stats[ph];
      const all: number[] = [];
      for (const l of s.latency.values()) for (const v of l) all.push(v);
      const names = new Set([...s.latency.keys(), ...s.lostBy.keys(), ...s.resetBy.keys()]);
      phases[ph] = {
        started: s.started,
        completed: s.completed,
        lost: s.lost,
        reset: s.reset,
        requests: all.length,
        latencyMs: summarize(all),
        members: [...names].sort().map((member) => {
          const l = s.latency.get(member) ?? [];
          return {
            member,
            requests: l.length,
            share: all.length > 0 ? l.length / all.length : 0,
            latencyMs: summarize(l),
            lostConnections: s.lostBy.get(member) ?? 0,
            resetConnections: s.resetBy.get(member) ?? 0,
          };
        }),
      };
    }
    return { phase: this.phase, generating: this.generating, inFlight: this.conns.size, phases };
  }

  // --- Arrivals ---

  private scheduleArrival(): void {
    // Exponential gaps make a Poisson process.
    const u = (this.rng.nextU32() + 1) / 0x1_0000_0001;
    const gap = (-Math.log(u) * 1000) / this.spec.ratePerSec;
    const at = this.sched.nowMs + gap;
    if (at > this.endsAtMs) {
      this.arrivals = undefined;
      return;
    }
    this.arrivals = this.sched.at(at, () => {
      this.startConnection();
      this.scheduleArrival();
    });
  }

  private clientIp(): number {
    const s = this.spec;
    const i = this.rng.below(s.clients);
    const network = ((s.firstClientIp & 0xffffff00) >>> 0) + (i % s.networks) * 256;
    return network + 1 + (Math.floor(i / s.networks) % 254);
  }

  private startConnection(): void {
    const ip = this.clientIp();
    const port = this.nextPort.get(ip) ?? 49152;
    this.nextPort.set(ip, port >= 65535 ? 49152 : port + 1);
    const c: Conn = {
      id: this.nextId++,
      ip,
      port,
      phase: this.phase,
      state: 'arp',
      token: 0,
      member: '',
      seq: 0,
      sentAtMs: this.sched.nowMs,
      retries: 0,
      timer: undefined,
    };
    this.conns.set(c.id, c);
    this.stats[c.phase].started++;
    if (this.vipMac) this.open(c);
    else this.askArp();
  }

  private askArp(): void {
    if (this.arpTimer) return;
    const s = this.spec;
    this.sendFrame(BROADCAST_MAC, {
      type: 'arp',
      op: 'request',
      senderMac: s.mac,
      senderIp: s.ip,
      targetMac: '00-00-00-00-00-00',
      targetIp: s.vip,
    });
    this.arpTimer = this.sched.after(s.rtoMs, () => {
      this.arpTimer = undefined;
      if (!this.vipMac) this.askArp();
    });
  }

  private resolved(mac: Mac): void {
    this.vipMac = mac;
    this.arpTimer?.cancel();
    this.arpTimer = undefined;
    for (const c of this.conns.values()) if (c.state === 'arp') this.open(c);
  }

  // --- One connection ---

  private open(c: Conn): void {
    c.state = 'opening';
    c.retries = 0;
    this.transmit(c);
  }

  /**
   * Sends what the connection waits on (its open, or its current request) and arms the retry.
   * A first request's latency counts from the connection's start (what a user waits for a page);
   * a later one's from when it was first sent.
   */
  private transmit(c: Conn): void {
    const s = this.spec;
    // Armed before sending: on the same host the answer arrives within the send itself.
    c.timer = this.sched.after(s.rtoMs * 2 ** c.retries, () => {
      c.timer = undefined;
      if (c.retries >= s.maxRetries) return this.finish(c, 'lost');
      c.retries++;
      this.transmit(c);
    });
    if (s.protocol === 'dgram') {
      this.sendPacket(c, {
        id: c.id,
        reply: false,
        bytes: s.requestBytes,
        respond: s.responseBytes,
        servedBy: '',
      });
    } else if (c.state === 'opening') {
      this.sendSegment(c, 'open', 0, 0, 0);
    } else {
      this.sendSegment(c, 'data', c.seq, s.requestBytes, s.responseBytes);
    }
  }

  private onPacket(p: Packet): void {
    if (p.protocol === 'dgram') {
      const c = this.conns.get(p.dgram.id);
      if (!c || !p.dgram.reply || p.dstPort !== c.port || p.dst !== c.ip) return;
      c.member = p.dgram.servedBy;
      this.answered(c);
      return this.finish(c, 'completed');
    }
    const seg = p.seg;
    const c = this.conns.get(seg.conn);
    if (!c || p.dst !== c.ip || p.dstPort !== c.port) return;
    switch (seg.kind) {
      case 'accept':
        if (c.state !== 'opening') return;
        c.timer?.cancel();
        c.state = 'open';
        c.token = seg.token;
        c.member = seg.servedBy;
        c.seq = 1;
        c.retries = 0;
        this.transmit(c);
        return;
      case 'data':
        if (c.state !== 'open' || seg.seq !== c.seq || seg.token !== c.token) return;
        c.timer?.cancel();
        this.answered(c);
        if (c.seq >= this.spec.requestsPerConnection) {
          this.sendSegment(c, 'close', 0, 0, 0);
          return this.finish(c, 'completed');
        }
        c.seq++;
        c.retries = 0;
        c.sentAtMs = this.sched.nowMs;
        this.transmit(c);
        return;
      case 'reset':
        if (c.state === 'open' && seg.token !== c.token) return;
        return this.finish(c, 'reset');
    }
  }

  private answered(c: Conn): void {
    const s = this.stats[c.phase];
    let l = s.latency.get(c.member);
    if (!l) s.latency.set(c.member, (l = []));
    l.push(this.sched.nowMs - c.sentAtMs);
  }

  private finish(c: Conn, how: 'completed' | 'lost' | 'reset'): void {
    c.timer?.cancel();
    this.conns.delete(c.id);
    const s = this.stats[c.phase];
    s[how]++;
    if (how === 'lost') s.lostBy.set(c.member, (s.lostBy.get(c.member) ?? 0) + 1);
    if (how === 'reset') s.resetBy.set(c.member, (s.resetBy.get(c.member) ?? 0) + 1);
  }

  private sendSegment(
    c: Conn,
    kind: 'open' | 'data' | 'close',
    seq: number,
    bytes: number,
    respond: number,
  ): void {
    this.sendPacket(c, { kind, conn: c.id, token: c.token, seq, bytes, respond, servedBy: '' });
  }

  private sendPacket(c: Conn, payload: ConnSegment | Datagram): void {
    const header = { src: c.ip, dst: this.spec.vip, srcPort: c.port, dstPort: this.spec.port };
    const packet: Packet =
      'kind' in payload
        ? { ...header, protocol: 'conn', seg: payload }
        : { ...header, protocol: 'dgram', dgram: payload };
    this.sendFrame(this.vipMac!, { type: 'ipv4', packet });
  }

  private sendFrame(dst: Mac, body: Frame['body']): void {
    this.send({ src: this.spec.mac, dst, vlan: 0, body });
  }
}
