import { expect } from 'chai';
import type { pb } from '@hyperfarm/api';
import type { HypervisorEngine, OutgoingMigration } from '../src/engine/engine.js';
import type { GuestMemory } from '../src/engine/memory.js';
import { decodeDeviceState } from '../src/engine/partition.js';
import { seededRng, type Rng } from '../src/engine/rng.js';
import { gib, makeEngine, mib, vmConfig } from './helpers.js';

/**
 * The lazy guest model (EngineOptions.lazyGuests) against the stepping one, on the same seeded
 * scenario: both engines get the same calls at the same instants, and wherever the scenario
 * reads them they must agree, as the option documents: the same states, events, views, CPU
 * shares and heartbeats; the same counts of disk I/Os and page writes up to one (rounding of the
 * carried fraction); the same packets up to float rounding. The pages the random writes pick
 * and when disk writes are issued are what the option leaves free.
 */

const VMS = 8;

function randomConfig(rng: Rng, i: number): pb.VmConfig {
  const emulated = rng.below(4) === 0;
  return vmConfig(`v${i}`, {
    guestOs: emulated ? 'other-x86' : 'windows-server-2008-x64',
    integrationServices: !emulated,
    processor: {
      count: emulated ? 1 : 1 + rng.below(2),
      reservePercent: rng.below(3) === 0 ? 10 * rng.below(5) : 0,
      limitPercent: rng.below(3) === 0 ? 30 + 10 * rng.below(8) : 100,
      relativeWeight: 50 + rng.below(200),
    },
    memoryBytes: mib(512),
    disks:
      rng.below(3) === 0
        ? []
        : [{ controller: 'DISK_CONTROLLER_IDE', path: `d${i}.vhd`, createSizeBytes: 8 << 20 }],
    networkAdapters:
      rng.below(3) === 0
        ? []
        : [{ kind: !emulated && rng.below(2) === 0 ? 'NIC_KIND_SYNTHETIC' : 'NIC_KIND_LEGACY' }],
    workload: {
      bootMs: 200 + rng.below(3_000),
      cpuDemandPercent: 5 + rng.below(96),
      // Under a quarter of the working set's cap per second, so a read every 30 s never meets it.
      dirtyPagesPerSecond: rng.below(3) === 0 ? 0 : rng.below(200),
      workingSetBytes: mib(64),
      diskIops: rng.below(400),
      requestServiceTimeMs: rng.below(2) === 0 ? 0 : 1 + rng.below(20),
    },
  });
}

/** One engine of the pair, with what the scenario's "agent" keeps for it (saved states, migrations). */
class Side {
  readonly saved = new Map<string, { memory: GuestMemory; device: Buffer }>();
  readonly outgoing = new Map<string, OutgoingMigration>();
  constructor(readonly e: HypervisorEngine) {}

  /** Carries out what the engine asked for at once (saves and restores end at this instant). */
  effects(): string[] {
    const done: string[] = [];
    for (let round = 0; round < 4; round++) {
      const effects = this.e.takeEffects();
      if (effects.length === 0) break;
      for (const f of effects) {
        if (f.kind === 'disk-writes') continue;
        done.push(`${f.kind}:${f.vmId}`);
        if (f.kind === 'save') {
          this.saved.set(f.vmId, { memory: f.memory, device: f.deviceState });
          f.saved(`hash-${f.vmId}`);
        } else if (f.kind === 'restore') {
          const s = this.saved.get(f.vmId);
          if (s) f.restored(s.memory, decodeDeviceState(s.device));
          else f.failed('no saved state');
        }
      }
    }
    return done;
  }
}

/** The same call on both engines: the same answer, or the same error. */
function both<T>(a: Side, b: Side, fn: (s: Side) => T): boolean {
  const run = (s: Side): { ok: T } | { err: string } => {
    try {
      return { ok: fn(s) };
    } catch (err) {
      return { err: (err as Error).message };
    }
  };
  const answer = run(a);
  expect(run(b), 'the lazy engine answers as the stepping one').to.deep.equal(answer);
  expect(b.effects()).to.deep.equal(a.effects());
  return 'ok' in answer;
}

const pageWrites = (m: GuestMemory): number =>
  m.residentPageNumbers().reduce((sum, p) => sum + m.versionOf(p), 0);

