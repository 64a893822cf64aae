import { expect } from 'chai';
import fc from 'fast-check';
import { shareCpu } from '../src/engine/scheduler.js';
import { makeEngine, vmConfig } from './helpers.js';

/** A VM's claim with demand, reserve and limit up to `lps` logical processors. */
const claimUpTo = (lps: number) =>
  fc.record({
    demand: fc.double({ min: 0, max: lps, noNaN: true }),
    reserve: fc.double({ min: 0, max: lps, noNaN: true }),
    limit: fc.double({ min: 0, max: lps, noNaN: true }),
    weight: fc.integer({ min: 1, max: 10_000 }),
  });

describe('CPU shares under contention', () => {
  it('without contention every VM gets its demand', () => {
    const s = shareCpu(8, [
      { id: 'a', demand: 2, reserve: 0, limit: 2, weight: 100 },
      { id: 'b', demand: 1, reserve: 0, limit: 4, weight: 100 },
    ]);
    expect(s.get('a')).to.be.closeTo(2, 1e-9);
    expect(s.get('b')).to.be.closeTo(1, 1e-9);
  });

  it('equal weights share equally; a double weight gets double', () => {
    const s = shareCpu(3, [
      { id: 'a', demand: 4, reserve: 0, limit: 4, weight: 200 },
      { id: 'b', demand: 4, reserve: 0, limit: 4, weight: 100 },
    ]);
    expect(s.get('a')).to.be.closeTo(2, 1e-9);
    expect(s.get('b')).to.be.closeTo(1, 1e-9);
  });

  it('reserves come first, then weight, and a limit caps a VM while others take the rest', () => {
    const s = shareCpu(4, [
      { id: 'reserved', demand: 4, reserve: 2, limit: 4, weight: 100 },
      { id: 'limited', demand: 4, reserve: 0, limit: 0.5, weight: 10_000 },
      { id: 'plain', demand: 4, reserve: 0, limit: 4, weight: 100 },
    ]);
    // 2 reserved; 2 left by weight: limited would get ~1.96 but is capped at 0.5; the 1.5 left splits 1:1.
    expect(s.get('limited')).to.be.closeTo(0.5, 1e-9);
    expect(s.get('reserved')).to.be.closeTo(2.75, 1e-9);
    expect(s.get('plain')).to.be.closeTo(0.75, 1e-9);
  });

  it('properties: never more than capacity, demand or limit; reserves honoured when they fit', () => {
    const claim = claimUpTo(4);
    fc.assert(
      fc.property(
        fc.double({ min: 0.5, max: 16, noNaN: true }),
        fc.array(claim, { maxLength: 12 }),
        (capacity, raw) => {
          const claims = raw.map((c, i) => ({ ...c, id: `v${i}`, reserve: Math.min(c.reserve, c.limit) }));
          const s = shareCpu(capacity, claims);
          let total = 0;
          let reserves = 0;
          for (const c of claims) {
            const got = s.get(c.id)!;
            total += got;
            reserves += Math.min(c.reserve, c.demand, c.limit);
            expect(got).to.be.at.most(Math.min(c.demand, c.limit) + 1e-9);
          }
          expect(total).to.be.at.most(capacity + 1e-9);
          const wanted = claims.reduce((a, c) => a + Math.min(c.demand, c.limit), 0);
          // Work-conserving: the host is only left idle when every VM has what it can use.
          expect(total).to.be.closeTo(Math.min(capacity, wanted), 1e-6);
          if (reserves <= capacity) {
            for (const c of claims)
              expect(s.get(c.id)!).to.be.at.least(Math.min(c.reserve, c.demand, c.limit) - 1e-9);
          }
        },
      ),
      { seed: 7, numRuns: 300 },
    );
  });

  it('properties: when everything asked for fits, each VM gets its demand up to its limit', () => {
    const claim = claimUpTo(2);
    fc.assert(
      fc.property(
        fc.array(claim, { maxLength: 60 }),
        fc.double({ min: 0, max: 8, noNaN: true }),
        (raw, spare) => {
          const claims = raw.map((c, i) => ({ ...c, id: `v${i}` }));
          const wanted = claims.reduce((a, c) => a + Math.min(c.demand, c.limit), 0);
          const s = shareCpu(wanted + spare, claims);
          for (const c of claims) expect(s.get(c.id)).to.be.closeTo(Math.min(c.demand, c.limit), 1e-12);
        },
      ),
      { seed: 11, numRuns: 300 },
    );
  });

  it('the engine reports CPU % per VM and for the host, and emulated I/O costs the root more', () => {
    const e = makeEngine({ logicalProcessors: 2 });
    const disk = [{ controller: 'DISK_CONTROLLER_IDE' as const, path: 'd.vhd', createSizeBytes: 8 << 20 }];
    const workload = { bootMs: 10, cpuDemandPercent: 100, diskIops: 1000 };
    e.vms.create('syn', vmConfig('syn', { processor: { count: 2 }, disks: disk, workload }));
    e.vms.create(
      'emu',
      vmConfig('emu', {
        guestOs: 'other-x86',
        integrationServices: false,
        processor: { count: 1 },
        disks: disk,
        workload,
      }),
    );
    e.power.change('syn', 'VM_ACTION_START');
    e.power.change('emu', 'VM_ACTION_START');
    e.tick(1000);
    e.takeEffects();
    e.tick(1000);
    const cpu = e.cpuReport();
    expect(cpu.hostPercent).to.be.closeTo(100, 1e-6);
    const syn = e.vms.ioStats('syn');
    const emu = e.vms.ioStats('emu');
    expect(emu.rootCpuLp).to.be.greaterThan(syn.rootCpuLp * 5);
    expect(emu.emulatedIos).to.be.greaterThan(0);
    expect(syn.emulatedIos).to.equal(0);
    // Contention: demand is 3 LPs on 2 LPs minus the root's I/O work, shared by weight (equal).
    const left = 2 - cpu.rootLp;
    expect(cpu.vms.get('syn')!.lp + cpu.vms.get('emu')!.lp).to.be.closeTo(left, 1e-9);
    expect(cpu.vms.get('emu')!.lp).to.be.closeTo(Math.min(1, left / 2), 1e-9);
    expect(e.vms.get('syn').status!.cpuPercent).to.be.greaterThan(0);
  });
  it("the engine's shares are shareCpu's for its running VMs' claims, and a report keeps the shares it was made with", () => {
    for (const lps of [8, 2]) {
      // 8 LPs: everything fits (the uncontended path); 2: the VMs ask for more than the host has.
      const e = makeEngine({ logicalProcessors: lps });
      const procs = [
        { count: 2, reservePercent: 10, limitPercent: 100, relativeWeight: 100 },
        { count: 1, reservePercent: 100, limitPercent: 100, relativeWeight: 300 },
        { count: 4, reservePercent: 0, limitPercent: 30, relativeWeight: 100 },
        { count: 2, reservePercent: 50, limitPercent: 100, relativeWeight: 200 },
      ];
      procs.forEach((processor, k) =>
        e.vms.create(
          `vm${k}`,
          vmConfig(`vm${k}`, { processor, workload: { bootMs: 10, cpuDemandPercent: 70 } }),
        ),
      );
      e.vms.create('off', vmConfig('off'));
      for (let k = 0; k < procs.length; k++) e.power.change(`vm${k}`, 'VM_ACTION_START');
      e.tick(1000);
      e.tick(1000);
      const cpu = e.cpuReport();
      // Read after the VMs changed again: the report answers for the moment it was made.
      e.power.change('vm0', 'VM_ACTION_TURN_OFF');
      e.tick(1000);
      expect(e.cpuReport().vms.get('vm0')!.lp).to.equal(0);
      const want = shareCpu(
        lps - cpu.rootLp,
        procs.map((p, k) => ({
          id: `vm${k}`,
          demand: p.count * 0.7,
          reserve: (p.count * p.reservePercent) / 100,
          limit: (p.count * p.limitPercent) / 100,
          weight: p.relativeWeight,
        })),
      );
      for (let k = 0; k < procs.length; k++) {
        expect(cpu.vms.get(`vm${k}`)!.lp, `${lps} LPs, vm${k}`).to.equal(want.get(`vm${k}`));
        expect(cpu.vms.get(`vm${k}`)!.percent).to.equal((want.get(`vm${k}`)! / procs[k]!.count) * 100);
      }
      expect(cpu.vms.get('off')).to.deep.equal({ lp: 0, percent: 0 });
    }
  });
});
