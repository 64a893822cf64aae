import { z } from 'zod';
import { macFromBytes, macToBytes, type Mac } from './addr.js';
import type { ConnSegment, Frame, FrameBody, Packet } from './frame.js';
import { BUCKETS } from './nlb/buckets.js';
import type { Heartbeat } from './nlb/heartbeat.js';
import type { VmNetworkSnapshot } from './host-network.js';

// Frames as bytes, for the tunnels between agents. What comes out of a tunnel crossed a process
// boundary: `decodeFrame` checks every field and returns undefined for anything malformed.
//
// Layout: dst(6) src(6) vlan(u16) type(u8), then by type:
//   arp   op(u8) senderMac(6) senderIp(u32) targetMac(6) targetIp(u32)
//   ipv4  src(u32) dst(u32) srcPort(u16) dstPort(u16) protocol(u8), then
//         conn  kind(u8) conn(u32) token(u32) seq(u32) bytes(u32) respond(u32) servedBy(str)
//         dgram id(u32) reply(u8) bytes(u32) respond(u32) servedBy(str)
//   nlb   the heartbeat as JSON (str16)
//   igmp  op(u8) group(6)
// str is a u8 length and UTF-8 bytes; str16 a u16 length.

const TYPES = ['arp', 'ipv4', 'nlb', 'igmp'] as const;
const KINDS: ConnSegment['kind'][] = ['open', 'accept', 'data', 'close', 'reset'];
const PROTOCOLS = ['conn', 'dgram'] as const;
const MAX_NAME = 255;

class Writer {
  private buf = Buffer.allocUnsafe(256);
  private at = 0;

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }

  u8(v: number): void {
    this.room(1);
    this.buf.writeUInt8(v, this.at++);
  }

  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v, this.at);
    this.at += 2;
  }

  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.at);
    this.at += 4;
  }

  mac(m: Mac): void {
    for (const b of macToBytes(m)) this.u8(b);
  }

  str(s: string, wide = false): void {
    const bytes = Buffer.from(s, 'utf8');
    const max = wide ? 0xffff : MAX_NAME;
    if (bytes.length > max)
      throw new Error(`string of ${bytes.length} bytes does not fit the frame encoding`);
    if (wide) this.u16(bytes.length);
    else this.u8(bytes.length);
    this.room(bytes.length);
    bytes.copy(this.buf, this.at);
    this.at += bytes.length;
  }

  done(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.at));
  }
}

class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new RangeError('truncated frame');
  }

  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.at++);
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }

  mac(): Mac {
    this.need(6);
    const m = macFromBytes(this.buf.subarray(this.at, this.at + 6));
    this.at += 6;
    return m;
  }

  str(wide = false): string {
    const n = wide ? this.u16() : this.u8();
    this.need(n);
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }

  end(): void {
    if (this.at !== this.buf.length) throw new RangeError('trailing bytes after the frame');
  }
}

export function encodeFrame(f: Frame): Buffer {
  const w = new Writer();
  w.mac(f.dst);
  w.mac(f.src);
  w.u16(f.vlan);
  const b = f.body;
  w.u8(TYPES.indexOf(b.type));
  switch (b.type) {
    case 'arp':
      w.u8(b.op === 'request' ? 1 : 2);
      w.mac(b.senderMac);
      w.u32(b.senderIp);
      w.mac(b.targetMac);
      w.u32(b.targetIp);
      break;
    case 'ipv4': {
      const p = b.packet;
      w.u32(p.src);
      w.u32(p.dst);
      w.u16(p.srcPort);
      w.u16(p.dstPort);
      w.u8(PROTOCOLS.indexOf(p.protocol));
      if (p.protocol === 'conn') {
        const s = p.seg;
        w.u8(KINDS.indexOf(s.kind));
        for (const v of [s.conn, s.token, s.seq, s.bytes, s.respond]) w.u32(v);
        w.str(s.servedBy);
      } else {
        const d = p.dgram;
        w.u32(d.id);
        w.u8(d.reply ? 1 : 0);
        w.u32(d.bytes);
        w.u32(d.respond);
        w.str(d.servedBy);
      }
      break;
    }
    case 'nlb':
      w.str(JSON.stringify(b.heartbeat), true);
      break;
    case 'igmp':
      w.u8(b.op === 'join' ? 1 : 2);
      w.mac(b.group);
      break;
  }
  return w.done();
}

