import { expect } from 'chai';
import { fencedHosts } from '../../src/controllers/index.js';
import {
  activeCount,
  decodeSnapshot,
  emptyState,
  encodeSnapshot,
  putMigration,
  type FarmState,
  type HostStateName,
  type MigrationPhaseName,
  type MigrationRecord,
} from '../../src/fsm/index.js';
import { FarmBuilder } from './build.js';
import { migrationRecord } from './fixtures.js';

/** A small seeded generator (the walks must be the same every run). */
function seeded(seed: number): (n: number) => number {
  return (n) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
}

const HOSTS = ['h1', 'h2', 'h3', 'h4', 'h5'];

describe("a host's migrations under way, kept as migrations change", () => {
  const PHASES: MigrationPhaseName[] = [
    'MIGRATION_PHASE_PENDING',
    'MIGRATION_PHASE_PREPARING_TARGET',
    'MIGRATION_PHASE_TRANSFERRING',
    'MIGRATION_PHASE_STOP_AND_COPY',
    'MIGRATION_PHASE_PREPARED',
    'MIGRATION_PHASE_RESTORING',
    'MIGRATION_PHASE_ROLLING_BACK',
    'MIGRATION_PHASE_COMPLETED',
    'MIGRATION_PHASE_FAILED',
  ];
  const FINAL = new Set<MigrationPhaseName>(['MIGRATION_PHASE_COMPLETED', 'MIGRATION_PHASE_FAILED']);
  // From the definition: the migrations begun (no longer pending) and not finished that the host
  // is the source or the target of.
  const recount = (s: FarmState, hostId: string) =>
    [...s.migrations.values()]
      .filter((m) => m.phase !== 'MIGRATION_PHASE_PENDING' && !FINAL.has(m.phase))
      .reduce((n, m) => n + (m.sourceHostId === hostId ? 1 : 0) + (m.targetHostId === hostId ? 1 : 0), 0);
  const expectAgrees = (s: FarmState, step: number) => {
    for (const h of HOSTS) expect(activeCount(s, h), `${h} at step ${step}`).to.equal(recount(s, h));
  };

  it('equals a recount after every change of phase, end and forgetting (a seeded walk), and after a restore', () => {
    const s = emptyState();
    const next = seeded(11);
    let n = 0;
    const open: MigrationRecord[] = [];
    for (let step = 0; step < 600; step++) {
      const what = next(10);
      if (what < 3 || open.length === 0) {
        const source = HOSTS[next(HOSTS.length)]!;
        const others = HOSTS.filter((h) => h !== source);
        const m = migrationRecord(`m${n++}`, {
          sourceHostId: source,
          targetHostId: others[next(others.length)]!,
          revision: 1,
        });
        putMigration(s, m);
        open.push(m);
      } else {
        const i = next(open.length);
        const phase = PHASES[next(PHASES.length)]!;
        const m = { ...open[i]!, phase, revision: open[i]!.revision + 1 };
        putMigration(s, m);
        if (FINAL.has(phase)) {
          open.splice(i, 1);
          // Some finished ones are forgotten, as the window of finished migrations does.
          if (next(2) === 0) s.migrations.delete(m.id);
        } else open[i] = m;
      }
      expectAgrees(s, step);
      if (step % 100 === 99) {
        // A replica restored from a snapshot counts them again (the snapshot does not carry them).
        const bytes = encodeSnapshot(s);
        expect(Buffer.from(bytes).toString()).not.to.include('activeMigrations');
        const restored = decodeSnapshot(bytes);
        expectAgrees(restored, step);
        expect(restored.activeMigrations).to.deep.equal(s.activeMigrations);
      }
    }
    // The walk went through hosts at none, one and several under way.
    expect(open.length).to.be.greaterThan(3);
  });
});

describe('the hosts not Up, kept as hosts change', () => {
  const STATES: HostStateName[] = ['HOST_STATE_UP', 'HOST_STATE_SUSPECT', 'HOST_STATE_DOWN'];
  const CFG = { leaseMs: 5_000, marginMs: 500 };

  it('equal the hosts not Up in the order of all hosts, and fencing finds what a scan of every host does (a seeded walk)', () => {
    const b = new FarmBuilder();
    for (const id of HOSTS) b.host({ id, memGiB: 64 });
    b.vm('v1', { name: 'v1', memMiB: 512 }, 'h2');
    b.vm('v2', { name: 'v2', memMiB: 512 }, 'h4');
    const next = seeded(5);
    let registered = [...HOSTS];
    for (let step = 0; step < 400; step++) {
      const what = next(10);
      const id = HOSTS[next(HOSTS.length)]!;
      if (!registered.includes(id)) {
        // A host removed comes back: at the end of the farm's hosts.
        b.host({ id, memGiB: 64 });
        registered.push(id);
      } else if (what < 8) {
        b.apply({ type: 'host.state', id, state: STATES[next(STATES.length)]!, reason: 'walk' });
      } else if (b.apply({ type: 'host.remove', id })[0]!.ok) {
        registered = registered.filter((h) => h !== id);
      }
      expectNotUp(b.s, step);
      if (step % 50 === 49) {
        const restored = decodeSnapshot(encodeSnapshot(b.s));
        expectNotUp(restored, step);
        expect([...restored.hostsNotUp]).to.deep.equal([...b.s.hostsNotUp]);
      }
    }
  });

  function expectNotUp(s: FarmState, step: number): void {
    const scan = [...s.hosts.values()].filter((h) => h.state !== 'HOST_STATE_UP').map((h) => h.id);
    expect([...s.hostsNotUp], `step ${step}`).to.deep.equal(scan);
    // From fencedHosts' definition: the Down hosts holding VMs, in the order of all hosts, fenced
    // once a lease and the margin have passed since the lease counted from.
    const leaseFrom = new Map([['h2', 1_000]]);
    for (const now of [0, 6_500, 10_000]) {
      const fenced: string[] = [];
      let nextMs = Infinity;
      for (const h of s.hosts.values()) {
        if (h.state !== 'HOST_STATE_DOWN' || !s.vmsByHost.get(h.id)?.size) continue;
        const ends = (leaseFrom.get(h.id) ?? 0) + CFG.leaseMs + CFG.marginMs;
        if (now >= ends) fenced.push(h.id);
        else nextMs = Math.min(nextMs, ends);
      }
      expect(fencedHosts(s, leaseFrom, 0, now, CFG), `step ${step} at ${now}`).to.deep.equal({
        fenced,
        nextMs,
      });
    }
  }
});
