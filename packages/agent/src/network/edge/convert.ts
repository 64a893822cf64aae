import { switchRules, type pb } from '@hyperfarm/api';
import type { SwitchSpec, SwitchStatus, SwitchType } from '../host-network.js';
import type { NlbClusterConfig } from '../nlb/config.js';
import type { NlbMemberStatus } from '../nlb/member.js';
import type { PhaseTraffic, TrafficReport } from '../traffic.js';
import type { Counters } from '../switch.js';

// Between the API's messages and the network core's own types, checking every field on the way
// in and naming it when it is wrong.

const SWITCH_TYPE_OUT: Record<SwitchType, pb.SwitchType> = {
  external: 'SWITCH_TYPE_EXTERNAL',
  internal: 'SWITCH_TYPE_INTERNAL',
  private: 'SWITCH_TYPE_PRIVATE',
};
export function switchSpec(s: pb.VirtualSwitch__Output, field: string): SwitchSpec {
  const r = switchRules(s, field);
  return { name: r.name, type: r.type, agingMs: r.macAgingSeconds * 1000, hostIp: r.hostIp };
}

export { nlbClusterConfig } from '@hyperfarm/api';

export function countersOut(c: Counters): pb.SwitchCounters {
  return {
    framesReceived: c.received,
    framesSent: c.sent,
    framesFlooded: c.flooded,
    framesDropped: c.dropped,
    bytesReceived: c.receivedBytes,
    bytesSent: c.sentBytes,
  };
}

export function switchStateOut(s: SwitchStatus, hostId: string): pb.SwitchState {
  return {
    name: s.name,
    type: SWITCH_TYPE_OUT[s.type],
    hostId,
    counters: countersOut(s.counters),
    ports: s.ports.map((p) => ({
      id: p.id,
      kind: p.kind,
      vlanId: p.vlan,
      vmId: p.vmId,
      counters: countersOut(p.counters),
    })),
    macTable: s.macTable.map((e) => ({ vlanId: e.vlan, macAddress: e.mac, port: e.port, ageMs: e.ageMs })),
  };
}

export function memberStateOut(
  m: NlbMemberStatus,
  cluster: NlbClusterConfig,
  hostId: string,
): pb.NlbMemberState {
  const c = m.lastConvergence;
  return {
    vmId: m.vmId,
    hostPriority: m.priority,
    state: m.state,
    view: m.view,
    defaultHost: m.defaultHost,
    bucketMaps: m.maps.flatMap((owners, i) =>
      owners ? [{ startPort: cluster.rules[i]!.startPort, owners }] : [],
    ),
    lastConvergence: c
      ? {
          startedAtMs: Math.round(c.startedAtMs),
          finishedAtMs: Math.round(c.finishedAtMs),
          durationMs: Math.round(c.durationMs),
          members: c.members,
        }
      : null,
    connections: m.connections,
    unconfirmedBuckets: m.unconfirmedBuckets,
    warnings: m.warnings,
    hostId,
  };
}

function phaseOut(p: PhaseTraffic): pb.TrafficPhase {
  return {
    started: p.started,
    completed: p.completed,
    lost: p.lost,
    reset: p.reset,
    requests: p.requests,
    latencyMs: p.latencyMs,
    members: p.members.map((m) => ({
      vmId: m.member,
      requests: m.requests,
      share: m.share,
      latencyMs: m.latencyMs,
      lostConnections: m.lostConnections,
      resetConnections: m.resetConnections,
    })),
  };
}

export function trafficReportOut(id: string, r: TrafficReport, hostId: string): pb.TrafficReport {
  return {
    id,
    phase: r.phase,
    generating: r.generating,
    inFlight: r.inFlight,
    before: phaseOut(r.phases.before),
    during: phaseOut(r.phases.during),
    after: phaseOut(r.phases.after),
    hostId,
  };
}
