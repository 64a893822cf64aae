import type { pb } from '@hyperfarm/api';
import { vmSpec } from './harness.js';

// What the daemon's network tests share: a VM with one adapter on the External switch 'ext', and
// the cluster 'web' (VIP 10.0.0.100, unicast, TCP port 80 balanced with affinity None).

/** A small serving VM with one adapter on 'ext': its MAC static, its address `ip` (CIDR). */
export const vmOnExt = (name: string, mac: string, ip: string): pb.VmConfig => ({
  ...vmSpec(name),
  workload: { bootMs: 100, cpuDemandPercent: 5, requestServiceTimeMs: 2, dirtyPagesPerSecond: 500 },
  networkAdapters: [
    { kind: 'NIC_KIND_SYNTHETIC', staticMac: true, macAddress: mac, switchName: 'ext', ipv4Address: ip },
  ],
});

/** The 'web' cluster's creation; `heartbeatPeriodMs` 0 keeps Windows' default (1 s). */
export const webCluster = (heartbeatPeriodMs = 0): pb.CreateNlbClusterRequest => ({
  name: 'web',
  virtualIp: '10.0.0.100',
  mode: 'NLB_MODE_UNICAST',
  switchName: 'ext',
  portRules: [
    {
      startPort: 80,
      endPort: 80,
      protocol: 'tcp',
      filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
      affinity: 'NLB_AFFINITY_NONE',
    },
  ],
  heartbeatPeriodMs,
});
