import { expect } from 'chai';
import { ApiError, status, type Logger, type pb } from '@hyperfarm/api';
import { migrationsToStart, unfinishedMigrations } from '../../src/controllers/index.js';
import type { AgentPort, HostRef } from '../../src/edge/agent-port.js';
import { MigrationOrchestrator } from '../../src/edge/migration-orchestrator.js';
import type { Ok } from '../../src/edge/proposer.js';
import { realTimers } from '../../src/edge/timers.js';
import {
  activeCount,
  decodeResults,
  emptyState,
  encodeEntry,
  FarmStateMachine,
  putMigration,
  hostLoad,
  vmMemoryCost,
  type Command,
  type CommandBody,
} from '../../src/fsm/index.js';
import { hostPayload, migrationRecord, vmConfig } from '../fsm/fixtures.js';

/**
 * The orchestrator against a state machine applied in process and agents that record what they
 * are told, with the log's decision at the moment they are told it. The rule under test is the
 * issue's: the handover is decided in the log before either host hears of it.
 */

const quiet = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  debug: () => undefined,
  child() {
    return this;
  },
} as unknown as Logger;

interface Told {
  call: string;
  host: string;
  role?: string;
  /** The decision the log held when the host was told. */
  logSaid: string;
}

class Farm {
  readonly machine = new FarmStateMachine();
  private index = 0;

  submit = async (cmd: CommandBody): Promise<Ok> => {
    const full = { ...cmd, rid: `r${++this.index}`, t: Date.now() } as Command;
    const [r] = decodeResults(this.machine.apply(encodeEntry([full]), this.index));
    if (!r!.ok) throw new ApiError(status[r!.error.code as keyof typeof status], r!.error.message);
    return r!;
  };

  /** Two hosts, and a VM running on h1 at generation 1, then a migration of it to h2. */
  static async withMigration(): Promise<Farm> {
    const f = await Farm.withVm();
    await f.request();
    return f;
  }

  /** Two hosts, and a VM running on h1 at generation 1. */
  static async withVm(): Promise<Farm> {
    const f = new Farm();
    for (const id of ['h1', 'h2']) await f.submit({ type: 'host.register', ...hostPayload({ id }) });
    await f.submit({
      type: 'vm.create',
      vmId: 'v1',
      opId: 'o1',
      config: vmConfig({ name: 'web' }),
      start: true,
      hostId: 'h1',
    });
    await f.submit({ type: 'vm.place', placements: [{ vmId: 'v1', hostId: 'h1', note: '' }] });
    await f.submit({
      type: 'vm.observed',
      reports: [
        {
          vmId: 'v1',
          hostId: 'h1',
          generation: 1,
          present: true,
          state: 'VM_STATE_RUNNING',
          heartbeat: 'HEARTBEAT_STATUS_OK',
          message: '',
          memoryAssignedBytes: 0,
          macs: [],
        },
      ],
    });
    return f;
  }

  /** The migration of v1 to h2. */
  async request(): Promise<void> {
    await this.submit({
      type: 'migration.request',
      migrationId: 'm1',
      opId: 'o2',
      vmId: 'v1',
      targetHostId: 'h2',
      kind: 'MIGRATION_KIND_LIVE',
      deadlineMs: 2_000,
    });
  }

  get m() {
    return this.machine.state.migrations.get('m1')!;
  }
}

