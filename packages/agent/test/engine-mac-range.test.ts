import { expect } from 'chai';
import { status } from '@hyperfarm/api';
import { makeEngine, vmConfig } from './helpers.js';

/**
 * The host's dynamic MAC range as the engine reports it (the host's macPoolStart and
 * macPoolSize) and the addresses it hands out from it: the farm gives each host a block of its
 * own, so that MACs are unique across the farm, and a VM keeps its MAC through a move.
 */
describe('engine: the MAC range', () => {
  const nics = (n: number) => ({
    networkAdapters: Array.from({ length: n }, () => ({ kind: 'NIC_KIND_SYNTHETIC' as const })),
  });
  const macsOf = (vm: { config?: { networkAdapters: { macAddress: string }[] } | null }) =>
    vm.config!.networkAdapters.map((n) => n.macAddress);

  it('reports the range it was given, in the canonical form', () => {
    const e = makeEngine({ macPoolStart: '00-15-5d-0a-0b-00', macPoolSize: 256 });
    expect(e.macRange()).to.deep.equal({ start: '00-15-5D-0A-0B-00', size: 256 });
    // Read again (every lease answer reads it): the same, and not shared with the caller.
    const first = e.macRange();
    first.start = 'changed';
    expect(e.macRange()).to.deep.equal({ start: '00-15-5D-0A-0B-00', size: 256 });
  });

  it('hands out every address of the range once, in order, then refuses', () => {
    const e = makeEngine({ macPoolStart: '00-15-5D-00-00-FE', macPoolSize: 4 });
    const a = macsOf(e.vms.create('a', vmConfig('a', nics(3))));
    const b = macsOf(e.vms.create('b', vmConfig('b', nics(1))));
    // The range crosses a byte boundary: the carry reaches the next byte.
    expect([...a, ...b]).to.deep.equal([
      '00-15-5D-00-00-FE',
      '00-15-5D-00-00-FF',
      '00-15-5D-00-01-00',
      '00-15-5D-00-01-01',
    ]);
    try {
      e.vms.create('c', vmConfig('c', nics(1)));
      expect.fail('expected the pool to be exhausted');
    } catch (err) {
      expect((err as { code: number }).code).to.equal(status.RESOURCE_EXHAUSTED);
      expect((err as Error).message).to.include('00-15-5D-00-00-FE, 4 addresses');
    }
  });

  it('moves to the range the farm gives, keeping the MACs VMs hold unique', () => {
    const e = makeEngine({ macPoolStart: '00-15-5D-00-00-00', macPoolSize: 16 });
    const held = macsOf(e.vms.create('a', vmConfig('a', nics(2))));
    expect(held).to.deep.equal(['00-15-5D-00-00-00', '00-15-5D-00-00-01']);
    // The farm's block starts where the VM's first MAC is: that one stays taken.
    e.adoptMacRange('00-15-5D-00-00-01', 8);
    expect(e.macRange()).to.deep.equal({ start: '00-15-5D-00-00-01', size: 8 });
    const next = macsOf(e.vms.create('b', vmConfig('b', nics(3))));
    expect(next).to.deep.equal(['00-15-5D-00-00-02', '00-15-5D-00-00-03', '00-15-5D-00-00-04']);
    const all = [...held, ...next];
    expect(new Set(all).size).to.equal(all.length);
  });
});
