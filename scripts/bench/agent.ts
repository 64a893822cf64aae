/**
 * Benchmark of the host agent (`npm run bench:agent`). Prints figures as it goes and, as its last
 * line, one JSON object. Run with --expose-gc for steadier memory figures.
 *
 *   VMs per host instance and memory per idle VM   (1000 idle VMs running in one host)
 *   operations per second                          (engine alone; through gRPC with LevelDB syncs)
 *   save and restore throughput in MB/s            (against dd of the same size, same run)
 *   hosts per process and memory per idle host     (multi-host mode)
 *
 * Environment: BENCH_SAVE_MIB (default 512), BENCH_VMS (1000), BENCH_HOSTS (100).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type pb } from '@hyperfarm/api';
import { agentConfigSchema, type AgentConfig } from '../../packages/agent/src/config.js';
import { AgentHost } from '../../packages/agent/src/edge/agent-host.js';
import { HypervisorEngine } from '../../packages/agent/src/engine/engine.js';
import { LIMITS_PROFILES } from '../../packages/agent/src/limits.js';
import { startAgent } from '../../packages/agent/src/server.js';
import { agentClient } from '../../packages/agent/test/process-helpers.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const env = (name: string, dflt: number): number => Number(process.env[name] ?? dflt);
const SAVE_MIB = env('BENCH_SAVE_MIB', 512);
const VMS = env('BENCH_VMS', 1000);
const HOSTS = env('BENCH_HOSTS', 100);
const silent = createLogger({ program: 'bench', id: 'bench', level: 'silent' });
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
const gc = (): void => (globalThis as { gc?: () => void }).gc?.();
const heapUsed = (): number => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const rss = (): number => {
  gc();
  return process.memoryUsage().rss;
};

const root = mkdtempSync(join(tmpdir(), 'hf-bench-agent-'));
const say = (s: string): void => void process.stdout.write(`${s}\n`);

function settings(dir: string, profile: '2008' | '2012', memoryBytes: number) {
  return {
    id: 'bench-host',
    dataDir: dir,
    logicalProcessors: 64,
    memoryBytes,
    rootReserveBytes: 2 * GIB,
    perVmOverheadBytes: 32 * MIB,
    limits: LIMITS_PROFILES[profile],
    macPoolStart: '00-15-5D-00-00-00',
    macPoolSize: 65536,
    leaseMs: 10_000,
  };
}

const idleVm = (name: string, memoryBytes = 64 * MIB): pb.VmConfig => ({
  name,
  processor: { count: 1 },
  memoryBytes,
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC' }],
  workload: { bootMs: 60_000, cpuDemandPercent: 1 },
});

async function idleVms(): Promise<{ vms: number; kib: number; tickMs: number }> {
  const clock = { t: 0 };
  const host = await AgentHost.open({
    settings: settings(join(root, 'idle'), '2012', 1024 * GIB),
    logger: silent,
    clock: () => clock.t,
    tickMs: 0,
  });
  const before = heapUsed();
  for (let i = 0; i < VMS; i++) {
    await host.createVm(`vm-${i}`, idleVm(`idle-${i}`), 1);
    await host.mutate((e) => e.power.change(`vm-${i}`, 'VM_ACTION_START'));
  }
  clock.t += 61_000;
  host.pump();
  await host.persisted();
  const running = host.read((e) => e.usage()).runningVms;
  const kib = (heapUsed() - before) / 1024 / VMS;
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) {
    clock.t += 100;
    host.pump();
  }
  const tickMs = (performance.now() - t0) / 100;
  await host.stop();
  say(
    `idle VMs: ${running} running in one host instance (2012 profile; 2008 allows ${LIMITS_PROFILES['2008'].maxRunningVmsPerHost})`,
  );
  say(
    `  heap per idle running VM: ${round(kib)} KiB; one 100 ms engine step for all of them: ${round(tickMs, 2)} ms`,
  );
  return { vms: running, kib, tickMs };
}

function engineOps(): number {
  const e = new HypervisorEngine({
    ...settings('', '2012', 1024 * GIB),
    hostId: 'bench',
    startMs: 0,
    seed: 1,
  });
  for (let i = 0; i < 100; i++)
    e.vms.create(`vm-${i}`, { ...idleVm(`e-${i}`), workload: { bootMs: 100 } }, 1);
  const actions = ['VM_ACTION_START', 'VM_ACTION_PAUSE', 'VM_ACTION_RESUME', 'VM_ACTION_TURN_OFF'] as const;
  let ops = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1_000) {
    for (const a of actions) {
      for (let i = 0; i < 100; i++) e.power.change(`vm-${i}`, a);
      ops += 100;
      e.tick(200); // let Starting, Pausing and Resuming finish
      e.takeEffects();
      e.takeEvents();
      e.takeChanges();
    }
  }
  const perS = ops / ((performance.now() - t0) / 1000);
  say(`engine operations: ${Math.round(perS)} state changes/s (no I/O)`);
  return perS;
}

async function grpcOps(): Promise<{ sequential: number; concurrent: number }> {
  const config: AgentConfig = {
    ...agentConfigSchema.parse({
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(root, 'grpc'),
      logLevel: 'silent',
      memoryMib: 1024 * 1024,
    }),
    memoryBytes: 1024 * GIB,
  };
  const agent = await startAgent(config, silent);
  const c = agentClient(agent.grpcAddress);
  for (let i = 0; i < 16; i++) {
    await c.p.createVm({ vmId: `vm-${i}`, config: idleVm(`g-${i}`), generation: 1 });
  }
  // Start then turn off, over and over: both are accepted at once (Starting lasts the boot time),
  // and each is a state change synced to LevelDB before the answer; plus a GetVm read.
  const run = async (workers: number, ms: number) => {
    let ops = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: workers }, async (_v, w) => {
        while (performance.now() - t0 < ms) {
          await c.p.changeVmState({ vmId: `vm-${w}`, action: 'VM_ACTION_START', generation: 1 });
          await c.p.changeVmState({ vmId: `vm-${w}`, action: 'VM_ACTION_TURN_OFF', generation: 1 });
          await c.p.getVm({ vmId: `vm-${w}` });
          ops += 3;
        }
      }),
    );
    return ops / ((performance.now() - t0) / 1000);
  };
  const sequential = await run(1, 1_500);
  const concurrent = await run(16, 1_500);
  c.raw.close();
  await agent.stop();
  say(
    `gRPC operations (Start/TurnOff synced to LevelDB, GetVm): ${Math.round(sequential)}/s with 1 caller, ${Math.round(concurrent)}/s with 16`,
  );
  return { sequential, concurrent };
}

async function saveRestore(): Promise<{ save: number; restore: number; dd: number; mib: number }> {
  const clock = { t: 0 };
  const host = await AgentHost.open({
    settings: settings(join(root, 'save'), '2008', 64 * GIB),
    logger: silent,
    clock: () => clock.t,
    tickMs: 0,
  });
  const memoryBytes = Math.ceil((SAVE_MIB * 1.1) / 64) * 64 * MIB;
  await host.createVm(
    'big',
    {
      ...idleVm('big', memoryBytes),
      workload: {
        bootMs: 60_000,
        workingSetBytes: SAVE_MIB * MIB,
        dirtyPagesPerSecond: 10_000_000,
        cpuDemandPercent: 100,
      },
    },
    1,
  );
  await host.mutate((e) => e.power.change('big', 'VM_ACTION_START'));
  clock.t += 60_000;
  host.pump();
  clock.t += 1_000; // the guest touches (nearly) its whole working set
  host.pump();
  await host.mutate((e) =>
    e.vms.update('big', { ...idleVm('big', memoryBytes), workload: { bootMs: 60_000 } }, ['workload'], 0),
  );
  const hash = host.read((e) => e.vms.stateHash('big'));
  let t0 = performance.now();
  await host.mutate((e) => e.power.change('big', 'VM_ACTION_SAVE'));
  await host.settle();
  const saveS = (performance.now() - t0) / 1000;
  const bytes = statSync(host.savedStatePath('big')).size;
  t0 = performance.now();
  await host.mutate((e) => e.power.change('big', 'VM_ACTION_START'));
  await host.settle();
  const restoreS = (performance.now() - t0) / 1000;
  const after = host.read((e) => e.vms.stateHash('big'));
  if (after.sha256 !== hash.sha256) throw new Error('restore changed the state hash');
  await host.stop();

  const mib = Math.ceil(bytes / MIB);
  const ddFile = join(root, 'dd.bin');
  t0 = performance.now();
  execFileSync('dd', ['if=/dev/zero', `of=${ddFile}`, 'bs=1M', `count=${mib}`, 'conv=fsync'], {
    stdio: 'ignore',
  });
  const ddS = (performance.now() - t0) / 1000;
  rmSync(ddFile, { force: true });
  const mb = bytes / 1e6;
  const r = { save: mb / saveS, restore: mb / restoreS, dd: (mib * MIB) / 1e6 / ddS, mib };
  say(
    `save/restore of ${round(mb)} MB (${hash.residentPages} resident pages of a ${memoryBytes / MIB} MiB VM; hash equal after restore):`,
  );
  say(
    `  save ${round(r.save)} MB/s (fsynced), restore ${round(r.restore)} MB/s (every page checked), dd ${round(r.dd)} MB/s (conv=fsync, ${mib} MiB)`,
  );
  return r;
}

/** Quick and live migration of a busy VM between two hosts in this process, over loopback gRPC. */
async function migrations(): Promise<Record<string, { mbS: number; downtimeMs: number; rounds: number }>> {
  // Each host its own slice of the MAC space, as in a farm (a MAC moves with its VM).
  const mk = (name: string, macPoolStart: string): AgentConfig => ({
    ...agentConfigSchema.parse({
      id: name,
      macPoolStart,
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(root, name),
      logLevel: 'silent',
    }),
    memoryBytes: 32 * GIB,
  });
  const a = await startAgent(mk('mig-a', '00-15-5D-0A-00-00'), silent);
  const b = await startAgent(mk('mig-b', '00-15-5D-0B-00-00'), silent);
  const out: Record<string, { mbS: number; downtimeMs: number; rounds: number }> = {};
  try {
    const ca = agentClient(a.grpcAddress);
    for (const kind of ['MIGRATION_KIND_QUICK', 'MIGRATION_KIND_LIVE'] as const) {
      const id = `vm-${kind}`;
      await ca.p.createVm({
        vmId: id,
        generation: 1,
        config: {
          ...idleVm(id.toLowerCase().replace(/_/g, '-'), GIB),
          workload: {
            bootMs: 10,
            workingSetBytes: 256 * MIB,
            dirtyPagesPerSecond: 200_000,
            cpuDemandPercent: 50,
          },
        },
      });
      await ca.p.changeVmState({ vmId: id, action: 'VM_ACTION_START', generation: 1 });
      await new Promise((r) => setTimeout(r, 1_500)); // the guest touches its working set
      // Then it settles to a steady 1,000 dirty pages/s (4 MB/s), what pre-copy has to beat.
      await ca.p.updateVm({
        vmId: id,
        generation: 1,
        updateMask: { paths: ['workload'] },
        config: {
          workload: {
            bootMs: 10,
            workingSetBytes: 256 * MIB,
            dirtyPagesPerSecond: 1_000,
            cpuDemandPercent: 50,
          },
        },
      });
      const resident = (await ca.p.getVmStateHash({ vmId: id })).residentPages;
      const t0 = performance.now();
      const progress = await new Promise<pb.MigrationProgress__Output[]>((resolve, reject) => {
        const got: pb.MigrationProgress__Output[] = [];
        const s = ca.raw.migrateOut({
          vmId: id,
          generation: 1,
          targetAddress: b.grpcAddress,
          kind,
          targetGeneration: 2,
        });
        s.on('data', (m: pb.MigrationProgress__Output) => got.push(m));
        s.on('error', reject);
        s.on('end', () => resolve(got));
      });
      const s = (performance.now() - t0) / 1000;
      const last = progress[progress.length - 1]!;
      const label = kind === 'MIGRATION_KIND_QUICK' ? 'quick' : 'live';
      out[label] = { mbS: last.bytesTransferred / 1e6 / s, downtimeMs: last.downtimeMs, rounds: last.round };
      say(
        `${label} migration of a 1 GiB VM (${resident} resident pages, 1,000 dirty pages/s): ${round(last.bytesTransferred / 1e6)} MB in ${round(s, 2)} s (${round(out[label].mbS)} MB/s), ${last.round} rounds, downtime ${last.downtimeMs} ms, hash verified`,
      );
    }
    ca.raw.close();
  } finally {
    await a.stop();
    await b.stop();
  }
  return out;
}