/** Compares the two engines as read now; returns the page writes the guests' memories hold. */
function compare(a: Side, b: Side, at: string): number {
  let writes = 0;
  const ctx = (what: string) => `${what} at ${at}`;
  expect(b.e.now(), ctx('clock')).to.equal(a.e.now());
  expect(b.e.takeEvents(), ctx('events')).to.deep.equal(a.e.takeEvents());
  expect(b.e.vms.list(), ctx('views')).to.deep.equal(a.e.vms.list());
  expect(b.e.usage(), ctx('usage')).to.deep.equal(a.e.usage());
  const ca = a.e.cpuReport();
  const cb = b.e.cpuReport();
  expect(cb.hostPercent, ctx('host CPU')).to.equal(ca.hostPercent);
  expect(cb.rootLp, ctx('root CPU')).to.equal(ca.rootLp);
  expect([...cb.vms], ctx('VM CPU')).to.deep.equal([...ca.vms]);
  for (const vm of a.e.vms.list()) {
    const id = vm.id;
    const sa = a.e.vms.ioStats(id);
    const sb = b.e.vms.ioStats(id);
    expect(sb.rootCpuLp, ctx(`${id} root CPU`)).to.equal(sa.rootCpuLp);
    expect(sb.diskIos, ctx(`${id} disk I/Os`)).to.be.closeTo(sa.diskIos, 1);
    expect(sb.emulatedIos, ctx(`${id} emulated I/Os`)).to.be.closeTo(sa.emulatedIos, 1);
    expect(sb.packets, ctx(`${id} packets`)).to.be.closeTo(sa.packets, 1e-6 * Math.max(1, sa.packets));
    const ma = a.e.vms.memoryOf(id);
    const mb = b.e.vms.memoryOf(id);
    expect(mb === undefined, ctx(`${id} memory`)).to.equal(ma === undefined);
    if (ma && mb) expect(pageWrites(mb), ctx(`${id} page writes`)).to.be.closeTo(pageWrites(ma), 1);
    if (ma) writes += pageWrites(ma);
  }
  return writes;
}

function scenario(seed: number): {
  reads: number;
  writes: number;
  ios: number;
  succeeded: Map<string, number>;
} {
  const rng = seededRng(seed);
  const options = { seed: 7, logicalProcessors: 4, memoryBytes: gib(16) };
  const a = new Side(makeEngine(options));
  const b = new Side(makeEngine({ ...options, lazyGuests: true }));
  const ids = Array.from({ length: VMS }, (_, i) => `v${i}`);
  ids.forEach((id, i) => {
    const c = randomConfig(rng, i);
    for (const s of [a, b]) s.e.vms.create(id, c, 1);
  });
  both(a, b, (s) => s.e.lease.grant('d1', 1, 3_600_000));
  let reads = 0;
  let writes = 0;
  let t = 0;
  const succeeded = new Map<string, number>();
  for (let op = 0; op < 400; op++) {
    t += rng.below(rng.below(4) === 0 ? 30_000 : 3_000);
    both(a, b, (s) => s.e.advance(t));
    const id = ids[rng.below(VMS)]!;
    const r = rng.below(100);
    const done = (kind: string, ok: boolean) => ok && succeeded.set(kind, (succeeded.get(kind) ?? 0) + 1);
    const power = (action: pb.VmAction__Output) =>
      done(
        action,
        both(a, b, (s) => s.e.power.change(id, action, 1)),
      );
    if (r < 25) power('VM_ACTION_START');
    else if (r < 32) power('VM_ACTION_STOP');
    else if (r < 37) power('VM_ACTION_TURN_OFF');
    else if (r < 42) power('VM_ACTION_PAUSE');
    else if (r < 48) power('VM_ACTION_RESUME');
    else if (r < 52) power('VM_ACTION_SAVE');
    else if (r < 55) power('VM_ACTION_RESET');
    else if (r < 63) {
      // The workload may change while the VM runs: its demand, its disk and its page rates.
      const c = a.e.vms.get(id).config!;
      const workload = {
        ...c.workload!,
        cpuDemandPercent: 5 + rng.below(96),
        diskIops: rng.below(400),
        dirtyPagesPerSecond: rng.below(200),
      };
      done(
        'update',
        both(a, b, (s) => s.e.vms.update(id, { ...c, workload }, ['workload'], 1)),
      );
    } else if (r < 68) {
      const responsive = rng.below(2) === 0;
      done(
        'responsive',
        both(a, b, (s) => s.e.health.setGuestResponsive(id, responsive)),
      );
    } else if (r < 74) {
      // A live migration out, throttled by auto-converge, then aborted: the guest runs on.
      const percent = 20 + rng.below(80);
      const ok = both(a, b, (s) => {
        const m = s.e.migration.out(id, 1, 'MIGRATION_KIND_LIVE', { snapshots: 0 }, `m${op}`, true);
        s.outgoing.set(id, m);
        m.throttle(percent);
        return m.memory?.dirtyPages !== undefined;
      });
      done('throttle', ok);
    } else if (r < 80) {
      const ok = both(a, b, (s) => {
        const m = s.outgoing.get(id);
        s.outgoing.delete(id);
        return m ? s.e.migration.abort(id, m.id, 'the scenario aborts it') : false;
      });
      done('abort', ok);
    } else if (r < 81) {
      // The lease runs out now and then (every VM off), and is granted again.
      const ms = rng.below(5_000);
      both(a, b, (s) => s.e.lease.grant('d1', 1, ms));
    } else if (r < 86) {
      both(a, b, (s) => s.e.lease.grant('d1', 1, 3_600_000));
    }
    if (rng.below(3) === 0) {
      writes = Math.max(writes, compare(a, b, `${t} ms (op ${op}, seed ${seed})`));
      reads++;
    }
  }
  compare(a, b, `the end (seed ${seed})`);
  let ios = 0;
  for (const id of ids) ios += a.e.vms.ioStats(id).diskIos;
  return { reads: reads + 1, writes, ios, succeeded };
}

