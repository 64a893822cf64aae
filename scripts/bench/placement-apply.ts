/**
 * bench:placement-apply — the CPU one replica spends per VM created and placed, without gRPC,
 * Raft or a shared machine's scheduling in the figure: a farm state of 1,000 hosts, then the
 * entries the leader's create path writes (a CreateVms turn of `--batch` creates with the plan
 * that places them), and the agents' reports that the VMs exist, each encoded, applied and its
 * results encoded as FarmStateMachine does on the replica whose proposer waits (with
 * `--follower`, not encoded: as on a follower). CPU time (process.cpuUsage), not wall time, so
 * the figure holds on a loaded machine.
 *
 *   node --import tsx scripts/bench/placement-apply.ts [--hosts 1000] [--vms 10000] [--batch 500] [--follower]
 *
 * Last line: {"apply_us_per_vm", "plan_us_per_vm", "encode_us_per_vm", "entry_bytes_per_vm", ...}.
 */
import { Command } from 'commander';
import { normalizeVmConfig } from '@hyperfarm/api';
import {
  FarmStateMachine,
  type Command as FarmCommand,
  type CommandBody,
  type VmConfig,
} from '../../packages/daemon/src/fsm/index.js';
import { createCommands } from '../../packages/daemon/src/edge/vm-creator.js';
import { entryBytes, stamped } from '../../packages/daemon/src/edge/proposer.js';
import { benchHostCommand } from './bench-hosts.js';
import {
  DEFAULT_SCHEDULER_OPTIONS,
  planPlacements,
  type Placement,
} from '../../packages/daemon/src/scheduler/index.js';

const opts = new Command('bench:placement-apply')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--vms <n>', 'VMs to create and place', Number, 10_000)
  .option('--batch <n>', 'creates per entry (one CreateVms turn)', Number, 500)
  .option('--legacy', 'one vm.create command per VM (the format before vm.create_many)')
  .option('--whole', 'vm.create_many, whole configurations (the format before vm.create_compact)')
  .option('--runs <n>', 'runs, each on a fresh state; the least CPU of each step is reported', Number, 3)
  .option('--follower', 'apply as a follower does: no proposer waits, the results are not encoded')
  .parse()
  .opts<{
    hosts: number;
    vms: number;
    batch: number;
    legacy?: boolean;
    whole?: boolean;
    runs: number;
    follower?: boolean;
  }>();

const MIB = 1024 ** 2;
let rid = 0;
let t = 1_700_000_000_000;
const stamp = (c: CommandBody): FarmCommand => ({ rid: `r${++rid}`, t: ++t, ...c }) as FarmCommand;
// As the proposer encodes an entry.
const entry = (cmds: FarmCommand[]): Uint8Array => Buffer.from(JSON.stringify({ v: 1, cmds }));

/** The configuration the edge hands on for bench:placement's VMs (its request, normalized). */
const config = (i: number): VmConfig =>
  normalizeVmConfig({
    name: `vm-${i}`,
    processor: { count: 1 },
    memoryBytes: 512 * MIB,
    guestOs: 'windows-server-2008-x64',
    integrationServices: true,
  }) as VmConfig;

type Ask = Parameters<typeof createCommands>[0][number];

/** The entry before vm.create_many: a vm.create per VM, then the vm.place of the plan. */
function legacy(asks: readonly Ask[], placements: readonly Placement[]): FarmCommand[] {
  const cmds: FarmCommand[] = asks.map((a) => ({
    type: 'vm.create',
    rid: a.rid!,
    t: ++t,
    vmId: a.vmId,
    opId: a.opId,
    config: a.config,
    start: a.start,
    hostId: a.hostId,
    warning: a.warning,
  }));
  cmds.push(
    stamp({
      type: 'vm.place',
      placements: placements.map(({ vmId, hostId, note }) => ({ vmId, hostId, note })),
    }),
  );
  return cmds;
}

/** The entry before vm.create_compact: vm.create_many commands with whole configurations. */
function whole(asks: readonly Ask[], placements: readonly Placement[]): FarmCommand[] {
  const configs = new Map(asks.map((a) => [a.vmId, a.config]));
  return createCommands(asks, placements).map(({ cmd }) =>
    stamp({
      type: 'vm.create_many',
      creates: cmd.creates.map((c) => ({ ...c, config: configs.get(c.vmId)! })),
      placements: cmd.placements ?? [],
    }),
  );
}

