import type { Rng } from '../engine/rng.js';
import { BROADCAST_MAC, nlbClusterMac, nlbMaskedSourceMac, type Cidr, type Mac } from './addr.js';
import type { ArpBody, ConnSegment, Frame, Packet } from './frame.js';
import type { NlbClusterConfig } from './nlb/config.js';
import type { Heartbeat } from './nlb/heartbeat.js';
import type { NlbMember } from './nlb/member.js';
import type { Scheduler } from './scheduler.js';

// A guest's network stack, one per adapter, as much of one as NLB and the traffic model need:
// ARP, IPv4, a connection protocol (open, accept, data, close, reset, with connection ids) and a
// datagram protocol. It serves every port: each request is a job that takes the guest's service
// time, with as many jobs at once as the guest has virtual processors. When the adapter belongs
// to an NLB cluster, the NLB member sits between the adapter and the stack, as Windows' NLB
// driver does, and the adapter takes the cluster's MAC (unicast) or adds it (multicast).

/** What the guest's workload and CPU share make of a request. */
export interface GuestInfo {
  /** Time one request takes now: the workload's service time, stretched when the guest gets less CPU than it wants. */
  serviceTimeMs: number;
  /** Requests served at once (its virtual processors). */
  workers: number;
}

export interface StackIo {
  sched: Scheduler;
  rng: Rng;
  send(frame: Frame): void;
  guest(): GuestInfo;
}

interface ServerConn {
  token: number;
  /** Answers already sent, by request number, kept to answer a retransmitted request again. */
  answered: Map<number, number>;
  inProgress: Set<number>;
}

export interface StackSnapshot {
  conns: [string, { token: number; answered: [number, number][] }][];
}

interface NlbBinding {
  member: NlbMember;
  vip: number;
  clusterMac: Mac;
  /** The source MAC of everything the adapter sends. */
  sourceMac: Mac;
  /** The MAC the adapter answers to for its own address. */
  ownMac: Mac;
  heartbeatDst: Mac;
  igmp: boolean;
}

/** Hosts re-send IGMP membership reports on this period (RFC 2236's query interval). */
export const IGMP_REPORT_MS = 125_000;
const ANSWERS_KEPT = 16;

export class GuestStack {
  private readonly conns = new Map<string, ServerConn>();
  private readonly jobs: (() => void)[] = [];
  private busy = 0;
  /** Bumped when the VM turns off, so requests it was serving then come to nothing. */
  private epoch = 0;
  private nlb: NlbBinding | undefined;
  private igmpTimer: { cancel(): void } | undefined;

  constructor(
    /** Who answers: the VM's id, as the "served by" of its answers. */
    readonly name: string,
    readonly mac: Mac,
    public ip: Cidr | undefined,
    private readonly io: StackIo,
  ) {}

  get member(): NlbMember | undefined {
    return this.nlb?.member;
  }

  bindNlb(member: NlbMember, cluster: NlbClusterConfig): void {
    this.unbindNlb();
    const clusterMac = nlbClusterMac(cluster.mode, cluster.vip);
    const unicast = cluster.mode === 'unicast';
    this.nlb = {
      member,
      vip: cluster.vip,
      clusterMac,
      sourceMac: unicast ? nlbMaskedSourceMac(member.priority, cluster.vip) : this.mac,
      ownMac: unicast ? clusterMac : this.mac,
      // Unicast members cannot reach each other's (shared) MAC: heartbeats go to broadcast.
      heartbeatDst: unicast ? BROADCAST_MAC : clusterMac,
      igmp: cluster.mode === 'igmp',
    };
    if (this.nlb.igmp) this.reportMembership();
  }

  unbindNlb(): void {
    this.igmpTimer?.cancel();
    this.igmpTimer = undefined;
    this.nlb = undefined;
  }

  sendHeartbeat(hb: Heartbeat): void {
    if (!this.nlb) return;
    this.io.send({
      src: this.nlb.sourceMac,
      dst: this.nlb.heartbeatDst,
      vlan: 0,
      body: { type: 'nlb', heartbeat: hb },
    });
  }

  /** A gratuitous ARP (or, with no address, an announcement with none): switches relearn this adapter's port. */
  announce(): void {
    const ip = this.ip?.ip ?? this.nlb?.vip ?? 0;
    this.io.send({
      src: this.sourceMac(),
      dst: BROADCAST_MAC,
      vlan: 0,
      body: {
        type: 'arp',
        op: 'request',
        senderMac: this.ownMac(),
        senderIp: ip,
        targetMac: BROADCAST_MAC,
        targetIp: ip,
      },
    });
    if (this.nlb?.igmp) this.reportMembership();
  }

  /** The VM turned off: connections and queued requests are gone. */
  reset(): void {
    this.conns.clear();
    this.jobs.length = 0;
    this.busy = 0;
    this.epoch++;
  }

  receive(frame: Frame): void {
    const d = frame.dst;
    const nlb = this.nlb;
    if (d !== BROADCAST_MAC && d !== this.ownMac() && d !== nlb?.clusterMac) return;
    const body = frame.body;
    switch (body.type) {
      case 'arp':
        if (body.op === 'request') this.answerArp(body);
        return;
      case 'nlb':
        nlb?.member.onHeartbeat(body.heartbeat);
        return;
      case 'igmp':
        return;
      case 'ipv4': {
        const p = body.packet;
        if (this.ip && p.dst === this.ip.ip) this.serve(p, frame.src);
        else if (nlb && p.dst === nlb.vip && nlb.member.accepts(p)) this.serve(p, frame.src);
      }
    }
  }

