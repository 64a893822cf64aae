import type { EngineCore } from './core.js';
import { updateResponsiveness } from './health.js';
import { PAGE_SIZE } from './memory.js';
import { STARVED_FRACTION, type CpuReport, type VmEntry } from './model.js';
import { devicePaths, IO_COST_LP_SECONDS } from './partition.js';
import { type CpuClaim, shareCpu, UNCONTENDED_MARGIN } from './scheduler.js';
import { VCPUS_RUN } from './states.js';

// The guests and the host's CPU: CPU shares, then what each guest does with its share over time
// (dirtied pages, disk writes, packets). While no VM changes state those are linear in time, so
// a lazy engine (EngineOptions.lazyGuests) keeps each guest's account open and closes it only
// when something reads the guest or the shares change; a stepping engine closes every account
// at every step.

/** One step of the stepping engine: the shares as the host is now, then `dtMs` of every guest. */
export function step(s: EngineCore, dtMs: number): void {
  shareHostCpu(s);
  const dt = dtMs / 1000;
  for (const vm of s.vms.values()) runFor(s, vm, dt);
}

/**
 * Hands out the host's CPU among the VMs as they are now and sets each one's share, its root
 * partition I/O cost and its packet rate. The root's cost of a guest's requests follows the
 * share it got at the last call, so shares settle over a call or two after a change; returns
 * whether any share moved (false: calling again would give the same shares).
 *
 * It runs at every pump of a host whose VMs changed (each create of a fill), so the claims are
 * kept in flat arrays and the usual uncontended case is worked out here, as shareCpu's
 * `shareUncontended` would (the same sums in the same order); the per-VM report is built when
 * read (`CpuShares`).
 */
export function shareHostCpu(s: EngineCore): boolean {
  const all = [...s.vms.values()];
  const running: VmEntry[] = [];
  const demand: number[] = [];
  const reserve: number[] = [];
  const limit: number[] = [];
  const weight: number[] = [];
  let rootLp = 0;
  for (const vm of all) {
    vm.rootCpuLp = 0;
    vm.packetsPerSecond = 0;
    if (!VCPUS_RUN.has(vm.state)) {
      vm.cpuLp = 0;
      continue;
    }
    const p = vm.config.processor!;
    const w = vm.config.workload!;
    const demandFraction =
      (vm.state === 'VM_STATE_STARTING'
        ? 0.5
        : vm.state === 'VM_STATE_STOPPING'
          ? 0.25
          : w.cpuDemandPercent / 100) *
      (1 - vm.throttlePercent / 100);
    running.push(vm);
    demand.push(p.count * demandFraction);
    reserve.push((p.count * p.reservePercent) / 100);
    limit.push((p.count * p.limitPercent) / 100);
    weight.push(p.relativeWeight);
    // The root partition's cost of serving this guest's I/O on its device paths.
    if (vm.state === 'VM_STATE_RUNNING') {
      const paths = devicePaths(vm.config);
      const iops = vm.config.disks.length > 0 ? w.diskIops : 0;
      const requests = w.requestServiceTimeMs > 0 ? (vm.cpuLp * 1000) / w.requestServiceTimeMs : 0;
      const packets = paths.legacyNics + paths.syntheticNics > 0 ? requests * 2 : 0;
      const perPacket =
        paths.syntheticNics > 0 ? IO_COST_LP_SECONDS.syntheticPacket : IO_COST_LP_SECONDS.legacyPacket;
      vm.rootCpuLp =
        iops * (paths.emulatedDisk ? IO_COST_LP_SECONDS.emulatedDisk : IO_COST_LP_SECONDS.syntheticDisk) +
        packets * perPacket;
      vm.packetsPerSecond = packets;
      rootLp += vm.rootCpuLp;
    }
  }
  const lps = s.options.logicalProcessors;
  rootLp = Math.min(rootLp, lps);
  const shares = shareRunning(lps - rootLp, running, demand, reserve, limit, weight);
  // The VMs whose vCPUs do not run hold 0, as set above: they neither move nor add to `used`.
  let used = rootLp;
  let moved = false;
  for (let k = 0; k < running.length; k++) {
    const vm = running[k]!;
    const lp = shares[k]!;
    if (lp !== vm.cpuLp) moved = true;
    vm.cpuLp = lp;
    used += lp;
    if (vm.state === 'VM_STATE_RUNNING' || vm.state === 'VM_STATE_RUNNING_CRITICAL') {
      const demandLp =
        ((vm.config.processor!.count * vm.config.workload!.cpuDemandPercent) / 100) *
        (1 - vm.throttlePercent / 100);
      updateResponsiveness(s, vm, demandLp > 0 && lp < STARVED_FRACTION * demandLp);
    }
  }
  s.lastCpu = new CpuShares((used / lps) * 100, rootLp, all);
  return moved;
}