async function hostsPerProcess(): Promise<{ hosts: number; kib: number }> {
  const config: AgentConfig = {
    ...agentConfigSchema.parse({
      grpcAddress: '127.0.0.1:0',
      metricsAddress: '127.0.0.1:0',
      dataDir: join(root, 'multi'),
      logLevel: 'silent',
      hosts: HOSTS,
    }),
    memoryBytes: 32 * GIB,
  };
  const before = rss();
  const t0 = performance.now();
  const agent = await startAgent(config, silent);
  const startS = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 500));
  const kib = (rss() - before) / 1024 / agent.hosts.length;
  const hosts = agent.hosts.length;
  await agent.stop();
  say(
    `multi-host mode: ${hosts} idle hosts in one process, started in ${round(startS, 2)} s, ${round(kib)} KiB RSS each (gRPC server + LevelDB + engine)`,
  );
  return { hosts, kib };
}

try {
  say(`bench:agent on ${cpus().length} cores, ${new Date().toISOString()}`);
  const idle = await idleVms();
  const eops = engineOps();
  const gops = await grpcOps();
  const sr = await saveRestore();
  const mig = await migrations();
  const multi = await hostsPerProcess();
  say(
    JSON.stringify({
      save_mb_s: round(sr.save),
      restore_mb_s: round(sr.restore),
      dd_mb_s: round(sr.dd),
      save_size_mib: sr.mib,
      idle_vm_kib: round(idle.kib),
      vms_per_host: idle.vms,
      engine_step_ms_all_vms: round(idle.tickMs, 2),
      engine_ops_s: Math.round(eops),
      grpc_ops_s: Math.round(gops.sequential),
      grpc_ops_s_16_callers: Math.round(gops.concurrent),
      quick_migration_mb_s: round(mig['quick']!.mbS),
      quick_migration_downtime_ms: mig['quick']!.downtimeMs,
      live_migration_mb_s: round(mig['live']!.mbS),
      live_migration_downtime_ms: mig['live']!.downtimeMs,
      live_migration_rounds: mig['live']!.rounds,
      hosts_per_process: multi.hosts,
      idle_host_kib: round(multi.kib),
      cores: cpus().length,
    }),
  );
} finally {
  rmSync(root, { recursive: true, force: true });
}
