import { expect } from 'chai';
import { status } from '@hyperfarm/api';
import { GUEST_CATALOG, findGuestOs } from '../src/engine/catalog.js';
import { LIMITS_PROFILES } from '../src/limits.js';
import { gib, makeEngine, mib, vmConfig } from './helpers.js';

function refused(fn: () => unknown, field: string, reason: RegExp | string): void {
  try {
    fn();
  } catch (err) {
    const e = err as { code: number; field?: string; message: string };
    expect(e.code, e.message).to.equal(status.INVALID_ARGUMENT);
    expect(e.field).to.equal(field);
    if (typeof reason === 'string') expect(e.message).to.include(reason);
    else expect(e.message).to.match(reason);
    return;
  }
  expect.fail('expected INVALID_ARGUMENT');
}

describe('guest catalog and limits', () => {
  it('holds the Hyper-V 1.0 guests with their virtual processor limits', () => {
    const limits = Object.fromEntries(GUEST_CATALOG.map((g) => [g.id, g.maxVcpus]));
    expect(limits).to.include({
      'windows-server-2008-x64': 4,
      'windows-server-2008-x86': 4,
      'windows-server-2003-sp2-x86': 2,
      'windows-server-2003-sp2-x64': 2,
      'sles-10-sp1-x86': 1,
      'sles-10-sp1-x64': 1,
      'windows-vista-sp1-x86': 2,
      'windows-xp-sp3-x86': 2,
    });
    for (const g of GUEST_CATALOG) {
      if (g.architectureBits === 32) expect(g.maxMemoryBytes, g.id).to.equal(gib(4));
    }
  });

  for (const g of GUEST_CATALOG) {
    it(`${g.id}: ${g.maxVcpus} vCPUs accepted, ${g.maxVcpus + 1} refused`, () => {
      const e = makeEngine();
      const is = g.integrationServicesAvailable;
      e.vms.create(
        'ok',
        vmConfig('ok', { guestOs: g.id, processor: { count: g.maxVcpus }, integrationServices: is }),
      );
      refused(
        () =>
          e.vms.create(
            'no',
            vmConfig('no', { guestOs: g.id, processor: { count: g.maxVcpus + 1 }, integrationServices: is }),
          ),
        'config.processor.count',
        g.maxVcpus + 1 > 4
          ? "exceed the 2008 limits profile's 4 per VM"
          : `supports at most ${g.maxVcpus} virtual processor`,
      );
    });
  }

  it('a 32-bit guest addresses at most 4 GiB', () => {
    const e = makeEngine();
    e.vms.create('a', vmConfig('a', { guestOs: 'windows-server-2008-x86', memoryBytes: gib(4) }));
    refused(
      () =>
        e.vms.create(
          'b',
          vmConfig('b', { guestOs: 'windows-server-2008-x86', memoryBytes: gib(4) + mib(1) }),
        ),
      'config.memory_bytes',
      'is a 32-bit guest and addresses at most 4096 MiB',
    );
  });

  it('the 2008 profile allows 64 GiB and 4 vCPUs; the 2012 profile allows more', () => {
    const e = makeEngine();
    e.vms.create('a', vmConfig('a', { memoryBytes: gib(64) }));
    refused(
      () => e.vms.create('b', vmConfig('b', { memoryBytes: gib(65) })),
      'config.memory_bytes',
      "2008 limits profile's 65536 MiB",
    );
    refused(
      () => e.vms.create('c', vmConfig('c', { processor: { count: 5 } })),
      'config.processor.count',
      '5 virtual processors exceed',
    );
    const e2012 = makeEngine({ limits: LIMITS_PROFILES['2012'] });
    // The guest's own limit still applies under a newer profile.
    refused(
      () => e2012.vms.create('c', vmConfig('c', { processor: { count: 5 } })),
      'config.processor.count',
      'supports at most 4',
    );
    e2012.vms.create('d', vmConfig('d', { memoryBytes: gib(65) }));
  });

  it('a profile change after create is caught at start with FAILED_PRECONDITION and the reason', () => {
    const e = makeEngine({ limits: LIMITS_PROFILES['2012'] });
    e.vms.create('d', vmConfig('d', { memoryBytes: gib(65) }));
    (e.options as { limits: unknown }).limits = LIMITS_PROFILES['2008'];
    expect(() => e.power.change('d', 'VM_ACTION_START'))
      .to.throw(/cannot start VM 'd': invalid config.memory_bytes: .*2008 limits profile/)
      .with.property('code', status.FAILED_PRECONDITION);
  });

  it('integration services are refused for a guest that has none', () => {
    expect(findGuestOs('other-x86')!.integrationServicesAvailable).to.equal(false);
    refused(
      () => makeEngine().vms.create('x', vmConfig('x', { guestOs: 'other-x86', processor: { count: 1 } })),
      'config.integration_services',
      'no integration services exist',
    );
  });
});

