import { expect } from 'chai';
import { readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import type { AgentHost } from '../src/edge/agent-host.js';
import { readFileGraph } from '../src/edge/snapshot-files.js';
import {
  openSnapshotHost,
  readSectors,
  runUntil,
  snapVmConfig,
  tempDir,
  writeSector,
} from './snapshot-helpers.js';

/** Sectors the workload touches: both 2 MiB blocks of the 4 MiB disk, edges included. */
const SECTORS = [0, 1, 100, 4095, 4096, 5000, 8000, 8191];

type Op =
  | { kind: 'write'; sector: number; value: number }
  | { kind: 'take' }
  | { kind: 'apply'; pick: number }
  | { kind: 'delete'; pick: number }
  | { kind: 'deleteSubtree'; pick: number }
  | { kind: 'rename'; pick: number; name: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      sector: fc.constantFrom(...SECTORS),
      value: fc.integer({ min: 1, max: 255 }),
    }),
  },
  { weight: 3, arbitrary: fc.constant({ kind: 'take' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('apply' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteSubtree' as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('rename' as const),
      pick: fc.nat(),
      name: fc
        .string({ minLength: 1, maxLength: 20 })
        .filter((s) => [...s].every((ch) => ch.charCodeAt(0) >= 0x20 && ch.charCodeAt(0) !== 0x7f)),
    }),
  },
);

/** The reference model: disk contents as plain maps, the tree as parent links. */
interface Model {
  now: Map<number, number>;
  current: string;
  snaps: Map<string, { parent: string; name: string; content: Map<number, number>; memory: string }>;
  order: string[];
}

function modelDelete(m: Model, id: string, subtree: boolean): void {
  const victims = new Set([id]);
  if (subtree)
    for (let grew = true; grew;) {
      grew = false;
      for (const [c, s] of m.snaps)
        if (!victims.has(c) && victims.has(s.parent)) {
          victims.add(c);
          grew = true;
        }
    }
  const parent = m.snaps.get(id)!.parent;
  for (const [c, s] of m.snaps) if (!victims.has(c) && victims.has(s.parent)) s.parent = parent;
  if (victims.has(m.current)) m.current = parent;
  for (const v of victims) m.snaps.delete(v);
  m.order = m.order.filter((x) => !victims.has(x));
}

