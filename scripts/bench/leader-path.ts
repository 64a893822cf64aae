/**
 * bench:leader-path — the leader's CPU per VM created, from the create path to the create's
 * report in the log, in one process: the create path's group commit (plan, vm.create_compact),
 * the controllers (reconciler, observed-state controller, reports) and agents that answer at
 * once, over a log in memory that commits each entry `--commit-ms` after it is proposed (a
 * loaded daemon's fsync and replication). No gRPC, no Raft, no other process: what is left is the
 * leader's own work per create, in CPU time (process.cpuUsage), so a loaded machine shifts it
 * less than a run of real daemons.
 *
 *   node --import tsx scripts/bench/leader-path.ts [--hosts 1000] [--vms 10000] [--batch 500] [--commit-ms 30]
 *
 * Last line: {"leader_us_per_vm", "entries", "reports_per_vm", ...}.
 */
import { Command } from 'commander';
import { createLogger, normalizeVmConfig, type pb } from '@hyperfarm/api';
import type { AgentPort } from '../../packages/daemon/src/edge/agent-port.js';
import { ControllerRunner } from '../../packages/daemon/src/edge/controller-runner.js';
import type { FarmContext } from '../../packages/daemon/src/edge/farm-context.js';
import { Proposer } from '../../packages/daemon/src/edge/proposer.js';
import { realTimers } from '../../packages/daemon/src/edge/timers.js';
import { VmCreator } from '../../packages/daemon/src/edge/vm-creator.js';
import { applyEntry, FarmStateMachine, type VmConfig } from '../../packages/daemon/src/fsm/index.js';
import { benchHostCommand } from './bench-hosts.js';

const opts = new Command('bench:leader-path')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--vms <n>', 'VMs to create', Number, 10_000)
  .option('--batch <n>', 'creates a turn (one CreateVms call)', Number, 500)
  .option('--commit-ms <n>', 'from proposal to commit', Number, 30)
  .option('--runs <n>', 'runs, each on a fresh farm; the least CPU is reported', Number, 3)
  .parse()
  .opts<{ hosts: number; vms: number; batch: number; commitMs: number; runs: number }>();

const MIB = 1024 ** 2;
const logger = createLogger({ program: 'bench', id: 'leader-path', level: 'silent' });

/** Agents that answer at once: a create leaves the VM Off on its host, under its generation. */
function agents(): AgentPort {
  let revision = 0;
  const unused = () => Promise.reject(new Error('not used by this bench'));
  return {
    grantLease: () => Promise.resolve({} as pb.GrantLeaseResponse__Output),
    listVms: () => Promise.resolve([]),
    watchEvents: () => ({ cancel: () => undefined }),
    createVm: (_host: unknown, vmId: string, config: pb.VmConfig, generation: number) =>
      Promise.resolve({
        id: vmId,
        revision: ++revision,
        config,
        status: { state: 'VM_STATE_OFF', generation, heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT', message: '' },
      } as unknown as pb.Vm__Output),
    changeVmState: unused,
    close: () => undefined,
  } as unknown as AgentPort;
}

const config = (i: number): VmConfig =>
  normalizeVmConfig({
    name: `vm-${i}`,
    processor: { count: 1 },
    memoryBytes: 512 * MIB,
    guestOs: 'windows-server-2008-x64',
    integrationServices: true,
  }) as VmConfig;

async function run(): Promise<{ cpuUs: number; entries: number; reports: number }> {
  const machine = new FarmStateMachine();
  const cmds = Array.from({ length: opts.hosts }, (_, i) => ({ rid: `h${i}`, t: 1, ...benchHostCommand(i) }));
  const r = applyEntry(machine.state, Buffer.from(JSON.stringify({ v: 1, cmds })));
  if (!r.results.every((x) => x.ok)) throw new Error(`hosts not registered: ${JSON.stringify(r.results[0])}`);
  let index = 0;
  // Counted after the measure, not to weigh in it.
  const proposed: Uint8Array[] = [];
  const raft = {
    propose(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
      proposed.push(data);
      return new Promise((resolve) =>
        setTimeout(() => {
          index++;
          resolve({ index, result: machine.apply(data, index) });
        }, opts.commitMs),
      );
    },
  };
  const proposer = new Proposer(raft, machine, logger);
  const scheduler = { policy: 'binpack' as const, vcpuRatio: 8 };
  const runner = new ControllerRunner(machine, proposer, agents(), realTimers, logger, {
    daemonId: 'd1',
    liveness: { intervalMs: 60_000, suspectAfterMs: 120_000, downAfterMs: 300_000 },
    leaseMs: 300_000,
    leaseMarginMs: 500,
    scheduler,
    placementBatch: 2_000,
    maxCalls: 256,
    maxMigrationsPerHost: 2,
  });
  runner.start(1);
  const creator = new VmCreator({ machine, proposer, runner, logger, scheduler } as unknown as FarmContext);
  let done = 0;
  machine.onApplied((a) => {
    for (const e of a.events)
      if (e.kind === 'RESOURCE_KIND_OPERATION' && e.type === 'EVENT_TYPE_PUT' && e.resource.done) done++;
  });
  // The agents' inventories are read (listed) before the controllers trust them.
  await new Promise((res) => setTimeout(res, 100));
  const t0 = process.cpuUsage();
  for (let first = 0; first < opts.vms; first += opts.batch) {
    const n = Math.min(opts.batch, opts.vms - first);
    await Promise.all(
      Array.from({ length: n }, (_, k) =>
        creator.create({
          vmId: `vm-${first + k}`,
          opId: `op-${first + k}`,
          config: config(first + k),
          start: false,
          hostId: '',
          warning: '',
        }),
      ),
    );
  }
  for (const deadline = Date.now() + 120_000; done < opts.vms;) {
    if (Date.now() > deadline) throw new Error(`${done} of the creates finished`);
    await new Promise((res) => setTimeout(res, 20));
  }
  const used = process.cpuUsage(t0);
  runner.stop();
  let reports = 0;
  for (const data of proposed)
    for (const c of (
      JSON.parse(Buffer.from(data).toString('utf8')) as { cmds: { type: string; reports?: unknown[] }[] }
    ).cmds)
      if (c.type === 'vm.observed') reports += c.reports!.length;
  return { cpuUs: used.user + used.system, entries: proposed.length, reports };
}

const results = [];
for (let i = 0; i < opts.runs; i++) {
  const r = await run();
  results.push(r);
  process.stdout.write(
    `run ${i + 1}: ${(r.cpuUs / opts.vms).toFixed(1)} µs CPU per VM, ${r.entries} entries, ${(r.reports / opts.vms).toFixed(2)} reports per VM\n`,
  );
}
const best = results.reduce((a, b) => (b.cpuUs < a.cpuUs ? b : a));
process.stdout.write(
  `${JSON.stringify({
    leader_us_per_vm: Math.round((best.cpuUs / opts.vms) * 10) / 10,
    entries: best.entries,
    reports_per_vm: Math.round((best.reports / opts.vms) * 100) / 100,
    commit_ms: opts.commitMs,
    hosts: opts.hosts,
    vms: opts.vms,
  })}\n`,
);
process.exit(0);
