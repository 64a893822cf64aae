import { expect } from 'chai';
import {
  applyEntry,
  decodeSnapshot,
  encodeSnapshot,
  type CommandResult,
  type FarmState,
} from '../../src/fsm/index.js';
import { FarmBuilder, field } from './build.js';
import { vmConfig } from './fixtures.js';

/** vm.create_many: the creates of a turn of the leader's create path, with their placements. */

const create = (id: string, name: string, memMiB = 1024, extra: Record<string, unknown> = {}) => ({
  vmId: id,
  opId: `op-${id}`,
  config: vmConfig({ name, memMiB }),
  start: false,
  hostId: '',
  ...extra,
});

/** Hosts of 4 GiB less the 2 GiB root reserve: one 1.5 GiB VM (plus overhead) each. */
function farm(): FarmBuilder {
  return new FarmBuilder().host({ id: 'a1', memGiB: 4 }).host({ id: 'a2', memGiB: 4 });
}

const resultsOf = (r: CommandResult | undefined) => field(r, 'results') as CommandResult[];

/** The state as its snapshot shows it (JSON lines): what every replica must agree on. */
const snapshotOf = (s: FarmState): unknown[] =>
  Buffer.from(encodeSnapshot(s))
    .toString()
    .split('\n')
    .map((line) => JSON.parse(line) as unknown);

