import { expect } from 'chai';
import fc from 'fast-check';
import {
  antiAffinityClasses,
  encodeSnapshot,
  decodeSnapshot,
  hostLoad,
  HostJournal,
  putMigration,
  putVm,
  removeVm,
  usableMemory,
  vmMemoryCost,
  vmsOnHost,
  type FarmState,
  type HostStateName,
} from '../../src/fsm/index.js';
import { Changes } from '../../src/fsm/changes.js';
import { recordMigration } from '../../src/fsm/migrations.js';
import { explainPlacement, planPlacements, type SchedulerOptions } from '../../src/scheduler/index.js';
import { FarmBuilder, field } from '../fsm/build.js';
import { vmConfig, type VmSpec } from '../fsm/fixtures.js';

/** The farm's two placement promises, checked on committed state. */
function violations(s: FarmState): string[] {
  const out: string[] = [];
  for (const host of s.hosts.values()) {
    const vms = vmsOnHost(s, host.id);
    const used = vms.reduce((sum, vm) => sum + vmMemoryCost(host, vm.config), 0);
    if (used > usableMemory(host)) out.push(`${host.id}: ${used} bytes placed, ${usableMemory(host)} usable`);
    for (const [i, a] of vms.entries()) {
      for (const b of vms.slice(i + 1)) {
        const ca = antiAffinityClasses(a.config);
        const cb = antiAffinityClasses(b.config);
        for (const [name, hard] of ca) {
          if (cb.has(name) && (hard || cb.get(name)))
            out.push(`${host.id}: ${a.id} and ${b.id} share hard class ${name}`);
        }
      }
    }
  }
  return out;
}

const hostArb = fc.record({
  memGiB: fc.integer({ min: 1, max: 24 }),
  reserveMiB: fc.integer({ min: 0, max: 2048 }),
  overheadMiB: fc.integer({ min: 0, max: 128 }),
  lp: fc.integer({ min: 1, max: 16 }),
  profile: fc.constantFrom('2008', '2012'),
  state: fc.constantFrom<HostStateName>(
    'HOST_STATE_UP',
    'HOST_STATE_UP',
    'HOST_STATE_UP',
    'HOST_STATE_SUSPECT',
    'HOST_STATE_DOWN',
  ),
  maintenance: fc.constantFrom(false, false, false, false, true),
});

const vmArb: fc.Arbitrary<Omit<VmSpec, 'name'>> = fc.record({
  memMiB: fc.integer({ min: 1, max: 256 }).map((n) => n * 32),
  cpus: fc.integer({ min: 1, max: 4 }),
  classes: fc.subarray(['a', 'b', 'c']),
  hard: fc.boolean(),
  group: fc.constantFrom('', '', 'g'),
});

const farmArb = fc.record({
  hosts: fc.array(hostArb, { minLength: 1, maxLength: 8 }),
  vms: fc.array(vmArb, { minLength: 1, maxLength: 40 }),
  policy: fc.constantFrom<SchedulerOptions['policy']>('binpack', 'spread'),
});

function build(hosts: HostArb[]): FarmBuilder {
  const b = new FarmBuilder();
  hosts.forEach((h, i) => b.host({ id: `h${i}`, ...h }));
  return b;
}

type HostArb = typeof hostArb extends fc.Arbitrary<infer T> ? T : never;

/** A migration asked for (pending) of VM `vmId` to `targetHostId`, recorded as the state machine does. */
function migrate(s: FarmState, id: string, vmId: string, targetHostId: string): void {
  const ask = { migrationId: id, opId: `op-${id}`, vmId, targetHostId, drainOpId: '' };
  recordMigration(
    s,
    new Changes(s, 0),
    { ...ask, kind: 'MIGRATION_KIND_QUICK', deadlineMs: 60_000 },
    s.vms.get(vmId)!,
    'memory',
  );
}