/** Agents that answer as told and record every call with what the log said at that moment. */
function agents(
  farm: Farm,
  opts: { pull?: 'prepared' | 'fail'; status?: pb.MigrationStage__Output } = {},
): { port: AgentPort; told: Told[] } {
  const told: Told[] = [];
  const note = (call: string, host: HostRef, role?: string) =>
    told.push({ call, host: host.id, ...(role ? { role } : {}), logSaid: farm.m.decision || 'undecided' });
  const migrationStatus = (stage: pb.MigrationStage__Output, downtimeMs = 0) =>
    ({
      migrationId: 'm1',
      stage,
      downtimeMs,
      bytesTransferred: 10,
      rounds: 3,
      sha256: 'ab',
      role: 'MIGRATION_ROLE_TARGET',
      message: '',
    }) as pb.MigrationStatus__Output;
  const port = {
    migrateIn(host: HostRef) {
      note('migrateIn', host);
      const done =
        opts.pull === 'fail'
          ? Promise.reject(new ApiError(status.UNAVAILABLE, 'the source sent nothing for 1000 ms'))
          : Promise.resolve({
              phase: 'MIGRATION_PHASE_PREPARED',
              round: 3,
              bytesTransferred: 10,
              verifiedSha256: 'ab',
            } as pb.MigrationProgress__Output);
      return { done, cancel: () => undefined };
    },
    async commitMigration(host: HostRef, req: pb.ResolveMigrationRequest) {
      note('commit', host, req.role as string);
      return migrationStatus('MIGRATION_STAGE_COMMITTED', 7);
    },
    async abortMigration(host: HostRef, req: pb.ResolveMigrationRequest) {
      note('abort', host, req.role as string);
      return migrationStatus('MIGRATION_STAGE_ABORTED');
    },
    async getMigrationStatus(host: HostRef) {
      note('status', host);
      return migrationStatus(opts.status ?? 'MIGRATION_STAGE_TRANSFERRING');
    },
    async getVm(host: HostRef, vmId: string) {
      note('getVm', host);
      return {
        id: vmId,
        revision: 9,
        config: { networkAdapters: [] },
        status: {
          state: 'VM_STATE_RUNNING',
          heartbeat: 'HEARTBEAT_STATUS_OK',
          message: 'resumed',
          memoryAssignedBytes: 0,
          generation: 2,
        },
      } as unknown as pb.Vm__Output;
    },
  } as unknown as AgentPort;
  return { port, told };
}

async function run(
  farm: Farm,
  port: AgentPort,
  observe?: (hostId: string, vm: pb.Vm__Output) => void,
): Promise<void> {
  const o = new MigrationOrchestrator(farm.machine, farm.submit, port, realTimers, quiet, {
    maxPerHost: 2,
    ...(observe ? { observe } : {}),
  });
  const off = farm.machine.onApplied(() => setImmediate(() => o.tick()));
  // The phase changes only when the log applies an entry: wait for the entry that ends it.
  const ended = () => ['MIGRATION_PHASE_COMPLETED', 'MIGRATION_PHASE_FAILED'].includes(farm.m.phase);
  let stuck: NodeJS.Timeout | undefined;
  let offEnded = () => {};
  const end = new Promise<void>((resolve, reject) => {
    stuck = setTimeout(() => reject(new Error(`migration stuck in ${farm.m.phase}`)), 10_000);
    offEnded = farm.machine.onApplied(() => {
      if (ended()) resolve();
    });
  });
  o.tick();
  try {
    if (!ended()) await end;
  } finally {
    clearTimeout(stuck);
    offEnded();
  }
  off();
  o.close();
}

