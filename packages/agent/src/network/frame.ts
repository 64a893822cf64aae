import type { Mac } from './addr.js';
import type { Heartbeat } from './nlb/heartbeat.js';

// What travels on a virtual switch: Ethernet-like frames carrying ARP, IPv4 (with our connection
// and datagram protocols), NLB heartbeats and IGMP membership reports.

/** The two transport protocols of the guest stack; NLB port rules call them "tcp" and "udp". */
export type Protocol = 'conn' | 'dgram';

/**
 * A segment of the connection protocol. A connection is named by its id (chosen by the client)
 * and the 4-tuple; `token` is the server's answer to `open`, echoed by the client on every later
 * segment, so a server that accepted an `open` the client did not keep learns it lost the race.
 */
export interface ConnSegment {
  kind: 'open' | 'accept' | 'data' | 'close' | 'reset';
  conn: number;
  token: number;
  /** Request number within the connection, for `data`. */
  seq: number;
  /** Payload bytes. */
  bytes: number;
  /** On a client request: how many bytes the answer should carry. */
  respond: number;
  /** On a server's answer: which VM answered (what a web page's "served by" line would say). */
  servedBy: string;
}

/** A datagram: one request or one reply, matched by `id`. */
export interface Datagram {
  id: number;
  reply: boolean;
  bytes: number;
  respond: number;
  servedBy: string;
}

interface PacketHeader {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
}

export type Packet =
  | (PacketHeader & { protocol: 'conn'; seg: ConnSegment })
  | (PacketHeader & { protocol: 'dgram'; dgram: Datagram });

export interface ArpBody {
  type: 'arp';
  op: 'request' | 'reply';
  senderMac: Mac;
  senderIp: number;
  targetMac: Mac;
  targetIp: number;
}

export type FrameBody =
  | ArpBody
  | { type: 'ipv4'; packet: Packet }
  | { type: 'nlb'; heartbeat: Heartbeat }
  | { type: 'igmp'; op: 'join' | 'leave'; group: Mac };

export interface Frame {
  src: Mac;
  dst: Mac;
  /** The VLAN the frame travels in: set by the access port it entered through (0: untagged). */
  vlan: number;
  body: FrameBody;
}

const ETHERNET_HEADER = 14;
const VLAN_TAG = 4;
const IP_HEADER = 20;
const CONN_HEADER = 20;
const DGRAM_HEADER = 8;

/** The frame's length on the wire, for byte counters. */
export function frameBytes(f: Frame): number {
  const head = ETHERNET_HEADER + (f.vlan ? VLAN_TAG : 0);
  const b = f.body;
  switch (b.type) {
    case 'arp':
      return head + 28;
    case 'igmp':
      return head + IP_HEADER + 8;
    case 'nlb':
      // Windows NLB heartbeats are about 1.5 KB whatever the cluster's size.
      return head + 1_500;
    case 'ipv4':
      return (
        head +
        IP_HEADER +
        (b.packet.protocol === 'conn'
          ? CONN_HEADER + b.packet.seg.bytes
          : DGRAM_HEADER + b.packet.dgram.bytes)
      );
  }
}
