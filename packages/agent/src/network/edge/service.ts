import { randomUUID } from 'node:crypto';
import {
  failedPrecondition,
  invalidArgument,
  serverStream,
  status,
  ApiError,
  unary,
  type pb,
  type ServiceHandlers,
} from '@hyperfarm/api';
import { parseIpv4, type Mac } from '../addr.js';
import { hashString32 } from '../../engine/rng.js';
import type { NlbAction } from '../host-network.js';
import { PHASES, type Phase, type TrafficSpec } from '../traffic.js';
import type { AgentNetwork, FrameLinks } from './agent-network.js';
import { memberStateOut, switchStateOut, trafficReportOut } from './convert.js';

// NetworkService and TunnelService of one agent's host.

const CONTROLS: Record<string, NlbAction> = {
  NLB_CONTROL_START: 'start',
  NLB_CONTROL_STOP: 'stop',
  NLB_CONTROL_DRAINSTOP: 'drainstop',
  NLB_CONTROL_SUSPEND: 'suspend',
  NLB_CONTROL_RESUME: 'resume',
  NLB_CONTROL_DRAIN_RULE: 'drain',
  NLB_CONTROL_DISABLE_RULE: 'disable',
  NLB_CONTROL_ENABLE_RULE: 'enable',
};

const MAX_TRAFFIC_MS = 3_600_000;
const MAX_RATE = 100_000;

/** The traffic run's router: a MAC of Hyper-V's range the VMs' dynamic pool never hands out. */
function routerMac(hostId: string, runId: string): Mac {
  const h = hashString32(`${hostId}/${runId}`);
  return ['00', '15', '5D', 'FD', ((h >>> 8) & 0xff).toString(16), (h & 0xff).toString(16)]
    .map((x) => x.toUpperCase().padStart(2, '0'))
    .join('-');
}

export function trafficSpec(r: pb.StartTrafficRequest__Output, hostId: string, id: string): TrafficSpec {
  const vip = parseIpv4(r.virtualIp);
  if (vip === undefined) throw invalidArgument('virtual_ip', `'${r.virtualIp}' is not an IPv4 address`);
  const protocol = (r.protocol || 'tcp').toLowerCase();
  if (protocol !== 'tcp' && protocol !== 'udp')
    throw invalidArgument('protocol', `'${r.protocol}' is not tcp or udp`);
  if (!(r.ratePerSecond > 0 && r.ratePerSecond <= MAX_RATE))
    throw invalidArgument('rate_per_second', `must be above 0 and at most ${MAX_RATE}`);
  if (!(r.durationMs > 0 && r.durationMs <= MAX_TRAFFIC_MS))
    throw invalidArgument('duration_ms', 'must be above 0 and at most one hour');
  if (r.port > 65535) throw invalidArgument('port', 'must be 0 to 65535');
  const first = r.firstClientNetwork ? parseIpv4(r.firstClientNetwork) : 0;
  if (first === undefined)
    throw invalidArgument('first_client_network', `'${r.firstClientNetwork}' is not an IPv4 address`);
  const router = r.routerAddress ? parseIpv4(r.routerAddress) : ((vip & 0xffffff00) >>> 0) + 1;
  if (router === undefined)
    throw invalidArgument('router_address', `'${r.routerAddress}' is not an IPv4 address`);
  const bounded = (v: number, name: string, dflt: number, max: number): number => {
    if (v > max) throw invalidArgument(name, `at most ${max}`);
    return v || dflt;
  };
  return {
    vip,
    port: r.port || 80,
    protocol: protocol === 'tcp' ? 'conn' : 'dgram',
    ratePerSec: r.ratePerSecond,
    durationMs: r.durationMs,
    clients: bounded(r.clients, 'clients', 1_000, 1_000_000),
    networks: bounded(r.clientNetworks, 'client_networks', 100, 65_536),
    firstClientIp: first || parseIpv4('172.16.0.0')!,
    requestsPerConnection: bounded(r.requestsPerConnection, 'requests_per_connection', 1, 10_000),
    requestBytes: bounded(r.requestBytes, 'request_bytes', 200, 1_000_000),
    responseBytes: bounded(r.responseBytes, 'response_bytes', 2_000, 100_000_000),
    rtoMs: bounded(r.retransmitTimeoutMs, 'retransmit_timeout_ms', 250, 60_000),
    maxRetries: bounded(r.maxRetries, 'max_retries', 4, 20),
    seed: r.seed,
    mac: routerMac(hostId, id),
    ip: router,
  };
}

