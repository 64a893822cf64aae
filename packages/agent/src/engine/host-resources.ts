import { type pb, resourceExhausted } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { mibText } from './model.js';
import { MEMORY_ASSIGNED } from './states.js';

// The host's memory accounting and usage figures.

export function memoryUsedBytes(s: EngineCore): number {
  let used = 0;
  for (const vm of s.vms.values()) {
    if (MEMORY_ASSIGNED.has(vm.state)) used += vm.config.memoryBytes + s.options.perVmOverheadBytes;
  }
  for (const bytes of s.reservedImports.values()) used += bytes;
  return used;
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
  // One pass without copies: every lease grant reports it, for every host of a farm.
  let running = 0;
  let used = 0;
  for (const vm of s.vms.values()) {
    if (!MEMORY_ASSIGNED.has(vm.state)) continue;
    running++;
    used += vm.config.memoryBytes + s.options.perVmOverheadBytes;
  }
  for (const bytes of s.reservedImports.values()) used += bytes;
  return {
    memoryUsedBytes: used,
    runningVms: running,
    vms: s.vms.size,
    cpuPercent: Math.round(s.lastCpu.hostPercent * 100) / 100,
  };
}