describe('engine: lazy guest model', function () {
  // The stepping engine steps 8 guests every second of an hour or so per seed: seconds under load.
  this.timeout(120_000);
  for (const seed of [1, 2, 3, 4]) {
    it(`gives what stepping gives wherever it is read (seed ${seed})`, () => {
      const r = scenario(seed);
      // The scenario does what it is for: guests ran, wrote pages and disks, and were read.
      expect(r.reads).to.be.greaterThan(50);
      expect(r.ios).to.be.greaterThan(0);
      expect(r.writes).to.be.greaterThan(0);
      for (const kind of ['VM_ACTION_START', 'VM_ACTION_STOP', 'VM_ACTION_TURN_OFF', 'update', 'throttle'])
        expect(r.succeeded.get(kind) ?? 0, kind).to.be.greaterThan(0);
    });
  }

  it('moves its clock without stepping a guest while nothing changes, and reads bring it up to date', () => {
    const e = makeEngine({ lazyGuests: true });
    const disk = [{ controller: 'DISK_CONTROLLER_IDE' as const, path: 'd.vhd', createSizeBytes: 8 << 20 }];
    e.vms.create(
      'v',
      vmConfig('v', {
        disks: disk,
        workload: {
          bootMs: 1_000,
          cpuDemandPercent: 50,
          diskIops: 10,
          dirtyPagesPerSecond: 100,
          workingSetBytes: mib(512),
        },
      }),
    );
    e.power.change('v', 'VM_ACTION_START');
    e.advance(2_000);
    e.takeEffects();
    e.advance(3_600_000);
    // Nothing read the guest: an hour went by without a disk write issued.
    expect(e.takeEffects()).to.deep.equal([]);
    // A read works the hour out at the guest's rate: 10 I/Os and 100 page writes a second (the
    // 256 pages of its kernel besides).
    expect(e.vms.ioStats('v').diskIos).to.be.closeTo((10 * (3_600_000 - 1_000)) / 1_000, 1);
    expect(pageWrites(e.vms.memoryOf('v')!)).to.be.closeTo(256 + 100 * 3_599, 1);
    // The read issued what the guest owed; settleGuests does too (one write per account closed at
    // most, as one per step when stepping).
    expect(e.takeEffects().map((f) => f.kind)).to.deep.equal(['disk-writes']);
    e.advance(3_601_000);
    e.settleGuests();
    expect(e.takeEffects().map((f) => f.kind)).to.deep.equal(['disk-writes']);
  });
});