  snapshot(): StackSnapshot {
    return {
      conns: [...this.conns].map(([k, c]) => [k, { token: c.token, answered: [...c.answered] }]),
    };
  }

  restore(s: StackSnapshot): void {
    this.reset();
    for (const [k, c] of s.conns)
      this.conns.set(k, { token: c.token, answered: new Map(c.answered), inProgress: new Set() });
  }

  private ownMac(): Mac {
    return this.nlb?.ownMac ?? this.mac;
  }

  private sourceMac(): Mac {
    return this.nlb?.sourceMac ?? this.mac;
  }

  private reportMembership(): void {
    const nlb = this.nlb!;
    this.igmpTimer?.cancel();
    // Reports go to broadcast so every host's switch learns which tunnel leads to a member.
    this.io.send({
      src: nlb.sourceMac,
      dst: BROADCAST_MAC,
      vlan: 0,
      body: { type: 'igmp', op: 'join', group: nlb.clusterMac },
    });
    this.igmpTimer = this.io.sched.after(IGMP_REPORT_MS, () => this.reportMembership());
  }

  private answerArp(a: ArpBody): void {
    let mac: Mac | undefined;
    if (this.ip && a.targetIp === this.ip.ip) mac = this.ownMac();
    else if (this.nlb && a.targetIp === this.nlb.vip) mac = this.nlb.clusterMac;
    if (!mac || a.senderIp === a.targetIp) return;
    this.io.send({
      src: this.sourceMac(),
      dst: a.senderMac,
      vlan: 0,
      body: {
        type: 'arp',
        op: 'reply',
        senderMac: mac,
        senderIp: a.targetIp,
        targetMac: a.senderMac,
        targetIp: a.senderIp,
      },
    });
  }

  private reply(to: Packet, peerMac: Mac, answer: Omit<ConnSegment, 'conn'>): void {
    if (to.protocol !== 'conn') return;
    this.sendPacket(peerMac, {
      src: to.dst,
      dst: to.src,
      srcPort: to.dstPort,
      dstPort: to.srcPort,
      protocol: 'conn',
      seg: { ...answer, conn: to.seg.conn },
    });
  }

  private sendPacket(dstMac: Mac, p: Packet): void {
    if (this.nlb && p.src === this.nlb.vip) this.nlb.member.onSend(p);
    this.io.send({ src: this.sourceMac(), dst: dstMac, vlan: 0, body: { type: 'ipv4', packet: p } });
  }

  private serve(p: Packet, peerMac: Mac): void {
    if (p.protocol === 'dgram') {
      const q = p.dgram;
      if (q.reply) return;
      this.enqueue(() =>
        this.sendPacket(peerMac, {
          src: p.dst,
          dst: p.src,
          srcPort: p.dstPort,
          dstPort: p.srcPort,
          protocol: 'dgram',
          dgram: { id: q.id, reply: true, bytes: q.respond, respond: 0, servedBy: this.name },
        }),
      );
      return;
    }
    const seg = p.seg;
    const key = `${p.dst}:${p.dstPort}:${p.src}:${p.srcPort}:${seg.conn}`;
    const base = { token: 0, seq: 0, bytes: 0, respond: 0, servedBy: this.name };
    let c = this.conns.get(key);
    switch (seg.kind) {
      case 'open':
        if (!c) {
          c = { token: this.io.rng.nextU32() || 1, answered: new Map(), inProgress: new Set() };
          this.conns.set(key, c);
        }
        this.reply(p, peerMac, { ...base, kind: 'accept', token: c.token });
        return;
      case 'data': {
        if (!c || seg.token !== c.token) {
          this.reply(p, peerMac, { ...base, kind: 'reset', token: seg.token });
          return;
        }
        const conn = c;
        const answered = conn.answered.get(seg.seq);
        if (answered !== undefined) {
          this.reply(p, peerMac, { ...base, kind: 'data', token: conn.token, seq: seg.seq, bytes: answered });
          return;
        }
        if (conn.inProgress.has(seg.seq)) return;
        conn.inProgress.add(seg.seq);
        this.enqueue(() => {
          conn.inProgress.delete(seg.seq);
          if (this.conns.get(key) !== conn) return;
          conn.answered.set(seg.seq, seg.respond);
          if (conn.answered.size > ANSWERS_KEPT) conn.answered.delete(conn.answered.keys().next().value!);
          this.reply(p, peerMac, {
            ...base,
            kind: 'data',
            token: conn.token,
            seq: seg.seq,
            bytes: seg.respond,
          });
        });
        return;
      }
      case 'close':
        this.conns.delete(key);
        this.reply(p, peerMac, { ...base, kind: 'close', token: seg.token });
        return;
      case 'reset':
        this.conns.delete(key);
        return;
      case 'accept':
        return;
    }
  }

  private enqueue(job: () => void): void {
    this.jobs.push(job);
    this.startJobs();
  }

  private startJobs(): void {
    const g = this.io.guest();
    while (this.busy < Math.max(1, g.workers) && this.jobs.length > 0) {
      const job = this.jobs.shift()!;
      const epoch = this.epoch;
      this.busy++;
      this.io.sched.after(g.serviceTimeMs, () => {
        if (epoch !== this.epoch) return;
        this.busy--;
        job();
        this.startJobs();
      });
    }
  }
}
