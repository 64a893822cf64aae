import { expect } from 'chai';
import fc from 'fast-check';
import { normalizeVmConfig } from '@hyperfarm/api';
import { CONFIG_BASE_V1, configDiff, withBase } from '../../src/fsm/config-diff.js';
import {
  applyEntry,
  decodeSnapshot,
  encodeSnapshot,
  type CommandResult,
  type FarmState,
  type VmConfig,
} from '../../src/fsm/index.js';
import { FarmBuilder, field } from './build.js';
import { vmConfig } from './fixtures.js';

/**
 * vm.create_compact: vm.create_many with each configuration as its differences from a fixed
 * base. The same creates in either form must leave every replica the same state; the old form's
 * entries and snapshots must keep replaying.
 */

const MIB = 1024 * 1024;

const create = (id: string, config: VmConfig, extra: Record<string, unknown> = {}) => ({
  vmId: id,
  opId: `op-${id}`,
  config,
  start: false,
  hostId: '',
  ...extra,
});
const compact = (c: ReturnType<typeof create>) => ({ ...c, config: configDiff(c.config) });

/** Hosts of 4 GiB less the 2 GiB root reserve: one 1.5 GiB VM (plus overhead) each. */
const farm = () => new FarmBuilder().host({ id: 'a1', memGiB: 4 }).host({ id: 'a2', memGiB: 4 });

const resultsOf = (r: CommandResult | undefined) => field(r, 'results') as CommandResult[];

/** The state as its snapshot writes it: what every replica must agree on, to the byte. */
const snapshotText = (s: FarmState): string => Buffer.from(encodeSnapshot(s)).toString();

const entry = (cmds: unknown[]) => Buffer.from(JSON.stringify({ v: 1, cmds }));