describe('snapshot tree operations against a reference model (fast-check)', function () {
  this.timeout(60_000);

  const stateOf = (host: AgentHost) => host.read((e) => e.vms.get('vm-m')).status!.state;

  const property = (running: boolean, numRuns: number, maxLength: number) => async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength }), async (ops) => {
        const dir = tempDir(`model-${run++}`);
        const { host, snaps, clock } = await openSnapshotHost(dir);
        const startVm = async () => {
          await host.mutate((e) => e.power.change('vm-m', 'VM_ACTION_START'));
          await runUntil(host, snaps, clock, () => stateOf(host) === 'VM_STATE_RUNNING');
        };
        try {
          await host.createVm(
            'vm-m',
            snapVmConfig('model-1', { workingSetBytes: 2 << 20, dirtyPagesPerSecond: 200 }),
            1,
          );
          const vmDir = host.vmDir('vm-m');
          if (running) await startVm();
          const m: Model = { now: new Map(), current: '', snaps: new Map(), order: [] };
          let n = 0;
          for (const op of ops) {
            clock.advance(1000);
            const pick = (k: number) => m.order[k % m.order.length]!;
            switch (op.kind) {
              case 'write': {
                if (running) {
                  // The guest's write, through the VM's own open disk.
                  const live = (await host.openVhd('vm-m', 0))!;
                  await live.write(op.sector * 512, Buffer.alloc(512, op.value));
                } else {
                  const path = join(vmDir, host.read((e) => e.vms.get('vm-m')).config!.disks[0]!.path);
                  await writeSector(path, op.sector, op.value);
                }
                m.now.set(op.sector, op.value);
                break;
              }
              case 'take': {
                const id = `s${++n}`;
                if (m.order.length >= 50) break;
                clock.advance(300); // the guest dirties memory between snapshots
                const memory = running ? host.read((e) => e.vms.stateHash('vm-m')).sha256 : '';
                await snaps.create('vm-m', `snap ${n}`, 1, id);
                m.snaps.set(id, { parent: m.current, name: `snap ${n}`, content: new Map(m.now), memory });
                m.order.push(id);
                m.current = id;
                break;
              }
              case 'apply': {
                if (m.order.length === 0) break;
                const id = pick(op.pick);
                const vm = await snaps.apply(id, 1, running, false);
                expect(vm.status!.state).to.equal(running ? 'VM_STATE_SAVED' : 'VM_STATE_OFF');
                if (running) {
                  // Saved with exactly the memory the VM had when the snapshot was taken.
                  expect(host.read((e) => e.vms.stateHash('vm-m')).sha256).to.equal(m.snaps.get(id)!.memory);
                  await startVm();
                }
                m.now = new Map(m.snaps.get(id)!.content);
                m.current = id;
                break;
              }
              case 'delete':
              case 'deleteSubtree': {
                if (m.order.length === 0) break;
                const id = pick(op.pick);
                const r = await snaps.delete(id, 1, op.kind === 'deleteSubtree');
                if (!running) expect(r.mergeId).to.equal(''); // an Off VM merges at once
                if (r.mergeId) {
                  await runUntil(
                    host,
                    snaps,
                    clock,
                    async () => (await snaps.merges.get(r.mergeId)).state === 'completed',
                  );
                  expect(stateOf(host)).to.equal('VM_STATE_RUNNING');
                }
                modelDelete(m, id, op.kind === 'deleteSubtree');
                break;
              }
              case 'rename': {
                if (m.order.length === 0) break;
                const id = pick(op.pick);
                await snaps.rename(id, op.name, 1);
                m.snaps.get(id)!.name = op.name;
                break;
              }
            }
            // The tree, the Now position and the names.
            const listed = await snaps.list('vm-m');
            expect(listed.currentId).to.equal(m.current);
            expect(
              Object.fromEntries(listed.checkpoints.map((c) => [c.id, { parent: c.parentId, name: c.name }])),
            ).to.deep.equal(
              Object.fromEntries([...m.snaps].map(([id, s]) => [id, { parent: s.parent, name: s.name }])),
            );
            // Every disk's content.
            const expectOf = (c: Map<number, number>) => SECTORS.map((s) => c.get(s) ?? 0);
            const vm = host.read((e) => e.vms.get('vm-m'));
            const currentPath = join(vmDir, vm.config!.disks[0]!.path);
            const current = running
              ? await Promise.all(
                  SECTORS.map(async (x) => (await (await host.openVhd('vm-m', 0))!.read(x * 512, 512))[0]!),
                )
              : await readSectors(currentPath, SECTORS);
            expect(current, `current after ${op.kind}`).to.deep.equal(expectOf(m.now));
            for (const c of listed.checkpoints) {
              const p = join(vmDir, c.config.disks[0]!.path);
              expect(await readSectors(p, SECTORS), `snapshot ${c.id} after ${op.kind}`).to.deep.equal(
                expectOf(m.snaps.get(c.id)!.content),
              );
            }
            // No leftovers: every disk file in the folder is in use or under a file in use, and a
            // file no one names has at least two children (it stays until one is left).
            const owned = [
              currentPath,
              ...listed.checkpoints.map((c) => join(vmDir, c.config.disks[0]!.path)),
            ];
            const graph = await readFileGraph(owned, vmDir);
            const onDisk = readdirSync(vmDir)
              .filter((f) => /\.a?vhd$/.test(f))
              .map((f) => resolve(vmDir, f));
            expect(onDisk.sort()).to.deep.equal([...graph.parentOf.keys()].sort());
            for (const f of graph.parentOf.keys()) {
              if (graph.owned.has(f)) continue;
              const kids = [...graph.parentOf.values()].filter((p) => p === f).length;
              expect(kids, `unowned ${f}`).to.be.at.least(2);
            }
            if (m.snaps.size === 0) expect(onDisk.length).to.equal(1);
          }
        } finally {
          await host.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns, seed: 5, endOnFailure: true, verbose: 0 },
    );
  };

  it(
    'Off VM: each snapshot disk and the current disk hold what the model says, and no file is left over',
    property(false, 60, 24),
  );
  it(
    'Running VM (snapshots with memory, online merges, apply with turn_off_first): the same',
    property(true, 25, 20),
  );
});
