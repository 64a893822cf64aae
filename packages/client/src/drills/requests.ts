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

type NlbPlan = Plan['nlb'][number];
type TrafficPlan = Plan['traffic'][number];

/** CreateSwitch for one of the drill's switches. */
export function switchRequest(sw: Plan['switches'][number]): pb.CreateSwitchRequest {
  return { name: sw.name, type: `SWITCH_TYPE_${sw.type.toUpperCase()}` as pb.SwitchType };
}

/**
 * CreateNlbCluster for one of the drill's clusters: unicast, one multiple-host rule for TCP port
 * 80 without affinity, heartbeats every 100 ms (a drill measures seconds of failover).
 */
export function nlbClusterRequest(n: NlbPlan): pb.CreateNlbClusterRequest {
  return {
    name: n.name,
    virtualIp: n.vip,
    mode: 'NLB_MODE_UNICAST',
    switchName: n.switch,
    portRules: [
      {
        startPort: 80,
        endPort: 80,
        protocol: 'tcp',
        filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
        affinity: 'NLB_AFFINITY_NONE',
      },
    ],
    heartbeatPeriodMs: 100,
  };
}

/** AddNlbMember for each member, in the drill's order of priority (the first is priority 1). */
export function nlbMemberRequests(
  n: NlbPlan,
  clusterId: string,
  vmId: (name: string) => string,
): pb.AddNlbMemberRequest[] {
  return n.members.map((m, i) => ({ clusterId, member: { vmId: vmId(m), hostPriority: i + 1 } }));
}

/** StartTraffic for one of the drill's traffic runs, at its cluster's virtual IP. */
export function trafficRequest(plan: Plan, t: TrafficPlan): pb.StartHostTrafficRequest {
  const nlb = plan.nlb.find((n) => n.name === t.nlb)!;
  return {
    traffic: {
      id: t.name,
      switchName: nlb.switch,
      virtualIp: nlb.vip,
      ratePerSecond: t.rate,
      durationMs: t.durationMs,
    },
  };
}

/** A traffic run's report as the drill records it: its phases summed. */
export function trafficTotals(r: pb.TrafficReport__Output): {
  started: number;
  completed: number;
  lost: number;
  reset: number;
} {
  const phases = [r.before, r.during, r.after].filter((p): p is pb.TrafficPhase__Output => Boolean(p));
  const sum = (k: 'started' | 'completed' | 'lost' | 'reset') => phases.reduce((a, p) => a + Number(p[k]), 0);
  return { started: sum('started'), completed: sum('completed'), lost: sum('lost'), reset: sum('reset') };
}