const usage = (f: () => void): number => {
  const u = process.cpuUsage();
  f();
  const d = process.cpuUsage(u);
  return d.user + d.system;
};

/** One run on a fresh state: the CPU of each step, in µs. */
function run() {
  const machine = new FarmStateMachine();
  let index = 0;
  const apply = (data: Uint8Array) => machine.apply(data, ++index, !opts.follower);

  for (let i = 0; i < opts.hosts; i += 100) {
    const cmds: FarmCommand[] = [];
    for (let h = i; h < Math.min(opts.hosts, i + 100); h++) cmds.push(stamp(benchHostCommand(h)));
    apply(entry(cmds));
  }

  const cpu = { plan: 0, encode: 0, apply: 0, observedApply: 0 };
  let bytes = 0;

  for (let i = 0; i < opts.vms; i += opts.batch) {
    const n = Math.min(opts.batch, opts.vms - i);
    const asks = Array.from({ length: n }, (_, k) => ({
      vmId: `vm-id-${i + k}`,
      opId: `op-id-${i + k}`,
      config: config(i + k),
      start: false,
      hostId: '',
      warning: '',
      rid: `create-vm:bench-${i + k}`,
    }));
    let placements: Placement[] = [];
    cpu.plan += usage(() => {
      placements = planPlacements(
        machine.state,
        asks.map((a) => ({ vmId: a.vmId, config: a.config, pinnedHostId: a.hostId })),
        DEFAULT_SCHEDULER_OPTIONS,
      ).placements;
    });
    let data!: Uint8Array;
    // As the create path and the proposer encode it (the legacy form as its proposer did).
    cpu.encode += usage(() => {
      if (opts.legacy) data = entry(legacy(asks, placements));
      else if (opts.whole) data = entry(whole(asks, placements));
      else data = entryBytes(createCommands(asks, placements).map((c) => stamped(c.json, `r${++rid}`, ++t)));
    });
    bytes += data.length;
    cpu.apply += usage(() => apply(data));
    // The agents' reports: each VM exists on its host, Off (a create without start).
    const reports = placements.map((p) => ({
      vmId: p.vmId,
      hostId: p.hostId,
      generation: 1,
      present: true,
      state: 'VM_STATE_OFF' as const,
      heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT' as const,
      message: '',
      memoryAssignedBytes: 0,
      macs: [],
    }));
    const observed = entry([stamp({ type: 'vm.observed', reports })]);
    cpu.observedApply += usage(() => apply(observed));
  }

  const placed = [...machine.state.vms.values()].filter((v) => v.hostId !== '').length;
  if (placed !== opts.vms) throw new Error(`only ${placed} of ${opts.vms} VMs placed`);
  return { cpu, bytes };
}

const runs = Array.from({ length: opts.runs }, run);
const least = (k: keyof ReturnType<typeof run>['cpu']) => Math.min(...runs.map((r) => r.cpu[k]));
const cpu = {
  plan: least('plan'),
  encode: least('encode'),
  apply: least('apply'),
  observedApply: least('observedApply'),
};
const bytes = runs[0]!.bytes;
const per = (us: number) => Math.round((us / opts.vms) * 10) / 10;
console.log(
  `${opts.vms} VMs on ${opts.hosts} hosts, ${opts.batch} a batch${opts.legacy ? ' (legacy vm.create)' : opts.whole ? ' (vm.create_many)' : ''}${opts.follower ? ', as a follower' : ''}: least CPU of ${opts.runs} runs`,
);
console.log(`plan (leader only): ${per(cpu.plan)} µs CPU per VM`);
console.log(
  `encode the entry (leader only): ${per(cpu.encode)} µs per VM, ${Math.round(bytes / opts.vms)} bytes per VM`,
);
console.log(`apply create + place (every replica): ${per(cpu.apply)} µs per VM`);
console.log(`apply the agents' reports (every replica): ${per(cpu.observedApply)} µs per VM`);
console.log(
  JSON.stringify({
    apply_us_per_vm: per(cpu.apply + cpu.observedApply),
    create_apply_us_per_vm: per(cpu.apply),
    observed_apply_us_per_vm: per(cpu.observedApply),
    plan_us_per_vm: per(cpu.plan),
    encode_us_per_vm: per(cpu.encode),
    entry_bytes_per_vm: Math.round(bytes / opts.vms),
  }),
);
