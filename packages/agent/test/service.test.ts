import { expect } from 'chai';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, createLogger, hyperfarmProto, promiseClient, status, type pb } from '@hyperfarm/api';
import { agentConfigSchema, type AgentConfig } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { mib } from './helpers.js';
import { agentClient, collect, waitForState } from './process-helpers.js';

function testConfig(dataDir: string, over: Partial<AgentConfig> = {}): AgentConfig {
  const base = agentConfigSchema.parse({
    grpcAddress: '127.0.0.1:0',
    metricsAddress: '127.0.0.1:0',
    dataDir,
    logLevel: 'silent',
  });
  return { ...base, memoryBytes: base.memoryMib * 1024 * 1024, ...over };
}

const config = (name: string, over: Partial<pb.VmConfig> = {}): pb.VmConfig => ({
  name,
  processor: { count: 1 },
  memoryBytes: mib(64),
  guestOs: 'windows-server-2003-sp2-x86',
  integrationServices: true,
  workload: { bootMs: 20 },
  ...over,
});

describe('AgentService and MigrationService in one process', function () {
  this.timeout(30_000);
  let dir: string;
  let agent: RunningAgent | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hf-agent-svc-'));
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('multi-host mode: N hosts in one process, each with its id, folder and port', async () => {
    agent = await startAgent(
      testConfig(dir, { hosts: 3, idPrefix: 'sim' }),
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    expect(agent.hosts.map((h) => h.id)).to.deep.equal(['sim-1', 'sim-2', 'sim-3']);
    expect(new Set(agent.hosts.map((h) => h.grpcAddress)).size).to.equal(3);
    for (const h of agent.hosts) {
      const c = agentClient(h.grpcAddress);
      const info = await c.p.getHostInfo({});
      expect(info.id).to.equal(h.id);
      // The address each host advertises (for migrations) is the port its own server bound.
      expect(info.address).to.equal(h.grpcAddress);
      expect(info.limits!.maxVcpusPerVm).to.equal(4);
      c.raw.close();
    }
    expect(agent.hosts[1]!.host.settings.dataDir).to.equal(join(dir, 'sim-2'));
  });

  it('multi-host mode: one GrantLease renews the leases of hosts of the same process, each with its duration, and refuses others by name', async () => {
    agent = await startAgent(
      testConfig(dir, { hosts: 3, idPrefix: 'sim' }),
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    const c = agentClient(agent.hosts[0]!.grpcAddress);
    try {
      const answer = await c.p.grantLease({
        daemonId: 'd1',
        term: 3,
        durationMs: 4_000,
        more: [
          { hostId: 'sim-3', durationMs: 9_000 },
          { hostId: 'elsewhere-1', durationMs: 9_000 },
          { hostId: 'sim-1', durationMs: 9_000 },
        ],
      });
      expect(answer.siblingHostIds).to.deep.equal(['sim-2', 'sim-3']);
      expect(answer.more.map((r) => [r.hostId, r.error !== ''])).to.deep.equal([
        ['sim-3', false],
        ['elsewhere-1', true],
        ['sim-1', true],
      ]);
      expect(answer.more[1]!.error).to.include("'elsewhere-1'");
      expect(answer.more[0]!.host!.id).to.equal('sim-3');
      // Each lease as granted: sim-3's for 9 s, sim-2 (not asked) none, sim-1 its own 4 s.
      const lease = (i: number) => agent!.hosts[i]!.host.read((e) => e.lease.state());
      expect(lease(2)).to.deep.include({ daemonId: 'd1', term: 3 });
      expect(lease(2)!.expiresAtMs - lease(0)!.expiresAtMs).to.be.within(4_000, 5_100);
      expect(lease(1)).to.equal(undefined);
    } finally {
      c.raw.close();
    }
  });

  it('a brief GrantLease answers each host with its id and usage only, and still renews every lease', async () => {
    agent = await startAgent(
      testConfig(dir, { hosts: 2, idPrefix: 'sim' }),
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    const c = agentClient(agent.hosts[0]!.grpcAddress);
    try {
      const grant = {
        daemonId: 'd1',
        term: 1,
        durationMs: 4_000,
        more: [{ hostId: 'sim-2', durationMs: 4_000 }],
      };
      const brief = await c.p.grantLease({ ...grant, brief: true });
      for (const h of [brief.host!, brief.more[0]!.host!]) {
        expect(h.usage, 'usage').to.not.equal(null);
        // Nothing else of the host: no address, capacity, limits or MAC range.
        expect(h.address).to.equal('');
        expect(h.capacity).to.equal(null);
        expect(h.limits).to.equal(null);
        expect(Number(h.macPoolSize)).to.equal(0);
      }
      expect([brief.host!.id, brief.more[0]!.host!.id]).to.deep.equal(['sim-1', 'sim-2']);
      expect(brief.siblingHostIds).to.deep.equal(['sim-2']);
      for (const i of [0, 1])
        expect(agent.hosts[i]!.host.read((e) => e.lease.state())).to.deep.include({
          daemonId: 'd1',
          term: 1,
        });
      // Without `brief`, the whole host, as GetHostInfo gives it.
      const whole = await c.p.grantLease(grant);
      expect(whole.host!.address).to.equal(agent.hosts[0]!.grpcAddress);
      expect(whole.more[0]!.host!.capacity).to.not.equal(null);
    } finally {
      c.raw.close();
    }
  });

  it('a GrantLease answer says, for each host, the network configuration revision it applied last', async () => {
    agent = await startAgent(
      testConfig(dir, { hosts: 2, idPrefix: 'sim' }),
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    const c = agentClient(agent.hosts[0]!.grpcAddress);
    const raw = createClient(hyperfarmProto().hyperfarm.v1.NetworkService, agent.hosts[1]!.grpcAddress);
    const net = promiseClient(raw);
    const grant = {
      daemonId: 'd1',
      term: 1,
      durationMs: 4_000,
      more: [{ hostId: 'sim-2', durationMs: 4_000 }],
      brief: true,
    };
    try {
      // Nothing applied yet: revision 0 (what a restarted agent holds), not unset.
      const before = await c.p.grantLease(grant);
      expect(before.network).to.deep.equal({ revision: 0 });
      expect(before.more[0]!.network).to.deep.equal({ revision: 0 });
      await net.applyNetworkConfig({ revision: 7, switches: [], nlbClusters: [], peers: [] });
      const after = await c.p.grantLease(grant);
      expect(after.network).to.deep.equal({ revision: 0 });
      expect(after.more[0]!.network).to.deep.equal({ revision: 7 });
      // A refused host says nothing of its network.
      const refused = await c.p.grantLease({ ...grant, more: [{ hostId: 'elsewhere', durationMs: 1 }] });
      expect(refused.more[0]!.network).to.equal(null);
    } finally {
      raw.close();
      c.raw.close();
    }
  });

  it('CreateVms creates each VM as CreateVm would, answering each in order; one refused stops none of the others', async () => {
    agent = await startAgent(testConfig(dir), createLogger({ program: 't', id: 't', level: 'silent' }));
    const c = agentClient(agent.grpcAddress);
    try {
      await c.p.createVm({ vmId: 'vm-0', config: config('web-0'), generation: 1 });
      const answer = await c.p.createVms({
        creates: [
          { vmId: 'vm-1', config: config('web-1'), generation: 2 },
          // A name another VM of this host holds, as CreateVm refuses it.
          { vmId: 'vm-2', config: config('web-0'), generation: 2 },
          { vmId: 'vm-3', config: config('web-3', { memoryBytes: 0 }), generation: 2 },
          { vmId: 'vm-4', config: config('web-4'), generation: 3 },
        ],
      });
      const alone = await c.p
        .createVm({ vmId: 'vm-2', config: config('web-0'), generation: 2 })
        .catch((err: { code: number; details: string }) => err);
      expect(answer.results.map((r) => r.vm?.id ?? `${status[r.error!.code]}`)).to.deep.equal([
        'vm-1',
        status[(alone as { code: number }).code],
        'INVALID_ARGUMENT',
        'vm-4',
      ]);
      expect(answer.results[1]!.error!.message).to.equal((alone as { details: string }).details);
      expect(answer.results[2]!.error!.message).to.match(/memory_bytes/);
      expect(answer.results[3]!.vm!.status!.generation).to.equal(3);
      const held = await c.p.listVms({ pageSize: 10 });
      expect(held.vms.map((v) => `${v.id}:${v.config!.name}`)).to.deep.equal([
        'vm-0:web-0',
        'vm-1:web-1',
        'vm-4:web-4',
      ]);
      const none = await c.p
        .createVms({ creates: [] })
        .catch((err: { code: number; details: string }) => err);
      expect(none).to.include({ code: status.INVALID_ARGUMENT });
      expect((none as { details: string }).details).to.match(/creates/);
    } finally {
      c.raw.close();
    }
  });

  it("CreateVm and CreateVms with start: created and started under the create's generation; a start refused leaves the VM created, Off", async () => {
    agent = await startAgent(
      testConfig(dir, { memoryBytes: mib(4096) }),
      createLogger({ program: 't', id: 't', level: 'silent' }),
    );
    const c = agentClient(agent.grpcAddress);
    try {
      const one = await c.p.createVm({ vmId: 'vm-1', config: config('web-1'), generation: 4, start: true });
      expect(one.status).to.include({ state: 'VM_STATE_STARTING', generation: 4 });
      const answer = await c.p.createVms({
        creates: [
          { vmId: 'vm-2', config: config('web-2'), generation: 5, start: true },
          // More memory than the host has: created, but the start is refused.
          { vmId: 'vm-3', config: config('web-3', { memoryBytes: mib(3072) }), generation: 5, start: true },
          { vmId: 'vm-4', config: config('web-4'), generation: 5 },
        ],
      });
      expect(answer.results.map((r) => r.vm?.status?.state)).to.deep.equal([
        'VM_STATE_STARTING',
        'VM_STATE_OFF',
        'VM_STATE_OFF',
      ]);
      const refused = await c.p
        .changeVmState({ vmId: 'vm-3', action: 'VM_ACTION_START', generation: 5 })
        .catch((err: { code: number }) => err);
      expect(refused).to.have.property('code').that.is.a('number');
      await waitForState(c, 'vm-1', 'VM_STATE_RUNNING');
      await waitForState(c, 'vm-2', 'VM_STATE_RUNNING');
      const held = await c.p.listVms({ pageSize: 10 });
      expect(held.vms.map((v) => `${v.id}:${v.status!.state}`)).to.deep.equal([
        'vm-1:VM_STATE_RUNNING',
        'vm-2:VM_STATE_RUNNING',
        'vm-3:VM_STATE_OFF',
        'vm-4:VM_STATE_OFF',
      ]);
    } finally {
      c.raw.close();
    }
  });

  it('lists in pages, streams events with the initial state, refuses hardware changes while running, exports a Saved VM', async () => {
    agent = await startAgent(testConfig(dir), createLogger({ program: 't', id: 't', level: 'silent' }));
    const c = agentClient(agent.grpcAddress);
    const guests = await c.p.listGuestOs({});
    expect(guests.guestOs.map((g) => g.id)).to.include('sles-10-sp1-x64');
    for (let i = 0; i < 5; i++)
      await c.p.createVm({ vmId: `vm-${i}`, config: config(`web-${i}`), generation: 1 });
    const page1 = await c.p.listVms({ pageSize: 2 });
    const page2 = await c.p.listVms({ pageSize: 2, pageToken: page1.nextPageToken });
    const page3 = await c.p.listVms({ pageSize: 2, pageToken: page2.nextPageToken });
    expect([...page1.vms, ...page2.vms, ...page3.vms].map((v) => v.id)).to.deep.equal([
      'vm-0',
      'vm-1',
      'vm-2',
      'vm-3',
      'vm-4',
    ]);
    expect(page3.nextPageToken).to.equal('');

    const events: pb.AgentEvent__Output[] = [];
    const watch = c.raw.watchEvents({ initialState: true });
    watch.on('data', (e: pb.AgentEvent__Output) => events.push(e));
    watch.on('error', () => undefined);

    await c.p.changeVmState({ vmId: 'vm-0', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(c, 'vm-0', 'VM_STATE_RUNNING');
    const refused = await c.p
      .updateVm({
        vmId: 'vm-0',
        config: config('web-0', { memoryBytes: mib(128) }),
        updateMask: { paths: ['memory_bytes'] },
        generation: 1,
      })
      .catch((e: { code: number; details: string }) => e);
    expect(refused).to.include({ code: status.FAILED_PRECONDITION });
    expect((refused as { details: string }).details).to.equal(
      "cannot change memory_bytes of VM 'web-0': it is Running; turn it off first",
    );
    const renamed = await c.p.updateVm({
      vmId: 'vm-0',
      config: config('front-0'),
      updateMask: { paths: ['name'] },
      generation: 1,
    });
    expect(renamed.config!.name).to.equal('front-0');

    await c.p.changeVmState({ vmId: 'vm-0', action: 'VM_ACTION_SAVE', generation: 1 });
    await waitForState(c, 'vm-0', 'VM_STATE_SAVED');
    const hash = (await c.p.getVmStateHash({ vmId: 'vm-0' })).sha256;
    const proto = hyperfarmProto().hyperfarm.v1;
    const mig = createClient(proto.MigrationService, agent.grpcAddress);
    const chunks = await collect(mig.exportVm({ vmId: 'vm-0', generation: 1 }));
    expect(chunks[0]!.header!.vmId).to.equal('vm-0');
    expect(chunks[chunks.length - 1]!.trailer!.sha256).to.equal(hash);
    mig.close();

    const scrape = await (await fetch(`http://${agent.metricsAddress}/metrics`)).text();
    expect(scrape).to.match(/hyperfarm_agent_vms\{[^}]*host="agent-1"[^}]*state="saved"[^}]*\} 1/);
    expect(scrape).to.match(/hyperfarm_agent_vms\{[^}]*state="off"[^}]*\} 4/);

    watch.cancel();
    expect(events.filter((e) => e.message === 'initial state')).to.have.length(5);
    const types = events.map((e) => e.type);
    expect(types).to.include('state_changed');
    expect(events.some((e) => /Starting -> Running/.test(e.message))).to.equal(true);
    c.raw.close();
  });

  it('quick migration of a Saved VM moves its saved state; the target keeps it Saved with the same hash', async () => {
    const logger = createLogger({ program: 't', id: 't', level: 'silent' });
    agent = await startAgent(testConfig(join(dir, 'a'), { id: 'src' }), logger);
    const target = await startAgent(testConfig(join(dir, 'b'), { id: 'dst' }), logger);
    try {
      const c = agentClient(agent.grpcAddress);
      const disks = [
        { controller: 'DISK_CONTROLLER_IDE' as const, path: 'boot.vhd', createSizeBytes: mib(2) },
      ];
      await c.p.createVm({ vmId: 'vm-s', config: config('saved-1', { disks }), generation: 3 });
      await c.p.changeVmState({ vmId: 'vm-s', action: 'VM_ACTION_START', generation: 3 });
      await waitForState(c, 'vm-s', 'VM_STATE_RUNNING');
      await c.p.changeVmState({ vmId: 'vm-s', action: 'VM_ACTION_SAVE', generation: 3 });
      await waitForState(c, 'vm-s', 'VM_STATE_SAVED');
      const hash = (await c.p.getVmStateHash({ vmId: 'vm-s' })).sha256;
      const progress = await collect(
        c.raw.migrateOut({
          vmId: 'vm-s',
          generation: 3,
          targetAddress: target.grpcAddress,
          kind: 'MIGRATION_KIND_QUICK',
        }),
      );
      expect(progress[progress.length - 1]!.verifiedSha256).to.equal(hash);
      const t = agentClient(target.grpcAddress);
      const moved = await t.p.getVm({ vmId: 'vm-s' });
      expect(moved.status!.state).to.equal('VM_STATE_SAVED');
      expect(moved.status!.generation).to.equal(4);
      expect((await t.p.getVmStateHash({ vmId: 'vm-s' })).sha256).to.equal(hash);
      expect(existsSync(join(dir, 'b', 'vms', 'vm-s', 'boot.vhd'))).to.equal(true);
      expect(await c.p.getVm({ vmId: 'vm-s' }).catch((e: { code: number }) => e.code)).to.equal(
        status.NOT_FOUND,
      );
      await t.p.changeVmState({ vmId: 'vm-s', action: 'VM_ACTION_START', generation: 4 });
      await waitForState(t, 'vm-s', 'VM_STATE_RUNNING');
      expect((await t.p.getVmStateHash({ vmId: 'vm-s' })).sha256).to.equal(hash);
      c.raw.close();
      t.raw.close();
    } finally {
      await target.stop();
    }
  });
});