const phaseOf = (text: string): Phase => {
  if (!(PHASES as readonly string[]).includes(text))
    throw invalidArgument('phase', `'${text}' is not before, during or after`);
  return text as Phase;
};

export function networkServiceImpl(n: AgentNetwork<FrameLinks>): ServiceHandlers['network'] {
  const host = n.hostId;
  const report = (id: string) => trafficReportOut(id, n.net.trafficReport(id), host);
  return {
    ApplyNetworkConfig: unary<pb.NetworkConfig__Output, pb.ApplyNetworkConfigResponse>((req) => n.apply(req)),
    GetNetworkConfig: unary<pb.GetNetworkConfigRequest__Output, pb.NetworkConfig>(() => n.config()),
    GetSwitchState: unary<pb.GetSwitchStateRequest__Output, pb.SwitchState>((req) =>
      n.run(() => switchStateOut(n.net.switchStatus(req.name), host)),
    ),
    GetNlbState: unary<pb.GetNlbStateRequest__Output, pb.NlbState>((req) =>
      n.run(() => {
        const cluster = n.cluster(req.clusterId);
        return {
          clusterId: req.clusterId,
          hostId: host,
          members: n.net.nlbStatus(req.clusterId).map((m) => memberStateOut(m, cluster, host)),
        };
      }),
    ),
    ControlNlbMember: unary<pb.ControlNlbMemberRequest__Output, pb.NlbMemberState>((req) => {
      const action = CONTROLS[req.action];
      if (!action) throw invalidArgument('action', 'is required');
      if (req.port > 65535) throw invalidArgument('port', 'must be 0 to 65535');
      const cluster = n.cluster(req.clusterId);
      return n.run(() =>
        memberStateOut(n.net.nlbControl(req.clusterId, req.vmId, action, req.port), cluster, host),
      );
    }),
    StartTraffic: unary<pb.StartTrafficRequest__Output, pb.TrafficReport>((req) => {
      const id = req.id || randomUUID().slice(0, 8);
      if (!/^[A-Za-z0-9._-]{1,63}$/.test(id))
        throw invalidArgument('id', `'${id}' is not 1 to 63 letters, digits, '-', '_' or '.'`);
      if (req.vlanId > 4094) throw invalidArgument('vlan_id', 'must be 0 to 4094');
      const spec = trafficSpec(req, host, id);
      return n.run(() => {
        n.net.startTraffic(id, req.switchName, req.vlanId, spec);
        return report(id);
      });
    }),
    GetTraffic: unary<pb.GetTrafficRequest__Output, pb.TrafficReport>((req) => n.run(() => report(req.id))),
    MarkTrafficPhase: unary<pb.MarkTrafficPhaseRequest__Output, pb.TrafficReport>((req) =>
      n.run(() => {
        n.net.markTrafficPhase(req.id, phaseOf(req.phase));
        return report(req.id);
      }),
    ),
    StopTraffic: unary<pb.StopTrafficRequest__Output, pb.TrafficReport>((req) =>
      n.run(() => {
        const last = trafficReportOut(req.id, n.net.stopTraffic(req.id), host);
        if (req.remove) n.net.removeTraffic(req.id);
        return last;
      }),
    ),
  };
}

export function tunnelServiceImpl(n: AgentNetwork): ServiceHandlers['tunnel'] {
  return {
    Pull: serverStream<pb.PullRequest__Output, pb.FrameBatch>(async (req, call) => {
      if (!n.tunnels.isPeer(req.hostId))
        throw new ApiError(
          status.PERMISSION_DENIED,
          `host '${req.hostId}' is not a tunnel peer of host '${n.hostId}' in its network configuration`,
        );
      if (req.hostId === n.hostId) throw failedPrecondition('a host does not tunnel to itself');
      await n.tunnels.serve(req.hostId, call);
    }),
  };
}