describe('placement properties (fast-check)', function () {
  // Hundreds of generated farms each: seconds alone, far more on a loaded machine.
  this.timeout(180_000);
  it('a plan never overcommits a host nor shares a hard class, and commits whole on the state it saw', () => {
    fc.assert(
      fc.property(farmArb, ({ hosts, vms, policy }) => {
        const b = build(hosts);
        vms.forEach((v, i) => b.vm(`v${i}`, { name: `vm-${i}`, ...v }));
        const items = vms.map((_, i) => ({
          vmId: `v${i}`,
          config: b.s.vms.get(`v${i}`)!.config,
          pinnedHostId: '',
        }));
        const plan = planPlacements(b.s, items, { policy, vcpuRatio: 8 });
        expect(plan.placements.length + plan.failures.length + plan.waiting.length).to.equal(vms.length);
        const [r] = b.must({ type: 'vm.place', placements: plan.placements.map((p) => ({ ...p })) });
        expect(field(r, 'rejected')).to.deep.equal([]);
        expect(violations(b.s)).to.deep.equal([]);
      }),
      { numRuns: 200, seed: 20261201 },
    );
  });

  it('a plan places each VM where placing them one at a time on the committed state would (the per-shape heaps pick as a scan of every host)', () => {
    fc.assert(
      fc.property(farmArb, ({ hosts, vms, policy }) => {
        const opts = { policy, vcpuRatio: 8 };
        // Hosts alike (as a real farm's are), so ties are broken by host id; most VMs without a
        // class (the heaps' case), some with one (every host weighed).
        const b = build([...hosts, ...hosts]);
        vms.forEach((v, i) =>
          b.vm(`v${i}`, { name: `vm-${i}`, ...v, ...(i % 3 === 0 ? {} : { classes: [], group: '' }) }),
        );
        const items = vms.map((_, i) => ({
          vmId: `v${i}`,
          config: b.s.vms.get(`v${i}`)!.config,
          pinnedHostId: '',
        }));
        const plan = planPlacements(b.s, items, opts);
        const planned = new Map(plan.placements.map((p) => [p.vmId, p.hostId]));
        // One at a time: ExplainPlacement's pick (every host weighed), committed before the next.
        for (const item of items) {
          const chosen = explainPlacement(b.s, item.config, opts, item.vmId).chosen;
          expect(planned.get(item.vmId) ?? '', item.vmId).to.equal(chosen);
          if (chosen)
            b.must({ type: 'vm.place', placements: [{ vmId: item.vmId, hostId: chosen, note: '' }] });
        }
      }),
      { numRuns: 200, seed: 20261204 },
    );
  });

  it("each host's kept load, updated as VMs come, change and go, is what a recount from scratch gives", () => {
    const recount = (st: FarmState) => {
      const fresh = decodeSnapshot(encodeSnapshot(st));
      return [...fresh.hosts.values()].map((h) => summary(hostLoad(fresh, h)));
    };
    const summary = (l: ReturnType<typeof hostLoad>) => ({
      memoryBytes: l.memoryBytes,
      vcpus: l.vcpus,
      vms: l.vms,
      classes: [...l.classes].map(([k, m]) => [k, m.map((x) => x.vmName).sort()]).sort(),
    });
    const kept = (st: FarmState) => [...st.hosts.values()].map((h) => summary(hostLoad(st, h)));
    fc.assert(
      fc.property(
        farmArb,
        fc.array(fc.tuple(fc.nat(), fc.nat(), fc.constantFrom('place', 'remove', 'resize')), {
          minLength: 1,
          maxLength: 60,
        }),
        ({ hosts, vms }, steps) => {
          const b = build(hosts);
          vms.forEach((v, i) => b.vm(`v${i}`, { name: `vm-${i}`, ...v }));
          for (const [v, h, what] of steps) {
            const id = `v${v % vms.length}`;
            const vm = b.s.vms.get(id);
            if (what === 'place') {
              b.apply({
                type: 'vm.place',
                placements: [{ vmId: id, hostId: `h${h % hosts.length}`, note: '' }],
              });
            } else if (vm && what === 'remove') removeVm(b.s, id);
            else if (vm) {
              const memoryBytes = vm.config.memoryBytes + 32 * 1024 ** 2;
              putVm(b.s, { ...vm, config: { ...vm.config, memoryBytes } });
            }
            // Asked between the changes, so that the kept loads are updated, not just counted.
            expect(kept(b.s)).to.deep.equal(recount(b.s));
            // A host's load leaving one of its VMs out (a change of that VM weighed) is the
            // load of the same farm without that VM.
            const placed = b.s.vms.get(id);
            const on = placed?.hostId ? b.s.hosts.get(placed.hostId) : undefined;
            if (on) {
              const without = decodeSnapshot(encodeSnapshot(b.s));
              removeVm(without, id);
              expect(summary(hostLoad(b.s, on, id))).to.deep.equal(summary(hostLoad(without, on)));
            }
          }
        },
      ),
      { numRuns: 100, seed: 20261203 },
    );
  });

  // A journal of one mark falls behind at every change: the full check of every host.
  for (const [journal, cap] of [
    ['its host journal', undefined],
    ['a host journal of one mark (most refreshes out of its reach: every host checked)', 1],
  ] as const)
    it(`plans on a farm whose host table is kept between plans (refreshed from ${journal}) are the plans of a fresh copy of that farm (a host closed for a plan: of a copy with it in maintenance), through placements, removals, resizes, migrations and host changes`, () =>
      keptPlansProperty(cap));

  /** Two 16 GiB hosts (14 GiB usable, no overhead): h1 holds the room of a VM migrating to it. */
  function migratingFarm(): FarmBuilder {
    const b = new FarmBuilder();
    b.host({ id: 'h0', reserveMiB: 2048, overheadMiB: 0 }).host({
      id: 'h1',
      reserveMiB: 2048,
      overheadMiB: 0,
    });
    b.vm('v0', { name: 'vm-0', memMiB: 4096 }, 'h0').vm('n', { name: 'new', memMiB: 8192 });
    migrate(b.s, 'm1', 'v0', 'h1');
    return b;
  }

  it('a kept table sees a migration target whose load changed with no mark of its own (the migrating VM resized on its source)', () => {
    const b = migratingFarm();
    const opts = { policy: 'binpack' as const, vcpuRatio: 8 };
    const item = { vmId: 'n', config: b.s.vms.get('n')!.config, pinnedHostId: '' };
    const before = planPlacements(b.s, [item], opts);
    expect(before.placements.map((p) => p.hostId)).to.have.length(1);
    // Resized to 12 GiB: neither host has 8 GiB left for 'n' (h0 holds v0, h1 its room).
    const vm = b.s.vms.get('v0')!;
    putVm(b.s, { ...vm, config: { ...vm.config, memoryBytes: 12 * 1024 ** 3 } });
    const after = planPlacements(b.s, [item], opts);
    expect(after).to.deep.equal(planPlacements(decodeSnapshot(encodeSnapshot(b.s)), [item], opts));
    expect(after.placements).to.deep.equal([]);
  });

  it('a kept table sees the migration target of a restored state as its migrating VM is resized', () => {
    const s = decodeSnapshot(encodeSnapshot(migratingFarm().s));
    const opts = { policy: 'binpack' as const, vcpuRatio: 8 };
    const item = { vmId: 'n', config: s.vms.get('n')!.config, pinnedHostId: '' };
    expect(planPlacements(s, [item], opts).placements).to.have.length(1);
    const vm = s.vms.get('v0')!;
    putVm(s, { ...vm, config: { ...vm.config, memoryBytes: 12 * 1024 ** 3 } });
    expect(planPlacements(s, [item], opts).placements).to.deep.equal([]);
  });

  it("a host journal answers the hosts marked since a position, and undefined once it no longer reaches back or after a restore's forget", () => {
    const j = new HostJournal(2);
    const at = j.end;
    j.mark('h1');
    j.mark('h2');
    expect(j.since(at)).to.deep.equal(['h1', 'h2']);
    const mid = j.end;
    j.mark('h2');
    expect(j.since(mid)).to.deep.equal(['h2']);
    // Four marks kept at most (twice the cap), the latest two once past it.
    j.mark('h3');
    expect(j.since(at)).to.equal(undefined);
    expect(j.since(mid)).to.deep.equal(['h2', 'h3']);
    expect(j.since(j.end)).to.deep.equal([]);
    j.forget();
    expect(j.since(mid)).to.equal(undefined);
    expect(j.since(j.end)).to.deep.equal([]);
  });

  function keptPlansProperty(cap: number | undefined): void {
    const states: HostStateName[] = ['HOST_STATE_UP', 'HOST_STATE_SUSPECT', 'HOST_STATE_DOWN'];
    fc.assert(
      fc.property(
        farmArb,
        fc.array(
          fc.tuple(
            fc.nat(),
            fc.nat(),
            fc.constantFrom(
              'plan',
              'plan',
              'commit',
              'remove',
              'resize',
              'host-state',
              'maintenance',
              'migrate',
              'cancel',
            ),
          ),
          { minLength: 1, maxLength: 40 },
        ),
        ({ hosts, vms, policy }, steps) => {
          const opts = { policy, vcpuRatio: 8 };
          // Most VMs without a class, so the kept heaps are what picks.
          const b = build([...hosts, ...hosts]);
          if (cap !== undefined) b.s.hostJournal = new HostJournal(cap);
          vms.forEach((v, i) =>
            b.vm(`v${i}`, { name: `vm-${i}`, ...v, ...(i % 4 === 0 ? {} : { classes: [], group: '' }) }),
          );
          const n = hosts.length * 2;
          let migrations = 0;
          for (const [x, y, what] of steps) {
            const unplaced = [...b.s.unplaced].map((id) => ({
              vmId: id,
              config: b.s.vms.get(id)!.config,
              pinnedHostId: '',
            }));
            const items = unplaced.slice(
              x % Math.max(1, unplaced.length),
              (x % Math.max(1, unplaced.length)) + 1 + (y % 3),
            );
            const pending = [...b.s.vms.values()]
              .slice(0, y % 3)
              .map((vm) => ({ hostId: `h${(x + y) % n}`, config: vm.config }));
            if (what === 'plan' || what === 'commit') {
              const kept = planPlacements(b.s, items, opts, pending);
              const fresh = planPlacements(decodeSnapshot(encodeSnapshot(b.s)), items, opts, pending);
              expect(kept).to.deep.equal(fresh);
              // A host closed for one plan (a VM moving off it) is a host in maintenance.
              const closed = `h${y % n}`;
              const copy = decodeSnapshot(encodeSnapshot(b.s));
              copy.hosts.set(closed, { ...copy.hosts.get(closed)!, maintenance: true });
              expect(planPlacements(b.s, items, opts, pending, closed)).to.deep.equal(
                planPlacements(copy, items, opts, pending),
              );
              if (what === 'commit' && kept.placements.length > 0)
                b.apply({ type: 'vm.place', placements: kept.placements.map((p) => ({ ...p })) });
            } else if (what === 'remove') {
              const id = `v${x % vms.length}`;
              if (b.s.vms.has(id)) removeVm(b.s, id);
            } else if (what === 'resize') {
              const vm = b.s.vms.get(`v${x % vms.length}`);
              if (vm) {
                const memoryBytes = vm.config.memoryBytes + ((y % 5) - 2) * 32 * 1024 ** 2;
                if (memoryBytes > 0) putVm(b.s, { ...vm, config: { ...vm.config, memoryBytes } });
              }
            } else if (what === 'host-state')
              b.apply({ type: 'host.state', id: `h${x % n}`, state: states[y % 3]!, reason: 'test' });
            else if (what === 'migrate') {
              // The VM's room is held on the target (and kept on its source) from now on, by the
              // VM as it is: a resize of it changes the target's load too.
              const vm = b.s.vms.get(`v${x % vms.length}`);
              if (vm?.hostId && vm.hostId !== `h${y % n}`)
                migrate(b.s, `m${++migrations}`, vm.id, `h${y % n}`);
            } else if (what === 'cancel') {
              const m = b.s.migrations.get(`m${1 + (x % Math.max(1, migrations))}`);
              if (m) putMigration(b.s, { ...m, phase: 'MIGRATION_PHASE_FAILED', decision: 'abort' });
            } else
              b.apply({
                type: 'host.update',
                id: `h${x % n}`,
                paths: ['maintenance'],
                name: '',
                labels: {},
                maintenance: y % 2 === 0,
              });
          }
        },
      ),
      { numRuns: 150, seed: 20261206 },
    );
  }

  it('the state machine refuses any placement that would break a promise, whatever the plan says', () => {
    fc.assert(
      fc.property(
        farmArb,
        fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 60 }),
        ({ hosts, vms }, picks) => {
          const b = build(hosts);
          vms.forEach((v, i) => b.vm(`v${i}`, { name: `vm-${i}`, ...v }));
          // An adversarial plan: any VM onto any host, in batches.
          for (let i = 0; i < picks.length; i += 7) {
            const placements = picks.slice(i, i + 7).map(([v, h]) => ({
              vmId: `v${v % vms.length}`,
              hostId: `h${h % hosts.length}`,
              note: '',
            }));
            b.must({ type: 'vm.place', placements });
            expect(violations(b.s)).to.deep.equal([]);
          }
        },
      ),
      { numRuns: 200, seed: 20261202 },
    );
  });

  it("the planner's fast path agrees with the filters: it picks a feasible host, the best one, or none when none fits", () => {
    fc.assert(
      fc.property(
        farmArb,
        vmArb,
        fc.array(fc.nat(), { maxLength: 20 }),
        ({ hosts, vms, policy }, vm, picks) => {
          const b = build(hosts);
          vms.forEach((v, i) => b.vm(`v${i}`, { name: `vm-${i}`, ...v }));
          b.apply({
            type: 'vm.place',
            placements: picks.map((h, i) => ({
              vmId: `v${i % vms.length}`,
              hostId: `h${h % hosts.length}`,
              note: '',
            })),
          });
          const { verdicts, chosen } = explainPlacement(b.s, vmConfig({ name: 'new', ...vm }), {
            policy,
            vcpuRatio: 8,
          });
          const feasible = verdicts.filter((v) => v.feasible);
          if (feasible.length === 0) {
            expect(chosen).to.equal('');
            return;
          }
          const best = Math.max(...feasible.map((v) => v.score));
          const pick = verdicts.find((v) => v.hostId === chosen);
          expect(pick?.feasible, `chosen ${chosen}`).to.equal(true);
          expect(pick!.score).to.be.closeTo(best, 1e-9);
        },
      ),
      { numRuns: 300, seed: 20261203 },
    );
  });

  it('a VM no host takes fails only if no host could take it even once Up again; otherwise it waits', () => {
    fc.assert(
      fc.property(farmArb, vmArb, ({ hosts, vms, policy }, vm) => {
        const b = build(hosts);
        vms.forEach((v, i) => b.vm(`v${i}`, { name: `vm-${i}`, ...v }));
        const opts = { policy, vcpuRatio: 8 };
        b.must({
          type: 'vm.place',
          placements: planPlacements(
            b.s,
            vms.map((_, i) => ({ vmId: `v${i}`, config: b.s.vms.get(`v${i}`)!.config, pinnedHostId: '' })),
            opts,
          ).placements,
        });
        const config = vmConfig({ name: 'new', ...vm });
        // What the filters say of each host, liveness aside: the refusals left once it is Up.
        const verdicts = explainPlacement(b.s, config, opts).verdicts;
        const liveness = new Set(['host is Suspect', 'host is Down']);
        const upFits = verdicts.some((v) => v.feasible);
        const laterFits = verdicts.some((v) => !v.feasible && v.reasons.every((r) => liveness.has(r)));
        const plan = planPlacements(b.s, [{ vmId: 'n', config, pinnedHostId: '' }], opts);
        const outcome = plan.placements.length ? 'placed' : plan.waiting.length ? 'waiting' : 'failed';
        expect(outcome).to.equal(upFits ? 'placed' : laterFits ? 'waiting' : 'failed');
      }),
      { numRuns: 100, seed: 20261205 },
    );
  });

  it('replicas that apply the same log agree, and a snapshot taken midway changes nothing', () => {
    fc.assert(
      fc.property(
        farmArb,
        fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 30 }),
        ({ hosts, vms, policy }, picks) => {
          const run = (snapshotAt: number) => {
            let b = build(hosts);
            vms.forEach((v, i) => {
              if (i === snapshotAt) {
                b = b.restoredCopy(decodeSnapshot(encodeSnapshot(b.s)));
              }
              b.vm(`v${i}`, { name: `vm-${i}`, ...v });
            });
            const items = vms.map((_, i) => ({
              vmId: `v${i}`,
              config: b.s.vms.get(`v${i}`)!.config,
              pinnedHostId: '',
            }));
            b.must({
              type: 'vm.place',
              placements: planPlacements(b.s, items, { policy, vcpuRatio: 8 }).placements,
            });
            for (const [v, state] of picks)
              b.report(`v${v % vms.length}`, ['OFF', 'RUNNING', 'SAVED'][state % 3]!);
            return Buffer.from(encodeSnapshot(b.s)).toString();
          };
          expect(run(Math.floor(vms.length / 2))).to.equal(run(-1));
        },
      ),
      { numRuns: 100, seed: 20261204 },
    );
  });
});