const u32 = z.number().int().min(0).max(0xffffffff);
const priority = z.number().int().min(1).max(32);
const bucketOwner = z.number().int().min(0).max(32);
const heartbeatSchema = z.object({
  vip: u32,
  member: z.string().max(MAX_NAME),
  priority,
  state: z.enum(['converging', 'converged', 'leaving']),
  draining: z.boolean(),
  view: u32,
  rulesHash: u32,
  agreement: u32,
  rules: z
    .array(z.object({ weight: z.number().int().min(0).max(100), handling: priority, enabled: z.boolean() }))
    .max(32),
  maps: z.array(z.array(bucketOwner).length(BUCKETS).nullable()).max(32),
  connBuckets: z
    .array(
      z
        .array(
          z
            .number()
            .int()
            .min(0)
            .max(BUCKETS - 1),
        )
        .max(BUCKETS),
    )
    .max(32),
  awaiting: u32.optional(),
});

function decodeBody(r: Reader, type: number): FrameBody {
  switch (TYPES[type]) {
    case 'arp': {
      const op = r.u8();
      if (op !== 1 && op !== 2) throw new RangeError('bad ARP operation');
      return {
        type: 'arp',
        op: op === 1 ? 'request' : 'reply',
        senderMac: r.mac(),
        senderIp: r.u32(),
        targetMac: r.mac(),
        targetIp: r.u32(),
      };
    }
    case 'ipv4': {
      const header = { src: r.u32(), dst: r.u32(), srcPort: r.u16(), dstPort: r.u16() };
      const protocol = PROTOCOLS[r.u8()];
      let packet: Packet;
      if (protocol === 'conn') {
        const kind = KINDS[r.u8()];
        if (!kind) throw new RangeError('bad segment kind');
        const [conn, token, seq, bytes, respond] = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32()] as const;
        packet = { ...header, protocol, seg: { kind, conn, token, seq, bytes, respond, servedBy: r.str() } };
      } else if (protocol === 'dgram') {
        const id = r.u32();
        const reply = r.u8();
        if (reply > 1) throw new RangeError('bad datagram flag');
        packet = {
          ...header,
          protocol,
          dgram: { id, reply: reply === 1, bytes: r.u32(), respond: r.u32(), servedBy: r.str() },
        };
      } else {
        throw new RangeError('bad protocol');
      }
      return { type: 'ipv4', packet };
    }
    case 'nlb':
      return { type: 'nlb', heartbeat: heartbeatSchema.parse(JSON.parse(r.str(true))) as Heartbeat };
    case 'igmp': {
      const op = r.u8();
      if (op !== 1 && op !== 2) throw new RangeError('bad IGMP operation');
      return { type: 'igmp', op: op === 1 ? 'join' : 'leave', group: r.mac() };
    }
    default:
      throw new RangeError('bad frame type');
  }
}

/** A frame from the tunnel encoding, or undefined if the bytes are not a valid frame. */
export function decodeFrame(bytes: Buffer): Frame | undefined {
  try {
    const r = new Reader(bytes);
    const dst = r.mac();
    const src = r.mac();
    const vlan = r.u16();
    if (vlan > 4094) return undefined;
    const body = decodeBody(r, r.u8());
    r.end();
    return { dst, src, vlan, body };
  } catch {
    return undefined;
  }
}

const snapshotSchema = z.object({
  nics: z
    .array(
      z.object({
        index: z.number().int().min(0).max(63),
        stack: z.object({
          conns: z.array(
            z.tuple([
              z.string().max(128),
              z.object({ token: u32, answered: z.array(z.tuple([u32, u32])).max(64) }),
            ]),
          ),
        }),
        nlb: z
          .object({
            clusterId: z.string().max(MAX_NAME),
            member: z.object({
              running: z.enum(['stopped', 'active', 'suspended']),
              drainstopping: z.boolean(),
              drained: z.array(z.number().int().min(0).max(31)).max(32),
              disabled: z.array(z.number().int().min(0).max(31)).max(32),
              view: u32,
              maps: z.array(z.array(bucketOwner).length(BUCKETS).nullable()).max(32),
              defaultHost: bucketOwner,
              peers: z.array(heartbeatSchema).max(32),
              descriptors: z.array(
                z.tuple([
                  z.string().max(64),
                  z.object({
                    rule: z.number().int().min(0).max(31),
                    bucket: z
                      .number()
                      .int()
                      .min(0)
                      .max(BUCKETS - 1),
                    token: u32,
                    lastMs: z.number(),
                  }),
                ]),
              ),
              lastConvergence: z
                .object({
                  startedAtMs: z.number(),
                  finishedAtMs: z.number(),
                  durationMs: z.number(),
                  members: z.array(priority).max(32),
                })
                .optional(),
            }),
          })
          .optional(),
      }),
    )
    .max(12),
});

/** A VM's network state as another agent sent it, or an error saying what is wrong with it. */
export function parseVmNetworkSnapshot(bytes: Buffer): VmNetworkSnapshot {
  return snapshotSchema.parse(JSON.parse(bytes.toString('utf8'))) as VmNetworkSnapshot;
}
