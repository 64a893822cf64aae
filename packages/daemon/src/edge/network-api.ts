import {
  failedPrecondition,
  hyperfarmProto,
  invalidArgument,
  notFound,
  parseIpv4,
  portRulesOf,
  quote,
  status,
  switchRules,
  unary,
  type ClientOptions,
  type PromiseClient,
  type pb,
} from '@hyperfarm/api';
import {
  nlbClusterMessage,
  operationView,
  switchesNamed,
  switchView,
  type FarmState,
  type SwitchRecord,
} from '../fsm/index.js';
import { readState, type FarmContext } from './farm-context.js';
import { ServiceClients } from './service-clients.js';
import { page, requireEnum, requireHostId, requireRef } from './requests.js';
import { newId } from './vms-api.js';

/** The NetworkService calls the daemon makes of an agent. */
export type NetworkAgent = Pick<
  PromiseClient<pb.NetworkServiceClient>,
  | 'applyNetworkConfig'
  | 'getNetworkConfig'
  | 'getNlbState'
  | 'controlNlbMember'
  | 'getSwitchState'
  | 'startTraffic'
  | 'getTraffic'
  | 'markTrafficPhase'
  | 'stopTraffic'
>;

/**
 * The agents' NetworkService, by address: gRPC clients in the daemon (NetworkClients), calls
 * across the simulated network in the farm simulator.
 */
export interface NetworkAgents {
  of(address: string): NetworkAgent;
}

/** NetworkService clients, one channel per agent address. */
export class NetworkClients extends ServiceClients<pb.NetworkServiceClient> implements NetworkAgents {
  constructor(options: ClientOptions = {}) {
    super(hyperfarmProto().hyperfarm.v1.NetworkService, options);
  }
}

const SWITCH_TYPES = ['SWITCH_TYPE_EXTERNAL', 'SWITCH_TYPE_INTERNAL', 'SWITCH_TYPE_PRIVATE'] as const;
const MODES = ['NLB_MODE_UNICAST', 'NLB_MODE_MULTICAST', 'NLB_MODE_IGMP_MULTICAST'] as const;
const NLB_FIELDS = ['port_rules', 'heartbeat_threshold', 'heartbeat_period_ms'] as const;
const FILTER_OUT = {
  multiple: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
  single: 'NLB_FILTERING_MODE_SINGLE_HOST',
  disabled: 'NLB_FILTERING_MODE_DISABLED',
} as const;
const AFFINITY_OUT = {
  none: 'NLB_AFFINITY_NONE',
  single: 'NLB_AFFINITY_SINGLE',
  network: 'NLB_AFFINITY_NETWORK',
} as const;
const QUICK = { timeoutMs: 10_000 };

/** A switch by id, or by name when that name is one switch's. */
function findSwitch(s: FarmState, idOrName: string): SwitchRecord {
  const byId = s.switches.get(idOrName);
  if (byId) return byId;
  const named = switchesNamed(s, idOrName);
  if (named.length === 1) return named[0]!;
  if (named.length > 1)
    throw failedPrecondition(
      `${named.length} switches are named ${quote(idOrName)} (on hosts ${named.map((w) => w.hostId).join(', ')}); name one by its id`,
    );
  throw notFound('switch', idOrName);
}

function findCluster(s: FarmState, idOrName: string) {
  const c = s.nlbClusters.get(idOrName) ?? [...s.nlbClusters.values()].find((x) => x.name === idOrName);
  if (!c) throw notFound('NLB cluster', idOrName);
  return c;
}

/** Port rules as the farm records them: Windows' defaults filled, protocol spelled out. */
function portRules(rules: pb.NlbPortRule__Output[], field: string) {
  if (rules.length === 0) return [];
  return portRulesOf(rules, field).map((r) => ({
    startPort: r.startPort,
    endPort: r.endPort,
    protocol: r.protocol,
    filteringMode: FILTER_OUT[r.filtering],
    affinity: AFFINITY_OUT[r.affinity],
  }));
}

function member(m: pb.NlbMember__Output | null, field: string) {
  if (!m) throw invalidArgument(field, 'is required');
  return {
    vmId: requireRef(`${field}.vm_id`, m.vmId),
    hostPriority: m.hostPriority,
    loadWeight: m.loadWeight,
    ruleSettings: m.ruleSettings.map((r) => ({
      startPort: r.startPort,
      equalLoad: r.equalLoad,
      loadWeight: r.loadWeight,
      handlingPriority: r.handlingPriority,
    })),
  };
}