describe('migration orchestrator: the handover is decided in the log first', () => {
  it('a migration asked after a run is started at the next one: its list of unfinished migrations is made again when one changes', async () => {
    const farm = await Farm.withVm();
    const { port } = agents(farm);
    const o = new MigrationOrchestrator(farm.machine, farm.submit, port, realTimers, quiet, {
      maxPerHost: 2,
    });
    try {
      o.tick();
      // An entry that changes no migration, then one that asks for one: only the second is news.
      await farm.submit({
        type: 'host.update',
        id: 'h2',
        paths: ['labels'],
        name: '',
        labels: { a: 'b' },
        maintenance: false,
      });
      o.tick();
      await farm.request();
      expect(farm.m.phase).to.equal('MIGRATION_PHASE_PENDING');
      o.tick();
      expect(farm.m.phase).to.not.equal('MIGRATION_PHASE_PENDING');
    } finally {
      o.close();
    }
  });

  it('commits in the log before telling the target, then the source; the VM is the target’s at generation 2', async () => {
    const farm = await Farm.withMigration();
    const { port, told } = agents(farm);
    await run(farm, port);
    expect(told.filter((t) => t.call !== 'migrateIn')).to.deep.equal([
      { call: 'commit', host: 'h2', role: 'MIGRATION_ROLE_TARGET', logSaid: 'commit' },
      { call: 'commit', host: 'h1', role: 'MIGRATION_ROLE_SOURCE', logSaid: 'commit' },
      { call: 'getVm', host: 'h2', logSaid: 'commit' },
    ]);
    expect(farm.m).to.deep.include({ phase: 'MIGRATION_PHASE_COMPLETED', downtimeMs: 7, rounds: 3 });
    const vm = farm.machine.state.vms.get('v1')!;
    expect([vm.hostId, vm.generation, vm.busyOpId]).to.deep.equal(['h2', 2, '']);
    expect(farm.machine.state.operations.get('o2')!.done).to.equal(true);
  });

  it('ends with the VM as the target then runs it, in the log and in the leader’s inventory of the target (which held the import)', async () => {
    const farm = await Farm.withMigration();
    const { port } = agents(farm);
    const observed: [string, number][] = [];
    await run(farm, port, (hostId, vm) => observed.push([hostId, vm.revision]));
    expect(observed).to.deep.equal([['h2', 9]]);
    const vm = farm.machine.state.vms.get('v1')!;
    expect([vm.hostId, vm.observed.state, vm.observed.message]).to.deep.equal([
      'h2',
      'VM_STATE_RUNNING',
      'resumed',
    ]);
  });

  it('a failed pull is an abort, in the log first: nobody is told to commit, the VM stays', async () => {
    const farm = await Farm.withMigration();
    const { port, told } = agents(farm, { pull: 'fail' });
    await run(farm, port);
    expect(told.some((t) => t.call === 'commit')).to.equal(false);
    expect(told.filter((t) => t.call === 'abort').map((t) => [t.host, t.logSaid])).to.have.deep.members([
      ['h1', 'abort'],
      ['h2', 'abort'],
    ]);
    expect(farm.m.phase).to.equal('MIGRATION_PHASE_FAILED');
    expect(farm.m.error).to.match(/the source sent nothing/);
    const vm = farm.machine.state.vms.get('v1')!;
    expect([vm.hostId, vm.generation]).to.deep.equal(['h1', 1]);
    expect(farm.machine.state.operations.get('o2')!.error?.code).to.equal('ABORTED');
  });

  it('a new leader finds it undecided: the target holds it PREPARED, so it commits', async () => {
    const farm = await Farm.withMigration();
    await farm.submit({ type: 'migration.start', migrationId: 'm1', limit: 2 });
    const { port, told } = agents(farm, { status: 'MIGRATION_STAGE_PREPARED' });
    await run(farm, port);
    expect(told.some((t) => t.call === 'migrateIn')).to.equal(false);
    expect(told.filter((t) => t.call === 'commit').every((t) => t.logSaid === 'commit')).to.equal(true);
    expect(farm.m.phase).to.equal('MIGRATION_PHASE_COMPLETED');
  });

  it('a new leader finds the target knowing nothing of it: abort', async () => {
    const farm = await Farm.withMigration();
    await farm.submit({ type: 'migration.start', migrationId: 'm1', limit: 2 });
    const { port, told } = agents(farm, { status: 'MIGRATION_STAGE_ABORTED' });
    await run(farm, port);
    expect(told.some((t) => t.call === 'commit')).to.equal(false);
    expect(farm.m.phase).to.equal('MIGRATION_PHASE_FAILED');
  });

  it('a committed VM keeps its room on the source until the migration ends: a fallback finds it free', async () => {
    // Farm simulator seed 7: the target restarted after PREPARED, the leader committed, the VM's
    // room on the source was given to new VMs, then the refused commit fell back to the source,
    // which the farm's books now overcommitted (and the source still held the frozen copy).
    const farm = await Farm.withMigration();
    const s = farm.machine.state;
    const h1 = () => s.hosts.get('h1')!;
    const cost = vmMemoryCost(h1(), s.vms.get('v1')!.config);
    await farm.submit({ type: 'migration.start', migrationId: 'm1', limit: 2 });
    const prepared = { bytesTransferred: 1, rounds: 1, sha256: 'ab' };
    await farm.submit({
      type: 'migration.decide',
      migrationId: 'm1',
      decision: 'commit',
      reason: '',
      prepared,
    });
    expect(s.vms.get('v1')!.hostId).to.equal('h2');
    expect(hostLoad(s, h1()).memoryBytes, 'the source, committed').to.equal(cost);
    await farm.submit({ type: 'migration.fall_back', migrationId: 'm1', reason: 'the target restarted' });
    expect(hostLoad(s, h1()).memoryBytes, 'the source, fallen back').to.equal(cost);
    await farm.submit({ type: 'migration.finish', migrationId: 'm1', downtimeMs: 0 });
    expect(hostLoad(s, h1()).memoryBytes, 'the source, finished').to.equal(cost);
    expect(hostLoad(s, s.hosts.get('h2')!).memoryBytes, 'the target, finished').to.equal(0);
  });

  it('a committed migration that finishes frees the source', async () => {
    const farm = await Farm.withMigration();
    const s = farm.machine.state;
    await farm.submit({ type: 'migration.start', migrationId: 'm1', limit: 2 });
    const prepared = { bytesTransferred: 1, rounds: 1, sha256: 'ab' };
    await farm.submit({
      type: 'migration.decide',
      migrationId: 'm1',
      decision: 'commit',
      reason: '',
      prepared,
    });
    await farm.submit({ type: 'migration.finish', migrationId: 'm1', downtimeMs: 3 });
    expect(hostLoad(s, s.hosts.get('h1')!).memoryBytes).to.equal(0);
    expect(hostLoad(s, s.hosts.get('h2')!).memoryBytes).to.equal(
      vmMemoryCost(s.hosts.get('h2')!, s.vms.get('v1')!.config),
    );
  });

  it('a decision stands: cancel after commit is refused, a second decide too', async () => {
    const farm = await Farm.withMigration();
    await farm.submit({ type: 'migration.start', migrationId: 'm1', limit: 2 });
    const prepared = { bytesTransferred: 1, rounds: 1, sha256: 'ab' };
    await farm.submit({
      type: 'migration.decide',
      migrationId: 'm1',
      decision: 'commit',
      reason: '',
      prepared,
    });
    const err = await farm.submit({ type: 'migration.cancel', migrationId: 'm1' }).catch((e: ApiError) => e);
    expect((err as ApiError).message).to.match(/can no longer be cancelled/);
    const again = await farm
      .submit({ type: 'migration.decide', migrationId: 'm1', decision: 'abort', reason: 'x' })
      .catch((e: ApiError) => e);
    expect((again as ApiError).message).to.match(/decided already: commit/);
  });

  it('at most `limit` migrations under way per host, as source or target (MaximumVirtualMachineMigrations)', async () => {
    const farm = await Farm.withMigration();
    for (const [i, name] of ['b', 'c'].entries()) {
      await farm.submit({
        type: 'vm.create',
        vmId: name,
        opId: `oc${i}`,
        config: vmConfig({ name }),
        start: false,
        hostId: 'h1',
      });
      await farm.submit({ type: 'vm.place', placements: [{ vmId: name, hostId: 'h1', note: '' }] });
      await farm.submit({
        type: 'vm.observed',
        reports: [
          {
            vmId: name,
            hostId: 'h1',
            generation: 1,
            present: true,
            state: 'VM_STATE_RUNNING',
            heartbeat: 'HEARTBEAT_STATUS_OK',
            message: '',
            memoryAssignedBytes: 0,
            macs: [],
          },
        ],
      });
      await farm.submit({
        type: 'migration.request',
        migrationId: `m-${name}`,
        opId: `om${i}`,
        vmId: name,
        targetHostId: 'h2',
        kind: 'MIGRATION_KIND_QUICK',
        deadlineMs: 1_000,
      });
    }
    const s = farm.machine.state;
    expect(migrationsToStart(s, 2).map((m) => m.id)).to.deep.equal(['m1', 'm-b']);
    expect(migrationsToStart(s, 1).map((m) => m.id)).to.deep.equal(['m1']);
    for (const id of ['m1', 'm-b']) await farm.submit({ type: 'migration.start', migrationId: id, limit: 2 });
    const third = await farm
      .submit({ type: 'migration.start', migrationId: 'm-c', limit: 2 })
      .catch((e: ApiError) => e);
    expect((third as ApiError).message).to.equal(
      "host 'h1' takes part in 2 migrations already; the migration waits",
    );
    expect(migrationsToStart(s, 2)).to.deep.equal([]);
  });
});