/** The running VMs' shares, in their order: shareCpu's answer for their claims. */
function shareRunning(
  capacity: number,
  running: readonly VmEntry[],
  demand: readonly number[],
  reserve: readonly number[],
  limit: readonly number[],
  weight: readonly number[],
): Float64Array {
  const out = new Float64Array(running.length);
  let total = 0;
  for (let k = 0; k < running.length; k++) total += Math.max(0, Math.min(demand[k]!, limit[k]!));
  if (total <= capacity - UNCONTENDED_MARGIN) {
    for (let k = 0; k < running.length; k++) {
      const cap = Math.max(0, Math.min(demand[k]!, limit[k]!));
      const reserved = Math.min(reserve[k]!, cap);
      out[k] = reserved >= cap - 1e-12 ? reserved : cap;
    }
    return out;
  }
  const claims: CpuClaim[] = running.map((vm, k) => ({
    id: vm.id,
    demand: demand[k]!,
    reserve: reserve[k]!,
    limit: limit[k]!,
    weight: weight[k]!,
  }));
  const shares = shareCpu(capacity, claims);
  for (let k = 0; k < running.length; k++) out[k] = shares.get(running[k]!.id) ?? 0;
  return out;
}

/**
 * The host's CPU as the last share left it. The per-VM map is read rarely (the network's
 * traffic model) and was most of the cost of building the report at each pump: the shares and
 * processor counts are kept as they were then, and the map made from them when first read.
 */
class CpuShares implements CpuReport {
  private readonly ids: string[];
  private readonly lps: Float64Array;
  private readonly counts: Float64Array;
  private map: Map<string, { lp: number; percent: number }> | undefined;

  constructor(
    readonly hostPercent: number,
    readonly rootLp: number,
    vms: readonly VmEntry[],
  ) {
    this.ids = vms.map((vm) => vm.id);
    this.lps = new Float64Array(vms.length);
    this.counts = new Float64Array(vms.length);
    vms.forEach((vm, k) => {
      this.lps[k] = vm.cpuLp;
      this.counts[k] = vm.config.processor!.count;
    });
  }

  get vms(): Map<string, { lp: number; percent: number }> {
    if (!this.map) {
      this.map = new Map();
      for (let k = 0; k < this.ids.length; k++) {
        const lp = this.lps[k]!;
        this.map.set(this.ids[k]!, { lp, percent: (lp / this.counts[k]!) * 100 });
      }
    }
    return this.map;
  }
}

/**
 * Closes a lazy engine's account of one guest at the engine's now: what it did since the account
 * was last closed, at the share it has held since (a share changes only with every account
 * closed first: `EngineCore.guestsChange`).
 */
export function settleGuest(s: EngineCore, vm: VmEntry): void {
  if (!s.lazyGuests) return;
  const dtMs = s.nowMs - vm.guestAtMs;
  vm.guestAtMs = s.nowMs;
  if (dtMs > 0) runFor(s, vm, dtMs / 1000);
}

/** What a guest does in `dt` seconds at its current share: packets, dirtied pages, disk writes. */
function runFor(s: EngineCore, vm: VmEntry, dt: number): void {
  if (vm.state === 'VM_STATE_RUNNING') vm.stats.packets += vm.packetsPerSecond * dt;
  if (vm.state === 'VM_STATE_RUNNING' || vm.state === 'VM_STATE_RUNNING_CRITICAL') runGuest(s, vm, dt);
}

function runGuest(s: EngineCore, vm: VmEntry, dt: number): void {
  const w = vm.config.workload!;
  const memory = vm.memory!;
  // A guest's progress is bounded by the CPU it got: a starved guest dirties fewer pages.
  // Auto-converge throttling takes its share of the guest's time away, as QEMU's does.
  const demandLp = (vm.config.processor!.count * w.cpuDemandPercent) / 100;
  const progress =
    (demandLp > 0 ? Math.min(1, vm.cpuLp / (demandLp * (1 - vm.throttlePercent / 100))) : 1) *
    (1 - vm.throttlePercent / 100);
  const wsPages = Math.min(memory.totalPages, Math.floor(w.workingSetBytes / PAGE_SIZE));
  if (wsPages > 0 && w.dirtyPagesPerSecond > 0) {
    const exact = w.dirtyPagesPerSecond * dt * progress + vm.dirtyCarry;
    const writes = Math.floor(exact);
    vm.dirtyCarry = exact - writes;
    // Beyond a few passes over the working set, more writes change nothing the model keeps.
    const capped = Math.min(writes, wsPages * 4);
    for (let i = 0; i < capped; i++) memory.write(s.rng.below(wsPages));
  }
  if (vm.config.disks.length > 0 && w.diskIops > 0) {
    if (vm.state === 'VM_STATE_RUNNING_CRITICAL') {
      // Guest I/O is suspended; one probe write per step finds out when storage is back.
      s.effects.push({
        kind: 'disk-writes',
        vmId: vm.id,
        writes: [{ disk: 0, seed: s.rng.nextU32() }],
        writeBytes: w.diskWriteBytes,
      });
      return;
    }
    const exact = w.diskIops * dt * progress + vm.ioCarry;
    const ios = Math.floor(exact);
    vm.ioCarry = exact - ios;
    vm.stats.diskIos += ios;
    if (!vm.config.integrationServices) vm.stats.emulatedIos += ios;
    const issued = Math.min(ios, s.maxWritesPerStep);
    if (issued > 0) {
      const writes: { disk: number; seed: number }[] = [];
      for (let i = 0; i < issued; i++) {
        writes.push({ disk: vm.diskCursor, seed: s.rng.nextU32() });
        vm.diskCursor = (vm.diskCursor + 1) % vm.config.disks.length;
      }
      s.effects.push({ kind: 'disk-writes', vmId: vm.id, writes, writeBytes: w.diskWriteBytes });
    }
  }
}
