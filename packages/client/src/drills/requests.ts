/**
 * The requests a drill sends to the farm, built from its plan alone: the same on a farm of real
 * processes (runner.ts) and in the farm simulator (@hyperfarm/sim's drill runner).
 */
import type { pb } from '@hyperfarm/api';
import type { Plan } from './format.js';

const HA: Record<string, pb.HaPriority> = {
  high: 'HA_PRIORITY_HIGH',
  medium: 'HA_PRIORITY_MEDIUM',
  low: 'HA_PRIORITY_LOW',
  none: 'HA_PRIORITY_NONE',
};

/** A VM's network adapter: a static MAC, and an address in its NLB cluster's network. */
function adapter(plan: Plan, name: string, switchName: string): pb.NetworkAdapter {
  const i = plan.vms.findIndex((v) => v.name === name) + 1;
  const nlb = plan.nlb.find((n) => n.members.includes(name));
  const net = (nlb?.vip ?? '10.0.0.1').split('.').slice(0, 3).join('.');
  const hex = (n: number) => n.toString(16).padStart(2, '0').toUpperCase();
  return {
    kind: 'NIC_KIND_SYNTHETIC',
    staticMac: true,
    macAddress: `00-15-5D-AB-${hex(i >> 8)}-${hex(i & 255)}`,
    switchName,
    ipv4Address: `${net}.${10 + i}/24`,
  };
}

/** CreateVm for one of the drill's VMs; `hostId` is the farm's id of the host the drill names. */
export function createVmRequest(
  plan: Plan,
  name: string,
  start: boolean,
  hostId: (drillHost: string) => string,
): pb.CreateVmRequest {
  const v = plan.vms.find((x) => x.name === name)!;
  return {
    config: {
      name,
      processor: { count: v.cpus },
      memoryBytes: v.memoryBytes,
      guestOs: 'windows-server-2008-x64',
      integrationServices: true,
      haPriority: HA[v.ha],
      workload: { bootMs: v.bootMs, ...(v.switch ? { requestServiceTimeMs: 2 } : {}) },
      ...(v.switch ? { networkAdapters: [adapter(plan, name, v.switch)] } : {}),
    },
    start,
    ...(v.host ? { hostId: hostId(v.host) } : {}),
  };
}

/** The background writer's record: an Off VM of 32 MiB. */
export function writerVmConfig(name: string): pb.VmConfig {
  return {
    name,
    processor: { count: 1 },
    memoryBytes: 32 * 1024 * 1024,
    guestOs: 'windows-server-2008-x64',
  };
}
