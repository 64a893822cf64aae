import { type pb, resourceExhausted } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { mibText } from './model.js';
import { MEMORY_ASSIGNED } from './states.js';

// The host's memory accounting and usage figures.

export function memoryUsedBytes(s: EngineCore): number {
  let used = assigned(s).bytes;
  for (const bytes of s.reservedImports.values()) used += bytes;
  return used;
}

/**
 * The VMs holding memory, and how much with their overhead: worked out again only after an event
 * (every state change is one, as is a create, a delete or a configuration change). Every lease
 * grant reports it, for every host of a farm, mostly with nothing changed since the last.
 */
function assigned(s: EngineCore): { running: number; bytes: number } {
  const a = s.assigned;
  if (a && a.sequence === s.sequence && a.vms === s.vms.size) return a;
  let running = 0;
  let bytes = 0;
  for (const vm of s.vms.values()) {
    if (!MEMORY_ASSIGNED.has(vm.state)) continue;
    running++;
    bytes += vm.config.memoryBytes + s.options.perVmOverheadBytes;
  }
  s.assigned = { sequence: s.sequence, vms: s.vms.size, running, bytes };
  return s.assigned;
}

/** Memory a start (or an import) needs, against what is free; RESOURCE_EXHAUSTED otherwise. */
export function checkMemoryFor(s: EngineCore, memoryBytes: number, what: string): void {
  const need = memoryBytes + s.options.perVmOverheadBytes;
  const used = memoryUsedBytes(s);
  const free = s.options.memoryBytes - s.options.rootReserveBytes - used;
  if (need > free) {
    throw resourceExhausted(
      `cannot ${what}: it needs ${mibText(need)} (${mibText(memoryBytes)} memory + ${mibText(s.options.perVmOverheadBytes)} overhead) but only ${mibText(Math.max(0, free))} is free (${mibText(s.options.memoryBytes)} host memory - ${mibText(s.options.rootReserveBytes)} root reserve - ${mibText(used)} used)`,
    );
  }
}

export function hostUsage(s: EngineCore): pb.HostUsage__Output {
  return {
    memoryUsedBytes: memoryUsedBytes(s),
    runningVms: assigned(s).running,
    vms: s.vms.size,
    cpuPercent: Math.round(s.lastCpu.hostPercent * 100) / 100,
  };
}