/** Configurations a request can give: each field the base's value or another. */
const configs: fc.Arbitrary<VmConfig> = fc
  .record({
    name: fc.stringMatching(/^[a-z0-9-]{1,20}$/),
    count: fc.constantFrom(0, 1, 2, 4),
    limitPercent: fc.constantFrom(100, 50),
    memMiB: fc.constantFrom(0, 512, 2048),
    guestOs: fc.constantFrom('', 'windows-server-2008-x64'),
    integrationServices: fc.boolean(),
    stop: fc.constantFrom('AUTOMATIC_STOP_ACTION_SAVE', 'AUTOMATIC_STOP_ACTION_TURN_OFF' as const),
    diskWriteBytes: fc.constantFrom(4096, 0, 8192),
    cpuDemandPercent: fc.constantFrom(0, 12.5),
    labels: fc.dictionary(fc.stringMatching(/^[a-z]{1,5}$/), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
    classes: fc.array(fc.stringMatching(/^[a-z]{1,5}$/), { maxLength: 2 }),
    disks: fc.boolean(),
    hard: fc.boolean(),
  })
  .map((r) => {
    const base = normalizeVmConfig({}) as VmConfig;
    return {
      ...base,
      name: r.name,
      processor: { ...base.processor, count: r.count, limitPercent: r.limitPercent },
      memoryBytes: r.memMiB * MIB,
      guestOs: r.guestOs,
      disks: r.disks
        ? [
            {
              controller: 'DISK_CONTROLLER_SCSI' as const,
              controllerNumber: 0,
              location: 1,
              path: 'C:\\vms\\d.vhd',
              createType: 'DISK_TYPE_DYNAMIC' as const,
              createSizeBytes: 1024 * MIB,
            },
          ]
        : [],
      integrationServices: r.integrationServices,
      automaticStopAction: r.stop,
      workload: { ...base.workload, diskWriteBytes: r.diskWriteBytes, cpuDemandPercent: r.cpuDemandPercent },
      labels: r.labels,
      antiAffinityClassNames: r.classes,
      antiAffinityHard: r.hard,
    };
  });

describe('vm.create_compact: configurations as their differences from a fixed base', () => {
  it('fixes the base at the configuration an empty request normalizes to', () => {
    // If the API's defaults change, this fails: leave CONFIG_BASE_V1 as it is (old entries
    // expand against it) and add a command type with a new base instead.
    expect(CONFIG_BASE_V1).to.deep.equal(normalizeVmConfig({}));
    expect(Object.isFrozen(CONFIG_BASE_V1.processor)).to.equal(true);
  });

  it('gives back any configuration from its differences, in the schema order, sharing nothing with the base', () => {
    fc.assert(
      fc.property(configs, (config) => {
        const back = withBase(JSON.parse(JSON.stringify(configDiff(config))) as VmConfig);
        expect(back).to.deep.equal(config);
        expect(JSON.stringify(back)).to.equal(JSON.stringify(config));
        for (const k of ['processor', 'workload', 'disks', 'labels', 'antiAffinityClassNames'] as const)
          expect(back[k], k).not.to.equal(CONFIG_BASE_V1[k]);
      }),
      { numRuns: 300 },
    );
  });

  it('writes only what differs: a typical create sends its name, processors, memory, guest and integration services', () => {
    const config = vmConfig({ name: 'vm-1', memMiB: 512 });
    expect(configDiff(config)).to.deep.equal({
      name: 'vm-1',
      processor: { count: 1 },
      memoryBytes: 512 * MIB,
      guestOs: 'windows-server-2008-x64',
      integrationServices: true,
    });
    expect(JSON.stringify(configDiff(config)).length).to.be.below(130);
    expect(JSON.stringify(config).length).to.be.above(550);
  });

  it('leaves the state vm.create_many leaves for the same creates, placed and waiting, to the byte', () => {
    const creates = [
      create('v1', vmConfig({ name: 'one', memMiB: 1536 }), { rid: 'create-vm:r1' }),
      create('v2', { ...vmConfig({ name: 'two', memMiB: 512 }), labels: { team: 'a' } }, { start: true }),
      create('v3', vmConfig({ name: 'three', memMiB: 512, cpus: 2 }), { hostId: 'a1' }),
      create('v4', vmConfig({ name: 'four', memMiB: 1536 })),
    ];
    const placements = [
      { vmId: 'v1', hostId: 'a1', note: '' },
      { vmId: 'v2', hostId: 'a2', note: 'soft class broken' },
      { vmId: 'v4', hostId: 'a1', note: '' }, // a1 is full by then: v4 waits
    ];
    const many = farm();
    const [r1] = many.must({ type: 'vm.create_many', creates, placements });
    const comp = farm();
    const [r2] = comp.must({ type: 'vm.create_compact', creates: creates.map(compact), placements });
    expect(r2).to.deep.equal(r1);
    expect(resultsOf(r2).every((r) => r.ok)).to.equal(true);
    expect(comp.s.vms.get('v4')!.hostId).to.equal('');
    expect(comp.s.vms.get('v1')!.config).to.deep.equal(creates[0]!.config);
    expect(snapshotText(comp.s)).to.equal(snapshotText(many.s));
  });

  it('refuses a malformed command as a whole, naming the field, and changes nothing', () => {
    const b = farm();
    const ok = compact(create('v1', vmConfig({ name: 'ok' })));
    const cases: [unknown, string][] = [
      [
        { creates: [ok, { ...ok, vmId: 'v2', config: { name: 'bad', memoryBytes: -1 } }] },
        'vm.create_compact: creates.1.config.memoryBytes: expected a whole number from 0 to 9007199254740991, got -1',
      ],
      [
        { creates: [{ ...ok, config: { name: 'x', processor: { count: 'two' } } }] },
        'vm.create_compact: creates.0.config.processor.count: expected a number, got string',
      ],
      [
        { creates: [{ ...ok, config: { name: 'x', workload: 5 } }] },
        'vm.create_compact: creates.0.config.workload: expected an object, got number',
      ],
      [
        { creates: [{ ...ok, config: 'all defaults' }] },
        'vm.create_compact: creates.0.config: expected an object, got string',
      ],
    ];
    const state = () =>
      snapshotText(b.s)
        .split('\n')
        .filter((line) => !line.startsWith('["requests"'));
    for (const [payload, message] of cases) {
      const before = state();
      const [r] = b.apply({ type: 'vm.create_compact', ...(payload as object) } as never);
      expect(r).to.deep.equal({ ok: false, error: { code: 'INVALID_ARGUMENT', message } });
      expect(state(), message).to.deep.equal(before);
    }
  });

  it('drops unknown fields of a configuration, as the whole form does', () => {
    const b = farm();
    b.must({
      type: 'vm.create_compact',
      creates: [create('v1', { name: 'x', colour: 'red', processor: { count: 1, turbo: true } } as never)],
    });
    expect(b.s.vms.get('v1')!.config).to.deep.equal({
      ...normalizeVmConfig({}),
      name: 'x',
      processor: { ...CONFIG_BASE_V1.processor, count: 1 },
    });
  });

  it('replays a log and a snapshot of the old form: the same VMs, and a retry in the new form answered its first result', () => {
    // An entry as the create path wrote it before vm.create_compact, text as it was in the log.
    const config = JSON.stringify(vmConfig({ name: 'one', memMiB: 512 }));
    const old =
      `{"v":1,"cmds":[{"rid":"turn-1","t":2000,"type":"vm.create_many","creates":[` +
      `{"rid":"create-vm:r1","vmId":"v1","opId":"op-v1","config":${config},"start":true,"hostId":"","warning":""}],` +
      `"placements":[{"vmId":"v1","hostId":"a2","note":""}]}]}`;
    const replayed = farm();
    expect(applyEntry(replayed.s, Buffer.from(old)).results.map((r) => r.ok)).to.deep.equal([true]);

    const now = farm();
    applyEntry(
      now.s,
      entry([
        {
          type: 'vm.create_compact',
          rid: 'turn-1',
          t: 2000,
          creates: [
            compact(
              create('v1', vmConfig({ name: 'one', memMiB: 512 }), { start: true, rid: 'create-vm:r1' }),
            ),
          ],
          placements: [{ vmId: 'v1', hostId: 'a2', note: '' }],
        },
      ]),
    );
    expect(snapshotText(replayed.s)).to.equal(snapshotText(now.s));

    // A snapshot of the old log's state, restored, and a retry of its create in the new form.
    const restored = replayed.restoredCopy(decodeSnapshot(encodeSnapshot(replayed.s)));
    expect(snapshotText(restored.s)).to.equal(snapshotText(replayed.s));
    for (const b of [replayed, restored, now]) {
      const [retry] = b.must({
        type: 'vm.create_compact',
        creates: [compact(create('v9', vmConfig({ name: 'nine', memMiB: 512 }), { rid: 'create-vm:r1' }))],
      });
      expect(resultsOf(retry)).to.deep.equal([{ ok: true, vmId: 'v1', opId: 'op-v1' }]);
      expect(b.s.vms.has('v9')).to.equal(false);
    }
    expect(snapshotText(restored.s)).to.equal(snapshotText(replayed.s));
  });
});
