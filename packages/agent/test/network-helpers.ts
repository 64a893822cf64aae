import { parseCidr, parseIpv4, type Mac, type NlbMacMode } from '../src/network/addr.js';
import type { Frame, Packet } from '../src/network/frame.js';
import {
  DEFAULT_PORT_RULE,
  type NlbClusterConfig,
  type NlbMemberConfig,
  type PortRule,
} from '../src/network/nlb/config.js';
import { NetworkSim, type NetworkSimOptions } from '../src/network/sim.js';
import type { TrafficSpec } from '../src/network/traffic.js';

export const ip = (text: string): number => parseIpv4(text)!;
export const cidr = (text: string) => parseCidr(text)!;

export const VIP = ip('10.0.0.100');

export function nlbCluster(over: Partial<NlbClusterConfig> = {}): NlbClusterConfig {
  return {
    id: 'web',
    vip: VIP,
    mode: 'unicast',
    switchName: 'ext',
    rules: [DEFAULT_PORT_RULE],
    members: [],
    heartbeatPeriodMs: 1_000,
    heartbeatThreshold: 5,
    ...over,
  };
}

export const nlbMember = (
  vmId: string,
  priority: number,
  over: Partial<NlbMemberConfig> = {},
): NlbMemberConfig => ({
  vmId,
  priority,
  loadWeight: 50,
  rules: [],
  ...over,
});

/** A VM adapter MAC in Hyper-V's range, unique per (host number, VM number). */
export const vmMac = (n: number): Mac => `00-15-5D-00-01-${n.toString(16).toUpperCase().padStart(2, '0')}`;

export interface FarmMember {
  vm: string;
  host: string;
  priority: number;
  weight?: number;
}

export interface FarmOptions extends NetworkSimOptions {
  hosts: number;
  members: FarmMember[];
  mode?: NlbMacMode;
  rules?: PortRule[];
  periodMs?: number;
  threshold?: number;
}

/**
 * Hosts h1..hN with an External switch "ext", the members' VMs on their hosts (adapter on "ext",
 * address 10.0.0.<10+priority>/24), and one NLB cluster pushed to every host, as the daemon would.
 */
export function nlbFarm(o: FarmOptions): { sim: NetworkSim; cluster: NlbClusterConfig } {
  const sim = new NetworkSim(o);
  for (let i = 1; i <= o.hosts; i++) {
    sim.addHost(`h${i}`).setSwitches([{ name: 'ext', type: 'external', agingMs: 300_000 }]);
  }
  const cluster = nlbCluster({
    mode: o.mode ?? 'unicast',
    rules: o.rules ?? [DEFAULT_PORT_RULE],
    heartbeatPeriodMs: o.periodMs ?? 1_000,
    heartbeatThreshold: o.threshold ?? 5,
    members: o.members.map((m) => nlbMember(m.vm, m.priority, { loadWeight: m.weight ?? 50 })),
  });
  for (const m of o.members) {
    sim.host(m.host).attachVm(
      m.vm,
      [
        {
          index: 0,
          mac: vmMac(m.priority),
          switchName: 'ext',
          vlan: 0,
          ip: cidr(`10.0.0.${10 + m.priority}/24`),
        },
      ],
      'running',
    );
  }
  for (const h of sim.hosts.values()) h.setNlbClusters([cluster]);
  return { sim, cluster };
}

/** Every member's status, from the hosts that are up. */
export function memberStatuses(sim: NetworkSim, clusterId = 'web') {
  return [...sim.hosts].filter(([id]) => !sim.isDown(id)).flatMap(([, h]) => h.nlbStatus(clusterId));
}

/** True when every running member is converged on the same view and maps. */
export function allConverged(sim: NetworkSim, expectMembers?: number): boolean {
  const st = memberStatuses(sim).filter((s) => s.state !== 'stopped' && s.state !== 'suspended');
  if (st.length === 0 || st.some((s) => s.state !== 'converged' || s.unconfirmedBuckets > 0)) return false;
  const first = JSON.stringify([st[0]!.view, st[0]!.maps]);
  if (st.some((s) => JSON.stringify([s.view, s.maps]) !== first)) return false;
  return expectMembers === undefined || st[0]!.view.length === expectMembers;
}

/** An open segment from a client, as a member's filter sees it. */
export function openPacket(client: number, port: number, conn: number, dstPort = 80): Packet {
  return {
    src: client,
    dst: VIP,
    srcPort: port,
    dstPort,
    protocol: 'conn',
    seg: { kind: 'open', conn, token: 0, seq: 0, bytes: 0, respond: 0, servedBy: '' },
  };
}

export function trafficSpec(over: Partial<TrafficSpec> = {}): TrafficSpec {
  return {
    vip: VIP,
    port: 80,
    protocol: 'conn',
    ratePerSec: 200,
    durationMs: 10_000,
    clients: 5_000,
    networks: 200,
    firstClientIp: ip('172.16.0.0'),
    requestsPerConnection: 1,
    requestBytes: 200,
    responseBytes: 2_000,
    rtoMs: 250,
    maxRetries: 4,
    seed: 7,
    mac: '00-15-5D-FF-00-01',
    ip: ip('10.0.0.1'),
    ...over,
  };
}

/** A plain IPv4 datagram frame between two adapters. */
export function dgramFrame(src: Mac, dst: Mac, srcIp: number, dstIp: number, id = 1): Frame {
  return {
    src,
    dst,
    vlan: 0,
    body: {
      type: 'ipv4',
      packet: {
        src: srcIp,
        dst: dstIp,
        srcPort: 5000,
        dstPort: 53,
        protocol: 'dgram',
        dgram: { id, reply: false, bytes: 40, respond: 100, servedBy: '' },
      },
    },
  };
}
