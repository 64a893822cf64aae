import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type pb } from '@hyperfarm/api';
import { agentConfigSchema } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { mib } from './helpers.js';
import { agentClient, collect, waitUntil } from './process-helpers.js';

/**
 * Live migration between two agents in one process (real gRPC on loopback): what each round
 * sends, auto-converge, and the memory hash on arrival.
 */

const PAGE = 4096;
/** A packed page on the wire: its (number, version) record and its 4 KiB. */
const PACKED_PAGE = PAGE + 8;

type Client = ReturnType<typeof agentClient>;

describe('live migration rounds and auto-converge (two agents, one process)', function () {
  this.timeout(60_000);
  let dir: string;
  const agents: RunningAgent[] = [];
  const clients: Client[] = [];

  async function start(id: string, over: { migrationDataChannel?: boolean } = {}) {
    const base = agentConfigSchema.parse({
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(dir, id),
      logLevel: 'silent',
      id,
      ...over,
    });
    const agent = await startAgent(
      { ...base, memoryBytes: base.memoryMib * 1024 * 1024 },
      createLogger({ program: 't', id, level: 'silent' }),
    );
    agents.push(agent);
    const c = agentClient(agent.grpcAddress);
    clients.push(c);
    return { agent, c };
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hf-mig-live-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.raw.close();
    for (const a of agents.splice(0)) await a.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A running 32 MiB VM whose working set (16 MiB) has been written; then it dirties `rate`. */
  async function runningVm(c: Client, vmId: string, rate: number): Promise<number> {
    const workload = {
      bootMs: 10,
      workingSetBytes: mib(16),
      dirtyPagesPerSecond: 200_000,
      cpuDemandPercent: 50,
    };
    const config: pb.VmConfig = {
      name: vmId,
      processor: { count: 1 },
      memoryBytes: mib(32),
      guestOs: 'windows-server-2008-x64',
      integrationServices: true,
      workload,
    };
    await c.p.createVm({ vmId, config, generation: 1 });
    await c.p.changeVmState({ vmId, action: 'VM_ACTION_START', generation: 1 });
    let resident = 0;
    await waitUntil('the working set to be written', async () => {
      resident = (await c.p.getVmStateHash({ vmId })).residentPages;
      return resident === mib(16) / PAGE;
    });
    await c.p.updateVm({
      vmId,
      generation: 1,
      config: { ...config, workload: { ...workload, dirtyPagesPerSecond: rate } },
      updateMask: { paths: ['workload'] },
    });
    return resident;
  }

  const migrate = (c: Client, vmId: string, target: string, over: Partial<pb.MigrateOutRequest> = {}) =>
    collect(
      c.raw.migrateOut({
        vmId,
        generation: 1,
        targetAddress: target,
        kind: 'MIGRATION_KIND_LIVE',
        targetGeneration: 2,
        migrationId: `m-${vmId}`,
        ...over,
      }),
    );

  it('a guest that writes nothing: each page crosses once, and the target holds the memory the source had', async () => {
    const src = await start('src');
    const dst = await start('dst');
    const resident = await runningVm(src.c, 'idle', 0);
    const before = await src.c.p.getVmStateHash({ vmId: 'idle' });
    const progress = await migrate(src.c, 'idle', dst.agent.grpcAddress);
    const done = progress[progress.length - 1]!;
    expect(done.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    // Round 0 copies every written page; nothing is dirty after it, so the stop-and-copy round
    // sends no page again: the bytes are the pages once, plus the device state.
    expect(done.round).to.equal(1);
    expect(done.bytesTransferred).to.be.at.least(resident * PACKED_PAGE);
    expect(done.bytesTransferred).to.be.below(resident * PACKED_PAGE + 64 * 1024);
    expect(done.verifiedSha256).to.equal(before.sha256);
    const arrived = await dst.c.p.getVmStateHash({ vmId: 'idle' });
    expect(arrived.sha256).to.equal(before.sha256);
    expect(arrived.residentPages).to.equal(resident);
    const status = await dst.c.p.getMigrationStatus({ migrationId: 'm-idle' });
    expect(status.stage).to.equal('MIGRATION_STAGE_COMMITTED');
    expect(status.downtimeMs).to.be.at.least(0);
  });

  it('without a data connection on either side, the stream stays on gRPC and the memory arrives the same', async () => {
    const src = await start('src');
    const plain = await start('plain', { migrationDataChannel: false });
    await runningVm(src.c, 'to-plain', 0);
    const before = await src.c.p.getVmStateHash({ vmId: 'to-plain' });
    const there = (await migrate(src.c, 'to-plain', plain.agent.grpcAddress)).pop()!;
    expect(there.verifiedSha256).to.equal(before.sha256);
    // And back: this time the source offers no connection (the target asks for none either).
    const back = (
      await collect(
        plain.c.raw.migrateOut({
          vmId: 'to-plain',
          generation: 2,
          targetAddress: src.agent.grpcAddress,
          kind: 'MIGRATION_KIND_QUICK',
          targetGeneration: 3,
          migrationId: 'm-back',
        }),
      )
    ).pop()!;
    expect(back.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    expect((await src.c.p.getVmStateHash({ vmId: 'to-plain' })).sha256).to.equal(before.sha256);
  });

  it('a guest that dirties faster than the copy is throttled (auto-converge); without it, it is not', async () => {
    const src = await start('src');
    const dst = await start('dst');
    // Every page of the working set is written again within a few milliseconds: no round can
    // converge, and a 1 ms downtime limit never lets the pre-copy stop on its own.
    const hot = { downtimeLimitMs: 1, maxRounds: 6 };
    await runningVm(src.c, 'hot', 5_000_000);
    const done = (await migrate(src.c, 'hot', dst.agent.grpcAddress, hot)).pop()!;
    expect(done.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    const source = await src.c.p.getMigrationStatus({ migrationId: 'm-hot' });
    expect(source.rounds).to.equal(6);
    // Two high rounds give 20%, each two more 10% more (QEMU's cpu-throttle defaults).
    expect(source.throttlePercent).to.be.at.least(20);
    // The VM runs on its target at full speed: the throttle belonged to the migration.
    const moved = await dst.c.p.getVm({ vmId: 'hot' });
    expect(moved.status!.state).to.equal('VM_STATE_RUNNING');

    // As the daemon drives it: the target pulls (MigrateIn, which carries the switch), then both
    // sides are told to commit.
    await runningVm(src.c, 'hot-free', 5_000_000);
    const id = 'm-hot-free';
    await collect(
      dst.c.raw.migrateIn({
        migrationId: id,
        vmId: 'hot-free',
        sourceAddress: src.agent.grpcAddress,
        sourceGeneration: 1,
        targetGeneration: 2,
        kind: 'MIGRATION_KIND_LIVE',
        ...hot,
        noAutoConverge: true,
      }),
    );
    const resolve = { migrationId: id, vmId: 'hot-free', targetGeneration: 2, reason: '' };
    await dst.c.p.commitMigration({ ...resolve, role: 'MIGRATION_ROLE_TARGET' });
    await src.c.p.commitMigration({ ...resolve, role: 'MIGRATION_ROLE_SOURCE' });
    const free = await src.c.p.getMigrationStatus({ migrationId: id });
    expect(free.rounds).to.equal(6);
    expect(free.throttlePercent).to.equal(0);
  });
});