describe('bad input gets INVALID_ARGUMENT naming the field', () => {
  const e = makeEngine();
  e.vms.create('taken', vmConfig('web-1'));
  const cases: [string, () => unknown, string, string | RegExp][] = [
    [
      'negative memory',
      () => e.vms.create('a', vmConfig('a', { memoryBytes: -1 })),
      'config.memory_bytes',
      '-1 is negative',
    ],
    [
      'memory sent as uint64 from a negative number',
      () => e.vms.create('a', vmConfig('a', { memoryBytes: 2 ** 64 - 1 })),
      'config.memory_bytes',
      'out of range',
    ],
    [
      'memory below 32 MiB',
      () => e.vms.create('a', vmConfig('a', { memoryBytes: mib(16) })),
      'config.memory_bytes',
      'minimum of 32 MiB',
    ],
    [
      'memory not a whole MiB',
      () => e.vms.create('a', vmConfig('a', { memoryBytes: mib(64) + 1 })),
      'config.memory_bytes',
      'multiple of 1 MiB',
    ],
    [
      '5 vCPUs on the 2008 profile',
      () => e.vms.create('a', vmConfig('a', { processor: { count: 5 } })),
      'config.processor.count',
      "2008 limits profile's 4",
    ],
    [
      '0 vCPUs',
      () => e.vms.create('a', vmConfig('a', { processor: { count: 0 } })),
      'config.processor.count',
      'at least 1',
    ],
    [
      'an unknown guest OS',
      () => e.vms.create('a', vmConfig('a', { guestOs: 'os-2-warp' })),
      'config.guest_os',
      "unknown guest OS 'os-2-warp'",
    ],
    [
      'a duplicate name',
      () => e.vms.create('a', vmConfig('web-1')),
      'config.name',
      "a VM named 'web-1' already exists",
    ],
    ['a bad name', () => e.vms.create('a', vmConfig('no spaces')), 'config.name', 'must be 1 to 63'],
    [
      'a bad MAC',
      () =>
        e.vms.create(
          'a',
          vmConfig('a', {
            networkAdapters: [
              { kind: 'NIC_KIND_SYNTHETIC', staticMac: true, macAddress: '00-15-5D-ZZ-00-01' },
            ],
          }),
        ),
      'config.network_adapters[0].mac_address',
      'is not a MAC address',
    ],
    [
      'a multicast MAC',
      () =>
        e.vms.create(
          'a',
          vmConfig('a', {
            networkAdapters: [
              { kind: 'NIC_KIND_SYNTHETIC', staticMac: true, macAddress: '01-00-5E-00-00-01' },
            ],
          }),
        ),
      'config.network_adapters[0].mac_address',
      'multicast',
    ],
    [
      'a VLAN out of range',
      () =>
        e.vms.create('a', vmConfig('a', { networkAdapters: [{ kind: 'NIC_KIND_LEGACY', vlanId: 4095 }] })),
      'config.network_adapters[0].vlan_id',
      '4095 is out of range',
    ],
    [
      'a synthetic NIC without integration services',
      () =>
        e.vms.create(
          'a',
          vmConfig('a', { integrationServices: false, networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC' }] }),
        ),
      'config.network_adapters[0].kind',
      'needs integration services',
    ],
    [
      'a SCSI disk without integration services',
      () =>
        e.vms.create(
          'a',
          vmConfig('a', {
            integrationServices: false,
            disks: [{ controller: 'DISK_CONTROLLER_SCSI', path: 'd.vhd', createSizeBytes: mib(8) }],
          }),
        ),
      'config.disks[0].controller',
      'needs integration services',
    ],
    [
      'an IDE location out of range',
      () =>
        e.vms.create(
          'a',
          vmConfig('a', { disks: [{ controller: 'DISK_CONTROLLER_IDE', location: 2, path: 'd.vhd' }] }),
        ),
      'config.disks[0].location',
      'IDE locations are 0 to 1',
    ],
    [
      'a limit below the reserve',
      () =>
        e.vms.create('a', vmConfig('a', { processor: { count: 1, reservePercent: 50, limitPercent: 20 } })),
      'config.processor.limit_percent',
      'below the reserve',
    ],
    [
      'a working set larger than memory',
      () => e.vms.create('a', vmConfig('a', { workload: { workingSetBytes: mib(1024) } })),
      'config.workload.working_set_bytes',
      'exceeds',
    ],
    ['a bad VM id', () => e.vms.create('a b', vmConfig('a')), 'vm_id', 'must be 1 to 128'],
  ];
  for (const [what, fn, field, reason] of cases) it(what, () => refused(fn, field, reason));

  it('dynamic MACs come from the 00-15-5D pool, lowest free first', () => {
    const e2 = makeEngine();
    const vm = e2.vms.create(
      'n',
      vmConfig('n', { networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC' }, { kind: 'NIC_KIND_LEGACY' }] }),
    );
    expect(vm.config!.networkAdapters.map((n) => n.macAddress)).to.deep.equal([
      '00-15-5D-00-00-00',
      '00-15-5D-00-00-01',
    ]);
    e2.vms.delete('n');
    const again = e2.vms.create('m', vmConfig('m', { networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC' }] }));
    expect(again.config!.networkAdapters[0]!.macAddress).to.equal('00-15-5D-00-00-00');
  });
});
