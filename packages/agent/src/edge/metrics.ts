import { Gauge, type Registry } from 'prom-client';
import type { AgentHost } from './agent-host.js';

/**
 * Agent gauges, read from the engines at scrape time (nothing to keep in step). In multi-host
 * mode every host reports under its own `host` label on the process's one endpoint.
 */
export function registerAgentMetrics(registry: Registry, hosts: () => readonly AgentHost[]): void {
  new Gauge({
    name: 'hyperfarm_agent_vms',
    help: 'VMs on the host, by state',
    labelNames: ['host', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const h of hosts()) {
        const counts = new Map<string, number>();
        for (const vm of h.read((e) => e.vms.list())) {
          const state = vm.status!.state.replace('VM_STATE_', '').toLowerCase();
          counts.set(state, (counts.get(state) ?? 0) + 1);
        }
        for (const [state, n] of counts) this.set({ host: h.settings.id, state }, n);
      }
    },
  });
  new Gauge({
    name: 'hyperfarm_agent_cpu_percent',
    help: 'Host CPU use (root partition and guests) as a percentage of its logical processors',
    labelNames: ['host'],
    registers: [registry],
    collect() {
      for (const h of hosts()) this.set({ host: h.settings.id }, h.read((e) => e.usage()).cpuPercent);
    },
  });
  new Gauge({
    name: 'hyperfarm_agent_memory_used_bytes',
    help: 'Memory assigned to VMs, with their overhead',
    labelNames: ['host'],
    registers: [registry],
    collect() {
      for (const h of hosts()) this.set({ host: h.settings.id }, h.read((e) => e.usage()).memoryUsedBytes);
    },
  });
  new Gauge({
    name: 'hyperfarm_agent_lease_remaining_ms',
    help: 'Time left on the host lease; negative once expired; absent before the first grant',
    labelNames: ['host'],
    registers: [registry],
    collect() {
      this.reset();
      for (const h of hosts()) {
        const lease = h.read((e) => e.lease.state());
        if (lease) this.set({ host: h.settings.id }, lease.expiresAtMs - h.now());
      }
    },
  });
}