/** A VM by id or name, as a member names it. */
function vmId(s: FarmState, ref: string): string {
  return s.vms.has(ref) ? ref : (s.vmByName.get(ref) ?? ref);
}

/** ClusterService: virtual switches, NLB clusters, and the traffic generator on the agents. */
export function networkHandlers(ctx: FarmContext, net: NetworkAgents): Partial<pb.ClusterServiceHandlers> {
  const upHosts = (s: FarmState) => [...s.hosts.values()].filter((h) => h.state === 'HOST_STATE_UP');
  const hostAddress = (s: FarmState, id: string): string => {
    const h = s.hosts.get(requireHostId('host_id', id));
    if (!h) throw notFound('host', id);
    return h.address;
  };
  /** The run on the host named, or on whichever Up host has it. */
  const onRunHost = async <T>(hostId: string, fn: (c: NetworkAgent) => Promise<T>): Promise<T> => {
    const s = ctx.machine.state;
    if (hostId) return fn(net.of(hostAddress(s, hostId)));
    for (const h of upHosts(s)) {
      try {
        return await fn(net.of(h.address));
      } catch (err) {
        if ((err as { code?: number }).code !== status.NOT_FOUND) throw err;
      }
    }
    throw notFound('traffic run on any Up host', '');
  };

  return {
    CreateSwitch: unary<pb.CreateSwitchRequest__Output, pb.VirtualSwitch>(async (req) => {
      const type = requireEnum('type', req.type, SWITCH_TYPES);
      const r = switchRules({ ...req, type }, '');
      if (type === 'SWITCH_TYPE_EXTERNAL' && req.hostId)
        throw invalidArgument('host_id', 'an External switch exists on every host; name none');
      if (req.hostId) requireHostId('host_id', req.hostId);
      const id = newId('sw');
      await ctx.proposer.submit({
        type: 'switch.create',
        id,
        name: r.name,
        switchType: type,
        hostId: req.hostId,
        macAgingSeconds: r.macAgingSeconds,
        hostAddress: req.hostAddress,
      });
      return switchView(ctx.machine.state.switches.get(id)!);
    }),

    GetSwitch: unary<pb.GetSwitchRequest__Output, pb.VirtualSwitch>(async (req) =>
      switchView(findSwitch(await readState(ctx, req.consistency), requireRef('id', req.id))),
    ),

    ListSwitches: unary<pb.ListSwitchesRequest__Output, pb.ListSwitchesResponse>(async (req) => {
      const s = await readState(ctx, req.consistency);
      const p = page('switches', s.switches.values(), (w) => w.id, req);
      return { switches: p.items.map(switchView), nextPageToken: p.nextPageToken };
    }),

    DeleteSwitch: unary<pb.DeleteSwitchRequest__Output, pb.DeleteSwitchResponse>(async (req) => {
      const sw = findSwitch(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), requireRef('id', req.id));
      await ctx.proposer.submit({ type: 'switch.delete', id: sw.id });
      return {};
    }),

    CreateNlbCluster: unary<pb.CreateNlbClusterRequest__Output, pb.NlbCluster>(async (req) => {
      if (!/^[A-Za-z0-9._-]{1,63}$/.test(req.name))
        throw invalidArgument('name', `${quote(req.name)} must be 1 to 63 letters, digits, '-', '_' or '.'`);
      if (parseIpv4(req.virtualIp) === undefined)
        throw invalidArgument('virtual_ip', `${quote(req.virtualIp)} is not an IPv4 address`);
      const mode = requireEnum('mode', req.mode, MODES);
      const id = newId('nlb');
      await ctx.proposer.submit({
        type: 'nlb.create',
        id,
        cluster: {
          name: req.name,
          virtualIp: req.virtualIp,
          mode,
          switchName: requireRef('switch_name', req.switchName),
          portRules: portRules(req.portRules, 'port_rules'),
          members: [],
          heartbeatThreshold: req.heartbeatThreshold || 5,
          heartbeatPeriodMs: req.heartbeatPeriodMs || 1_000,
        },
      });
      return nlbClusterMessage(ctx.machine.state.nlbClusters.get(id)!);
    }),

    GetNlbCluster: unary<pb.GetNlbClusterRequest__Output, pb.NlbCluster>(async (req) =>
      nlbClusterMessage(findCluster(await readState(ctx, req.consistency), requireRef('id', req.id))),
    ),

    ListNlbClusters: unary<pb.ListNlbClustersRequest__Output, pb.ListNlbClustersResponse>(async (req) => {
      const s = await readState(ctx, req.consistency);
      const p = page('nlb', s.nlbClusters.values(), (c) => c.id, req);
      return { clusters: p.items.map(nlbClusterMessage), nextPageToken: p.nextPageToken };
    }),

    UpdateNlbCluster: unary<pb.UpdateNlbClusterRequest__Output, pb.NlbCluster>(async (req) => {
      if (!req.cluster) throw invalidArgument('cluster', 'is required');
      const c = findCluster(
        await readState(ctx, 'CONSISTENCY_LINEARIZABLE'),
        requireRef('cluster.id', req.cluster.id),
      );
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0)
        throw invalidArgument('update_mask', `name the fields to change: ${NLB_FIELDS.join(', ')}`);
      for (const p of paths)
        if (!(NLB_FIELDS as readonly string[]).includes(p))
          throw invalidArgument(
            'update_mask',
            `${quote(p)} cannot be changed; only ${NLB_FIELDS.join(', ')}`,
          );
      await ctx.proposer.submit({
        type: 'nlb.update',
        id: c.id,
        paths: paths as (typeof NLB_FIELDS)[number][],
        portRules: portRules(req.cluster.portRules, 'cluster.port_rules'),
        heartbeatThreshold: req.cluster.heartbeatThreshold || 5,
        heartbeatPeriodMs: req.cluster.heartbeatPeriodMs || 1_000,
      });
      return nlbClusterMessage(ctx.machine.state.nlbClusters.get(c.id)!);
    }),

    DeleteNlbCluster: unary<pb.DeleteNlbClusterRequest__Output, pb.DeleteNlbClusterResponse>(async (req) => {
      const c = findCluster(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), requireRef('id', req.id));
      await ctx.proposer.submit({ type: 'nlb.delete', id: c.id });
      return {};
    }),

    AddNlbMember: unary<pb.AddNlbMemberRequest__Output, pb.NlbCluster>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const c = findCluster(s, requireRef('cluster_id', req.clusterId));
      const m = member(req.member, 'member');
      await ctx.proposer.submit({
        type: 'nlb.member.add',
        clusterId: c.id,
        member: { ...m, vmId: vmId(s, m.vmId) },
      });
      return nlbClusterMessage(ctx.machine.state.nlbClusters.get(c.id)!);
    }),

    RemoveNlbMember: unary<pb.RemoveNlbMemberRequest__Output, pb.NlbCluster>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const c = findCluster(s, requireRef('cluster_id', req.clusterId));
      await ctx.proposer.submit({
        type: 'nlb.member.remove',
        clusterId: c.id,
        vmId: vmId(s, requireRef('vm_id', req.vmId)),
      });
      return nlbClusterMessage(ctx.machine.state.nlbClusters.get(c.id)!);
    }),

    DrainstopNlbMember: unary<pb.DrainstopNlbMemberRequest__Output, pb.Operation>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const c = findCluster(s, requireRef('cluster_id', req.clusterId));
      const opId = newId('op');
      await ctx.proposer.submit({
        type: 'nlb.drainstop',
        clusterId: c.id,
        vmId: vmId(s, requireRef('vm_id', req.vmId)),
        opId,
      });
      return operationView(ctx.machine.state.operations.get(opId)!);
    }),

    GetNlbClusterState: unary<pb.GetNlbClusterStateRequest__Output, pb.NlbClusterState>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const c = findCluster(s, requireRef('id', req.id));
      const missing: string[] = [];
      const hosts = new Map<string, string>();
      for (const m of c.members) {
        const vm = s.vms.get(m.vmId);
        const host = vm && s.hosts.get(vm.hostId);
        const name = vm?.config.name ?? m.vmId;
        if (!vm) missing.push(`${name}: the VM no longer exists`);
        else if (!host) missing.push(`${name}: not placed on a host`);
        else if (host.state === 'HOST_STATE_DOWN') missing.push(`${name}: host '${host.id}' is Down`);
        else hosts.set(host.id, host.address);
      }
      const answers = await Promise.all(
        [...hosts].map(([id, address]) =>
          net
            .of(address)
            .getNlbState({ clusterId: c.id }, QUICK)
            .catch((err: { details?: string }) => {
              missing.push(`host '${id}' did not answer: ${err.details ?? String(err)}`);
              return undefined;
            }),
        ),
      );
      const members = answers
        .flatMap((a) => a?.members ?? [])
        .sort((a, b) => a.hostPriority - b.hostPriority);
      // As Windows NLB: only active members count; a stopped or suspended one has left the map.
      const active = members.filter((m) => m.state !== 'stopped' && m.state !== 'suspended');
      const maps = new Set(active.map((m) => JSON.stringify([m.view, m.bucketMaps])));
      const converged = active.length > 0 && maps.size === 1 && active.every((m) => m.state === 'converged');
      const last = members
        .map((m) => m.lastConvergence)
        .filter((x): x is pb.NlbConvergence__Output => !!x)
        .sort((a, b) => Number(b.finishedAtMs) - Number(a.finishedAtMs))[0];
      return {
        clusterId: c.id,
        members,
        converged,
        bucketMaps: converged ? active[0]!.bucketMaps : [],
        lastConvergence: last ?? null,
        missing,
      };
    }),

    ControlNlbMember: unary<pb.ControlNlbMemberRequest__Output, pb.NlbMemberState>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const c = findCluster(s, requireRef('cluster_id', req.clusterId));
      const vm = s.vms.get(vmId(s, requireRef('vm_id', req.vmId)));
      if (!vm || !c.members.some((m) => m.vmId === vm.id))
        throw notFound(`member of NLB cluster '${c.name}'`, req.vmId);
      if (!vm.hostId) throw failedPrecondition(`member VM '${vm.config.name}' is not placed on a host`);
      return net
        .of(hostAddress(s, vm.hostId))
        .controlNlbMember({ ...req, clusterId: c.id, vmId: vm.id }, QUICK);
    }),

    GetSwitchState: unary<pb.GetHostSwitchStateRequest__Output, pb.SwitchState>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const hostId = requireHostId('host_id', req.hostId);
      const sw = s.switches.get(req.id) ?? switchesNamed(s, requireRef('id', req.id), hostId)[0];
      if (!sw) throw notFound(`switch on host '${hostId}'`, req.id);
      return net.of(hostAddress(s, hostId)).getSwitchState({ name: sw.name }, QUICK);
    }),

    StartTraffic: unary<pb.StartHostTrafficRequest__Output, pb.TrafficReport>(async (req) => {
      if (!req.traffic) throw invalidArgument('traffic', 'is required');
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const hostId = req.hostId || upHosts(s)[0]?.id;
      if (!hostId) throw failedPrecondition('no host is Up to run the traffic generator');
      const sw = switchesNamed(s, req.traffic.switchName).find((w) => w.type === 'SWITCH_TYPE_EXTERNAL');
      if (!sw)
        throw invalidArgument(
          'traffic.switch_name',
          `${quote(req.traffic.switchName)} is not an External switch`,
        );
      return net.of(hostAddress(s, hostId)).startTraffic(req.traffic, QUICK);
    }),

    GetTraffic: unary<pb.HostTrafficRequest__Output, pb.TrafficReport>((req) =>
      onRunHost(req.hostId, (c) => c.getTraffic({ id: requireRef('id', req.id) }, QUICK)),
    ),

    MarkTrafficPhase: unary<pb.MarkHostTrafficPhaseRequest__Output, pb.TrafficReport>((req) =>
      onRunHost(req.hostId, (c) =>
        c.markTrafficPhase({ id: requireRef('id', req.id), phase: req.phase }, QUICK),
      ),
    ),

    StopTraffic: unary<pb.StopHostTrafficRequest__Output, pb.TrafficReport>((req) =>
      onRunHost(req.hostId, (c) =>
        c.stopTraffic({ id: requireRef('id', req.id), remove: req.remove }, QUICK),
      ),
    ),
  };
}
