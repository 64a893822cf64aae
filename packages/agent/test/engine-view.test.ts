import { expect } from 'chai';
import { copyPlain } from '../src/engine/core.js';
import { makeEngine, mib, vmConfig } from './helpers.js';

/** A VM as the engine hands it out: a copy, which the caller may keep or change freely. */
describe('engine: the VM view', () => {
  const config = vmConfig('web', {
    networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC', vlanId: 7 }, { kind: 'NIC_KIND_LEGACY' }],
    labels: { tier: 'web', zone: 'a' },
    antiAffinityClassNames: ['web', 'front'],
    workload: { bootMs: 1000, cpuDemandPercent: 50, workingSetBytes: mib(256) },
  });

  it('carries the configuration as the engine holds it', () => {
    const e = makeEngine();
    const created = e.vms.create('v', config);
    const seen = e.vms.get('v');
    expect(seen.config).to.deep.equal(created.config);
    expect(seen.config!.labels).to.deep.equal({ tier: 'web', zone: 'a' });
    expect(seen.config!.networkAdapters.map((n) => n.vlanId)).to.deep.equal([7, 0]);
  });

  it('is a copy all the way down: changing it changes nothing in the engine', () => {
    const e = makeEngine();
    e.vms.create('v', config);
    const a = e.vms.get('v');
    const before = structuredClone(a);
    a.config!.name = 'changed';
    a.config!.processor!.count = 64;
    a.config!.networkAdapters[0]!.macAddress = '00-00-00-00-00-00';
    a.config!.networkAdapters.push({ ...a.config!.networkAdapters[1]! });
    a.config!.labels['tier'] = 'db';
    a.config!.antiAffinityClassNames.length = 0;
    a.config!.workload!.bootMs = 1;
    expect(e.vms.get('v')).to.deep.equal(before);
    expect(e.vms.list()[0]).to.deep.equal(before);
  });

  it('copies plain data as structuredClone does', () => {
    const values = [
      config,
      { a: [1, [2, { b: null, c: undefined }]], d: '', e: false, 10: 'number-like key first' },
      [],
      'text',
      0,
      null,
    ];
    for (const v of values) {
      const copy = copyPlain(v);
      expect(copy).to.deep.equal(structuredClone(v));
      if (typeof v === 'object' && v !== null) {
        expect(copy).not.to.equal(v);
        expect(Object.keys(copy as object)).to.deep.equal(Object.keys(structuredClone(v)));
      }
    }
  });
});