describe('migrations: the order they are weighed in, and what a host has under way', () => {
  const record = migrationRecord;
  const under = { phase: 'MIGRATION_PHASE_TRANSFERRING' } as const;
  // Asked at one instant: a drain's two at one revision, one asked after them, two under way
  // (whose ids fall between and around the pending ones': comparing pending with under-way ones
  // by id and pending ones by revision was not an order), and one asked earlier than all.
  const records = [
    record('m-z', { revision: 10, targetHostId: 'h3' }),
    record('m-y', { revision: 10, targetHostId: 'h4' }),
    record('m-a', { revision: 12, targetHostId: 'h5' }),
    record('m-m', { ...under, revision: 11, targetHostId: 'h6' }),
    record('m-b', { ...under, revision: 9, targetHostId: 'h7' }),
    record('m-0', { startedAtMs: 500, revision: 20, targetHostId: 'h8' }),
  ];

  it('in one order whatever order the hosts first had a migration in: time asked, pending ones first by revision, then id', () => {
    const expected = ['m-0', 'm-y', 'm-z', 'm-a', 'm-b', 'm-m'];
    // Every rotation and the reverse of the records: each fills the state's per-host maps in
    // another order.
    for (let k = 0; k < records.length; k++)
      for (const order of [records.slice(k).concat(records.slice(0, k)), [...records].reverse()]) {
        const s = emptyState();
        for (const m of order) putMigration(s, m);
        expect(unfinishedMigrations(s).map((m) => m.id)).to.deep.equal(expected);
      }
  });

  it('a host counts the migrations under way it is the source or the target of, not pending or finished ones', () => {
    const s = emptyState();
    for (const m of records) putMigration(s, m);
    putMigration(s, record('m-in', { ...under, sourceHostId: 'h6', targetHostId: 'h1' }));
    putMigration(s, record('m-done', { ...under, targetHostId: 'h6' }));
    putMigration(s, record('m-done', { phase: 'MIGRATION_PHASE_COMPLETED', targetHostId: 'h6' }));
    // h1: the source of m-m and m-b, the target of m-in.
    expect(activeCount(s, 'h1')).to.equal(3);
    // h6: the target of m-m, the source of m-in; m-done finished.
    expect(activeCount(s, 'h6')).to.equal(2);
    expect(activeCount(s, 'h3')).to.equal(0);
    expect(activeCount(s, 'h9')).to.equal(0);
    // h1 is full at 3: only pending migrations with neither host at the limit may start.
    expect(migrationsToStart(s, 3).map((m) => m.id)).to.deep.equal([]);
    expect(migrationsToStart(s, 4).map((m) => m.id)).to.deep.equal(['m-0']);
  });
});
