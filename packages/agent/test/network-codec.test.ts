import { expect } from 'chai';
import fc from 'fast-check';
import { decodeFrame, encodeFrame } from '../src/network/codec.js';
import type { Frame } from '../src/network/frame.js';
import { allConverged, nlbFarm, trafficSpec } from './network-helpers.js';

const mac = fc
  .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
  .map((b) => b.map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('-'));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const name = fc.string({ maxLength: 40 });

const frame: fc.Arbitrary<Frame> = fc.record({
  src: mac,
  dst: mac,
  vlan: fc.integer({ min: 0, max: 4094 }),
  body: fc.oneof(
    fc.record({
      type: fc.constant('arp' as const),
      op: fc.constantFrom('request' as const, 'reply' as const),
      senderMac: mac,
      senderIp: u32,
      targetMac: mac,
      targetIp: u32,
    }),
    fc.record({
      type: fc.constant('ipv4' as const),
      packet: fc.oneof(
        fc.record({
          src: u32,
          dst: u32,
          srcPort: u16,
          dstPort: u16,
          protocol: fc.constant('conn' as const),
          seg: fc.record({
            kind: fc.constantFrom(
              'open' as const,
              'accept' as const,
              'data' as const,
              'close' as const,
              'reset' as const,
            ),
            conn: u32,
            token: u32,
            seq: u32,
            bytes: u32,
            respond: u32,
            servedBy: name,
          }),
        }),
        fc.record({
          src: u32,
          dst: u32,
          srcPort: u16,
          dstPort: u16,
          protocol: fc.constant('dgram' as const),
          dgram: fc.record({ id: u32, reply: fc.boolean(), bytes: u32, respond: u32, servedBy: name }),
        }),
      ),
    }),
    fc.record({
      type: fc.constant('igmp' as const),
      op: fc.constantFrom('join' as const, 'leave' as const),
      group: mac,
    }),
  ),
});

describe('tunnel frame encoding', () => {
  it('decodes what it encodes', () => {
    fc.assert(
      fc.property(frame, (f) => {
        expect(decodeFrame(encodeFrame(f))).to.deep.equal(f);
      }),
    );
  });

  it('carries a whole NLB farm: heartbeats, ARP and connections survive the encoding', () => {
    const { sim } = nlbFarm({
      encode: true,
      hosts: 3,
      members: [
        { vm: 'a', host: 'h1', priority: 1 },
        { vm: 'b', host: 'h2', priority: 2 },
        { vm: 'c', host: 'h3', priority: 3 },
      ],
    });
    expect(sim.runUntil(() => allConverged(sim, 3), 5_000)).to.equal(true);
    sim
      .host('h1')
      .startTraffic(
        't',
        'ext',
        0,
        trafficSpec({ ratePerSec: 100, durationMs: 3_000, requestsPerConnection: 3 }),
      );
    sim.run(4_000);
    const r = sim.host('h1').trafficReport('t').phases.before;
    expect(r.completed).to.equal(r.started);
    expect(r.members.map((m) => m.member)).to.deep.equal(['a', 'b', 'c']);
    expect(sim.tunnelFrames).to.be.greaterThan(1_000);
  });

  it('refuses truncated, padded or out-of-range bytes', () => {
    const good = encodeFrame({
      src: '00-15-5D-00-00-01',
      dst: 'FF-FF-FF-FF-FF-FF',
      vlan: 7,
      body: { type: 'igmp', op: 'join', group: '01-00-5E-7F-00-64' },
    });
    expect(decodeFrame(good)).to.not.equal(undefined);
    expect(decodeFrame(good.subarray(0, good.length - 1))).to.equal(undefined);
    expect(decodeFrame(Buffer.concat([good, Buffer.from([0])]))).to.equal(undefined);
    const badVlan = Buffer.from(good);
    badVlan.writeUInt16BE(5000, 12);
    expect(decodeFrame(badVlan)).to.equal(undefined);
    const badType = Buffer.from(good);
    badType[14] = 9;
    expect(decodeFrame(badType)).to.equal(undefined);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (b) => void decodeFrame(Buffer.from(b))));
  });

  it('refuses a heartbeat that does not fit the schema', () => {
    const hb = (h: object) =>
      decodeFrame(
        encodeFrame({
          src: '02-01-0A-00-00-64',
          dst: 'FF-FF-FF-FF-FF-FF',
          vlan: 0,
          body: { type: 'nlb', heartbeat: h as never },
        }),
      );
    const ok = {
      vip: 1,
      member: 'a',
      priority: 1,
      state: 'converged',
      draining: false,
      view: 1,
      rulesHash: 1,
      agreement: 1,
      rules: [],
      maps: [],
      connBuckets: [],
    };
    expect(hb(ok)).to.not.equal(undefined);
    expect(hb({ ...ok, priority: 33 })).to.equal(undefined);
    expect(hb({ ...ok, maps: [[1, 2, 3]] })).to.equal(undefined);
    expect(hb({ ...ok, state: 'bogus' })).to.equal(undefined);
  });
});