describe('vm.create_many', () => {
  it('creates each VM placed where the plan put it, with one event for the VM and one for its operation', () => {
    const b = farm();
    const before = b.s.revision;
    const [r] = b.must({
      type: 'vm.create_many',
      creates: [create('v1', 'one', 1536), create('v2', 'two', 1536)],
      placements: [
        { vmId: 'v1', hostId: 'a1', note: '' },
        { vmId: 'v2', hostId: 'a2', note: 'soft class broken' },
      ],
    });
    expect(resultsOf(r)).to.deep.equal([
      { ok: true, vmId: 'v1', opId: 'op-v1' },
      { ok: true, vmId: 'v2', opId: 'op-v2' },
    ]);
    const v2 = b.s.vms.get('v2')!;
    expect([v2.hostId, v2.generation, v2.placementNote, v2.busyOpId]).to.deep.equal([
      'a2',
      1,
      'soft class broken',
      'op-v2',
    ]);
    expect(v2.observed.message).to.equal("placed on host 'a2'; being created there");
    const op = b.s.operations.get('op-v2')!;
    expect([op.kind, op.progress, op.message]).to.deep.equal([
      'vm.create',
      30,
      "placed on host 'a2'; creating the VM there",
    ]);
    const events = b.s.events.all().filter((e) => e.revision > before);
    expect(events.map((e) => `${e.kind} ${e.id}`)).to.deep.equal([
      'RESOURCE_KIND_VM v1',
      'RESOURCE_KIND_OPERATION op-v1',
      'RESOURCE_KIND_VM v2',
      'RESOURCE_KIND_OPERATION op-v2',
    ]);
  });

  it('creates a VM waiting when its placement no longer fits, or it has none', () => {
    const b = farm();
    b.vm('intruder', { name: 'intruder', memMiB: 1536 }, 'a1');
    const [r] = b.must({
      type: 'vm.create_many',
      creates: [
        create('v1', 'late', 1536),
        create('v2', 'unplanned'),
        create('v3', 'pinned', 512, { hostId: 'a1' }),
      ],
      // v1's host filled up since the plan; v3 was pinned to a1, so a2 is not its host.
      placements: [
        { vmId: 'v1', hostId: 'a1', note: '' },
        { vmId: 'v3', hostId: 'a2', note: '' },
      ],
    });
    expect(resultsOf(r).every((x) => x.ok)).to.equal(true);
    for (const id of ['v1', 'v2', 'v3']) {
      const vm = b.s.vms.get(id)!;
      expect([vm.hostId, vm.generation, vm.observed.message], id).to.deep.equal([
        '',
        0,
        'waiting for placement',
      ]);
      expect(b.s.unplaced.has(id), id).to.equal(true);
      expect(b.s.operations.get(`op-${id}`)!.progress).to.equal(0);
    }
  });

  it('refuses one create on its own (a name taken), leaving nothing of it, and creates the others', () => {
    const b = farm();
    b.vm('old', { name: 'taken', memMiB: 512 });
    const [r] = b.must({
      type: 'vm.create_many',
      creates: [create('v1', 'taken', 512), create('v2', 'free', 512)],
      placements: [
        { vmId: 'v1', hostId: 'a1', note: '' },
        { vmId: 'v2', hostId: 'a2', note: '' },
      ],
    });
    expect(resultsOf(r)).to.deep.equal([
      { ok: false, error: { code: 'ALREADY_EXISTS', message: "VM 'taken' already exists" } },
      { ok: true, vmId: 'v2', opId: 'op-v2' },
    ]);
    expect(b.s.vms.has('v1')).to.equal(false);
    expect(b.s.operations.has('op-v1')).to.equal(false);
    expect(b.s.vms.get('v2')!.hostId).to.equal('a2');
  });

  it('refuses a malformed command as a whole, naming the field, and changes nothing', () => {
    const b = farm();
    const cases: [unknown, string][] = [
      [
        {
          creates: [
            create('v1', 'ok'),
            { ...create('v2', 'bad'), config: { ...vmConfig({ name: 'x' }), memoryBytes: -1 } },
          ],
        },
        'vm.create_many: creates.1.config.memoryBytes: expected a whole number from 0 to 9007199254740991, got -1',
      ],
      [
        {
          creates: [{ ...create('v1', 'ok'), config: { ...vmConfig({ name: 'x' }), processor: undefined } }],
        },
        'vm.create_many: creates.0.config.processor: expected an object, got undefined',
      ],
      [
        { creates: [create('v1', 'n'.repeat(64))] },
        'vm.create_many: creates.0.config.name: at most 63 characters, got 64',
      ],
      [
        {
          creates: [{ ...create('v1', 'ok'), config: { ...vmConfig({ name: 'x' }), haPriority: 'URGENT' } }],
        },
        "vm.create_many: creates.0.config.haPriority: expected one of HA_PRIORITY_UNSPECIFIED, HA_PRIORITY_HIGH, HA_PRIORITY_MEDIUM, HA_PRIORITY_LOW, HA_PRIORITY_NONE, got 'URGENT'",
      ],
      [
        { creates: [create('v1', 'ok')], placements: [{ vmId: 'v1', hostId: 7, note: '' }] },
        'vm.create_many: placements.0.hostId: expected a string, got number',
      ],
      [{ creates: 'all of them' }, 'vm.create_many: creates: expected an array, got string'],
    ];
    // The request ids aside (a refused command is remembered too, so a retry is refused alike).
    const state = () => snapshotOf(b.s).filter((line) => !(Array.isArray(line) && line[0] === 'requests'));
    for (const [payload, message] of cases) {
      const snapshot = state();
      const [r] = b.apply({ type: 'vm.create_many', ...(payload as object) } as never);
      expect(r).to.deep.equal({ ok: false, error: { code: 'INVALID_ARGUMENT', message } });
      expect(state(), message).to.deep.equal(snapshot);
    }
  });

  it('keeps only the known fields and fills in the defaults, as the schema parses', () => {
    const b = farm();
    const config = { ...vmConfig({ name: 'x' }), colour: 'red' } as Record<string, unknown>;
    b.must({
      type: 'vm.create_many',
      creates: [{ vmId: 'v1', opId: 'op-v1', config, start: true, hostId: '', extra: 1 } as never],
    });
    const vm = b.s.vms.get('v1')!;
    expect(vm.config).to.deep.equal(vmConfig({ name: 'x' }));
    expect(vm.desired).to.equal('VM_STATE_RUNNING');
  });

  it('applies a create with a request id once: in the same command, in a later one, and after a vm.create of that id', () => {
    const b = farm();
    // A CreateVm of request id r0 as an older daemon proposed it: one vm.create command.
    const legacy = { type: 'vm.create', rid: 'create-vm:r0', t: 1, ...create('v0', 'zero', 512) };
    applyEntry(b.s, Buffer.from(JSON.stringify({ v: 1, cmds: [legacy] })));
    const first = b.s.revision;
    const [r] = b.must({
      type: 'vm.create_many',
      creates: [
        create('v1', 'one', 512, { rid: 'create-vm:r1' }),
        create('v1b', 'one again', 512, { rid: 'create-vm:r1' }),
        create('v0b', 'zero again', 512, { rid: 'create-vm:r0' }),
      ],
    });
    expect(resultsOf(r)).to.deep.equal([
      { ok: true, vmId: 'v1', opId: 'op-v1' },
      { ok: true, vmId: 'v1', opId: 'op-v1' },
      { ok: true, vmId: 'v0', opId: 'op-v0' },
    ]);
    const [again] = b.must({
      type: 'vm.create_many',
      creates: [create('v1c', 'one a third time', 512, { rid: 'create-vm:r1' })],
    });
    expect(resultsOf(again)).to.deep.equal([{ ok: true, vmId: 'v1', opId: 'op-v1' }]);
    expect([...b.s.vms.keys()].sort()).to.deep.equal(['v0', 'v1']);
    // v1 and its operation: two changes since.
    expect(b.s.revision).to.equal(first + 2);
  });

  it('applies a whole command committed twice (a forwarded proposal) once', () => {
    const s = farm().s;
    const entry = Buffer.from(
      JSON.stringify({
        v: 1,
        cmds: [{ type: 'vm.create_many', rid: 'turn-1', t: 5, creates: [create('v1', 'one', 512)] }],
      }),
    );
    const first = applyEntry(s, entry);
    const revision = s.revision;
    const second = applyEntry(s, entry);
    expect(second.results).to.deep.equal(first.results);
    expect(second.events).to.deep.equal([]);
    expect(s.revision).to.equal(revision);
  });

  it('survives a snapshot and restore: the restored replica holds the same state and dedupes the same ids', () => {
    const b = farm();
    b.must({
      type: 'vm.create_many',
      creates: [create('v1', 'one', 1536, { rid: 'create-vm:r1' }), create('v2', 'two', 512)],
      placements: [{ vmId: 'v1', hostId: 'a1', note: '' }],
    });
    const restored = decodeSnapshot(encodeSnapshot(b.s));
    expect(snapshotOf(restored)).to.deep.equal(snapshotOf(b.s));
    expect([...restored.unplaced]).to.deep.equal(['v2']);
    const copy = b.restoredCopy(restored);
    for (const builder of [b, copy]) {
      const [r] = builder.must({
        type: 'vm.create_many',
        creates: [create('v3', 'three', 512, { rid: 'create-vm:r1' })],
      });
      expect(resultsOf(r)).to.deep.equal([{ ok: true, vmId: 'v1', opId: 'op-v1' }]);
    }
    expect(snapshotOf(copy.s)).to.deep.equal(snapshotOf(b.s));
  });

  it('leaves the log of the old form (a vm.create per VM, then vm.place) replaying to the same VMs and operations', () => {
    // An entry as the create path wrote it before vm.create_many, text as it was in the log.
    const hosts = farm();
    const old = hosts.s;
    const config = JSON.stringify(vmConfig({ name: 'one', memMiB: 512 }));
    const text =
      `{"v":1,"cmds":[{"rid":"create-vm:r1","t":2000,"type":"vm.create","vmId":"v1","opId":"op-v1","config":${config},"start":true,"hostId":"","warning":""},` +
      `{"rid":"p1","t":2000,"type":"vm.place","placements":[{"vmId":"v1","hostId":"a2","note":""}]}]}`;
    const replayed = applyEntry(old, Buffer.from(text));
    expect(replayed.results.map((r) => r.ok)).to.deep.equal([true, true]);

    const now = farm().s;
    applyEntry(
      now,
      Buffer.from(
        JSON.stringify({
          v: 1,
          cmds: [
            {
              type: 'vm.create_many',
              rid: 'turn',
              t: 2000,
              creates: [create('v1', 'one', 512, { start: true, rid: 'create-vm:r1' })],
              placements: [{ vmId: 'v1', hostId: 'a2', note: '' }],
            },
          ],
        }),
      ),
    );
    const strip = <T extends { revision: number }>(r: T) => ({ ...r, revision: 0 });
    expect(strip(old.vms.get('v1')!)).to.deep.equal(strip(now.vms.get('v1')!));
    expect(strip(old.operations.get('op-v1')!)).to.deep.equal(strip(now.operations.get('op-v1')!));
    // And a retry of the old create's request id in the new form gets the first answer.
    const [retry] = applyEntry(
      old,
      Buffer.from(
        JSON.stringify({
          v: 1,
          cmds: [
            {
              type: 'vm.create_many',
              rid: 'turn-2',
              t: 3000,
              creates: [create('v9', 'nine', 512, { rid: 'create-vm:r1' })],
            },
          ],
        }),
      ),
    ).results;
    expect(resultsOf(retry)).to.deep.equal([{ ok: true, vmId: 'v1', opId: 'op-v1' }]);
  });
});
