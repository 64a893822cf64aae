import { invalidArgument, type pb } from '@hyperfarm/api';
import { parseCidr, parseIpv4, type NlbMacMode } from '../addr.js';
import type { SwitchSpec, SwitchStatus, SwitchType } from '../host-network.js';
import {
  DEFAULT_HEARTBEAT_PERIOD_MS,
  DEFAULT_HEARTBEAT_THRESHOLD,
  DEFAULT_PORT_RULE,
  EQUAL_LOAD_WEIGHT,
  validateNlbCluster,
  type FilteringMode,
  type NlbClusterConfig,
  type PortRule,
  type RuleProtocol,
} from '../nlb/config.js';
import type { Affinity } from '../nlb/buckets.js';
import type { NlbMemberStatus } from '../nlb/member.js';
import type { PhaseTraffic, TrafficReport } from '../traffic.js';
import type { Counters } from '../switch.js';

// Between the API's messages and the network core's own types, checking every field on the way
// in and naming it when it is wrong.

/** Hyper-V's default: a learned MAC is forgotten after 5 minutes without traffic. */
export const DEFAULT_MAC_AGING_SECONDS = 300;

const SWITCH_TYPES: Record<string, SwitchType> = {
  SWITCH_TYPE_EXTERNAL: 'external',
  SWITCH_TYPE_INTERNAL: 'internal',
  SWITCH_TYPE_PRIVATE: 'private',
};
const SWITCH_TYPE_OUT: Record<SwitchType, pb.SwitchType> = {
  external: 'SWITCH_TYPE_EXTERNAL',
  internal: 'SWITCH_TYPE_INTERNAL',
  private: 'SWITCH_TYPE_PRIVATE',
};
const MODES: Record<string, NlbMacMode> = {
  NLB_MODE_UNICAST: 'unicast',
  NLB_MODE_MULTICAST: 'multicast',
  NLB_MODE_IGMP_MULTICAST: 'igmp',
};
const FILTERING: Record<string, FilteringMode> = {
  NLB_FILTERING_MODE_UNSPECIFIED: 'multiple',
  NLB_FILTERING_MODE_MULTIPLE_HOST: 'multiple',
  NLB_FILTERING_MODE_SINGLE_HOST: 'single',
  NLB_FILTERING_MODE_DISABLED: 'disabled',
};
// Windows NLB's default affinity is Single.
const AFFINITY: Record<string, Affinity> = {
  NLB_AFFINITY_UNSPECIFIED: 'single',
  NLB_AFFINITY_NONE: 'none',
  NLB_AFFINITY_SINGLE: 'single',
  NLB_AFFINITY_NETWORK: 'network',
};

export function switchSpec(s: pb.VirtualSwitch__Output, field: string): SwitchSpec {
  if (!/^[A-Za-z0-9._-]{1,63}$/.test(s.name))
    throw invalidArgument(`${field}.name`, `'${s.name}' is not 1 to 63 letters, digits, '-', '_' or '.'`);
  const type = SWITCH_TYPES[s.type];
  if (!type) throw invalidArgument(`${field}.type`, 'must be EXTERNAL, INTERNAL or PRIVATE');
  if (type !== 'external' && !s.hostId)
    throw invalidArgument(`${field}.host_id`, `an ${type} switch lives on one host, which must be named`);
  let hostIp;
  if (s.hostAddress) {
    if (type !== 'internal')
      throw invalidArgument(`${field}.host_address`, 'only an Internal switch has a port for the host');
    hostIp = parseCidr(s.hostAddress);
    if (!hostIp)
      throw invalidArgument(`${field}.host_address`, `'${s.hostAddress}' is not like 172.20.0.1/24`);
  }
  return {
    name: s.name,
    type,
    agingMs: (s.macAgingSeconds || DEFAULT_MAC_AGING_SECONDS) * 1000,
    hostIp,
  };
}

function protocolOf(text: string, field: string): RuleProtocol {
  const p = (text || 'both').toLowerCase();
  if (p !== 'tcp' && p !== 'udp' && p !== 'both')
    throw invalidArgument(field, `'${text}' is not tcp, udp or both`);
  return p;
}

/** An NLB cluster as the members use it, refused with the field and reason if it is wrong. */
export function nlbClusterConfig(c: pb.NlbCluster__Output, field: string): NlbClusterConfig {
  if (!c.id) throw invalidArgument(`${field}.id`, 'is required');
  const vip = parseIpv4(c.virtualIp);
  if (vip === undefined)
    throw invalidArgument(`${field}.virtual_ip`, `'${c.virtualIp}' is not an IPv4 address`);
  const mode = MODES[c.mode];
  if (!mode) throw invalidArgument(`${field}.mode`, 'must be UNICAST, MULTICAST or IGMP_MULTICAST');
  const rules: PortRule[] =
    c.portRules.length === 0
      ? [DEFAULT_PORT_RULE]
      : c.portRules.map((r, i) => ({
          startPort: r.startPort,
          endPort: r.endPort,
          protocol: protocolOf(r.protocol, `${field}.port_rules[${i}].protocol`),
          filtering: FILTERING[r.filteringMode] ?? 'multiple',
          affinity: AFFINITY[r.affinity] ?? 'single',
        }));
  const config: NlbClusterConfig = {
    id: c.id,
    vip,
    mode,
    switchName: c.switchName,
    rules,
    members: c.members.map((m) => ({
      vmId: m.vmId,
      priority: m.hostPriority,
      loadWeight: m.loadWeight === 0 ? EQUAL_LOAD_WEIGHT : m.loadWeight,
      rules: m.ruleSettings.map((s) => ({
        startPort: s.startPort,
        loadWeight: s.equalLoad ? EQUAL_LOAD_WEIGHT : s.loadWeight,
        handlingPriority: s.handlingPriority || m.hostPriority,
      })),
    })),
    heartbeatPeriodMs: c.heartbeatPeriodMs || DEFAULT_HEARTBEAT_PERIOD_MS,
    heartbeatThreshold: c.heartbeatThreshold || DEFAULT_HEARTBEAT_THRESHOLD,
  };
  validateNlbCluster(config, field);
  return config;
}

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
