import {
  ApiError,
  checkMemberNetworks,
  nlbClusterConfig,
  nlbClusterMac,
  NLB_MODES,
  parseCidr,
  parseIpv4,
  quote,
  status,
  type pb,
} from '@hyperfarm/api';
import { z } from 'zod';
import { defineCommand } from './command.js';
import { alreadyExists, failedPrecondition, FsmError, notFound } from './errors.js';
import { someNames } from './hosts.js';
import type { NlbClusterRecord, SwitchRecord, VmRecord } from './model.js';
import { failOperation, finishOperation, requireOperation, startOperation } from './operations.js';
import { nlbMemberSchema, nlbPortRuleSchema, str, u32 } from './schemas.js';
import type { FarmState } from './state.js';

/**
 * The farm's network configuration: virtual switches and NLB clusters. An External switch is
 * defined once and exists on every host; Internal and Private switches live on one host, and two
 * hosts may each have one of the same name (their VMs cannot reach each other). The rules of
 * a single cluster (priorities, port rules, weights) are @hyperfarm/api's, shared with the
 * agents; what needs the farm (the switch exists, the member VMs exist and can reach the
 * virtual IP, one member per host) is checked here, against the committed state.
 */

const switchTypeSchema = z.enum(['SWITCH_TYPE_EXTERNAL', 'SWITCH_TYPE_INTERNAL', 'SWITCH_TYPE_PRIVATE']);
const modeSchema = z.enum(['NLB_MODE_UNICAST', 'NLB_MODE_MULTICAST', 'NLB_MODE_IGMP_MULTICAST']);

export function requireSwitch(s: FarmState, id: string): SwitchRecord {
  const sw = s.switches.get(id);
  if (!sw) throw notFound('switch', id);
  return sw;
}

export function requireNlbCluster(s: FarmState, id: string): NlbClusterRecord {
  const c = s.nlbClusters.get(id);
  if (!c) throw notFound('NLB cluster', id);
  return c;
}

/** The switches of that name a VM on `hostId` can reach: the External one, or its host's own. */
export function switchesNamed(s: FarmState, name: string, hostId?: string): SwitchRecord[] {
  return [...s.switches.values()].filter(
    (w) =>
      w.name === name && (hostId === undefined || w.type === 'SWITCH_TYPE_EXTERNAL' || w.hostId === hostId),
  );
}

/** A rule of @hyperfarm/api refused the configuration: the same refusal, as the state machine's. */
function asFsmError(err: unknown): never {
  if (err instanceof ApiError && err.code === status.INVALID_ARGUMENT)
    throw new FsmError('INVALID_ARGUMENT', err.message, err.field);
  throw err;
}

const createSwitch = defineCommand(
  'switch.create',
  z.object({
    id: str(128),
    name: str(63),
    switchType: switchTypeSchema,
    hostId: str(63),
    macAgingSeconds: u32,
    hostAddress: str(18),
  }),
  (s, p, changes) => {
    if (s.switches.has(p.id)) throw alreadyExists('switch id', p.id);
    const external = p.switchType === 'SWITCH_TYPE_EXTERNAL';
    if (external === (p.hostId !== ''))
      throw new FsmError(
        'INVALID_ARGUMENT',
        external
          ? 'invalid host_id: an External switch exists on every host; name none'
          : 'invalid host_id: an Internal or Private switch lives on one host, which must be named',
        'host_id',
      );
    if (!external && !s.hosts.has(p.hostId)) throw notFound('host', p.hostId);
    // An External name is the farm's; a host's own switch may share a name only with another
    // host's own switch.
    const clash = [...s.switches.values()].find(
      (w) => w.name === p.name && (external || w.type === 'SWITCH_TYPE_EXTERNAL' || w.hostId === p.hostId),
    );
    if (clash)
      throw alreadyExists(
        clash.type === 'SWITCH_TYPE_EXTERNAL' ? 'External switch' : `switch on host '${clash.hostId}'`,
        p.name,
      );
    const rec = changes.switch({
      id: p.id,
      name: p.name,
      type: p.switchType,
      hostId: p.hostId,
      macAgingSeconds: p.macAgingSeconds,
      hostAddress: p.hostAddress,
      createdAtMs: changes.timeMs,
    });
    return { switchId: rec.id };
  },
);

/** VMs with an adapter on this switch (for a host's own switch: VMs on that host, or not placed). */
function vmsOnSwitch(s: FarmState, sw: SwitchRecord): VmRecord[] {
  return [...s.vms.values()].filter(
    (vm) =>
      vm.config.networkAdapters.some((n) => n.switchName === sw.name) &&
      (sw.type === 'SWITCH_TYPE_EXTERNAL' || vm.hostId === sw.hostId || vm.hostId === ''),
  );
}

const deleteSwitch = defineCommand('switch.delete', z.object({ id: str(128) }), (s, p, changes) => {
  const sw = requireSwitch(s, p.id);
  const vms = vmsOnSwitch(s, sw).map((v) => v.config.name);
  if (vms.length > 0)
    throw failedPrecondition(
      `cannot delete switch '${sw.name}': ${vms.length} VM${vms.length > 1 ? 's have adapters' : ' has an adapter'} connected to it (${someNames(vms)}); disconnect them first`,
    );
  const clusters = [...s.nlbClusters.values()]
    .filter((c) => c.switchName === sw.name && switchesNamed(s, sw.name).length === 1)
    .map((c) => c.name);
  if (clusters.length > 0)
    throw failedPrecondition(
      `cannot delete switch '${sw.name}': NLB cluster${clusters.length > 1 ? 's' : ''} ${someNames(clusters)} use${clusters.length > 1 ? '' : 's'} it`,
    );
  changes.removeSwitch(sw);
});

const clusterSchema = z.object({
  name: str(63),
  virtualIp: str(15),
  mode: modeSchema,
  switchName: str(63),
  portRules: z.array(nlbPortRuleSchema).max(32),
  members: z.array(nlbMemberSchema).max(32),
  heartbeatThreshold: u32,
  heartbeatPeriodMs: u32,
});

type ClusterFields = z.output<typeof clusterSchema>;

/** The cluster as the API shows it (and as the agents get it). */
export function nlbClusterMessage(
  c: Omit<NlbClusterRecord, 'revision' | 'createdAtMs'>,
): pb.NlbCluster__Output {
  const vip = parseIpv4(c.virtualIp);
  return {
    id: c.id,
    name: c.name,
    virtualIp: c.virtualIp,
    mode: c.mode,
    clusterMac: vip === undefined ? '' : nlbClusterMac(NLB_MODES[c.mode]!, vip),
    switchName: c.switchName,
    portRules: c.portRules.map((r) => ({ ...r })),
    members: c.members.map((m) => ({
      vmId: m.vmId,
      hostPriority: m.hostPriority,
      loadWeight: m.loadWeight,
      state: '',
      ruleSettings: m.ruleSettings.map((r) => ({ ...r })),
    })),
    heartbeatThreshold: c.heartbeatThreshold,
    heartbeatPeriodMs: c.heartbeatPeriodMs,
  };
}

/**
 * Everything a cluster must satisfy, checked before it is recorded: its own rules (@hyperfarm/api),
 * a switch of its name, a unique name and a virtual IP no other cluster on the switch has, member
 * VMs that exist, can reach the virtual IP on the switch, and run on different hosts.
 */
function checkCluster(s: FarmState, id: string, c: ClusterFields): void {
  for (const other of s.nlbClusters.values()) {
    if (other.id === id) continue;
    if (other.name === c.name) throw alreadyExists('NLB cluster', c.name);
    if (other.virtualIp === c.virtualIp && other.switchName === c.switchName)
      throw new FsmError(
        'ALREADY_EXISTS',
        `virtual IP ${c.virtualIp} on switch '${c.switchName}' is already NLB cluster '${other.name}''s`,
        'virtual_ip',
      );
  }
  let config;
  try {
    config = nlbClusterConfig(nlbClusterMessage({ id, ...c }), 'cluster');
  } catch (err) {
    asFsmError(err);
  }
  if (switchesNamed(s, c.switchName).length === 0)
    throw new FsmError('FAILED_PRECONDITION', `there is no switch ${quote(c.switchName)}`, 'switch_name');
  c.members.forEach((m, i) => {
    if (!s.vms.has(m.vmId))
      throw new FsmError('NOT_FOUND', `VM ${quote(m.vmId)} not found`, `cluster.members[${i}].vm_id`);
  });
  try {
    checkMemberNetworks(config, (vmId) =>
      s.vms.get(vmId)!.config.networkAdapters.map((a) => ({
        switchName: a.switchName,
        ip: parseCidr(a.ipv4Address),
      })),
    );
  } catch (err) {
    asFsmError(err);
  }
  const byHost = new Map<string, string>();
  for (const m of c.members) {
    const vm = s.vms.get(m.vmId)!;
    if (!vm.hostId) continue;
    const other = byHost.get(vm.hostId);
    if (other !== undefined)
      throw failedPrecondition(
        `VMs '${other}' and '${vm.config.name}' of NLB cluster '${c.name}' both run on host '${vm.hostId}'; Windows NLB has one member per host`,
      );
    byHost.set(vm.hostId, vm.config.name);
  }
  // The cluster MAC is the members' to share; no VM may own it.
  const vip = parseIpv4(c.virtualIp);
  const mac = vip === undefined ? '' : nlbClusterMac(NLB_MODES[c.mode]!, vip);
  const owner = s.macOwners.get(mac);
  if (owner !== undefined)
    throw failedPrecondition(
      `the cluster MAC ${mac} is VM '${s.vms.get(owner)?.config.name ?? owner}''s adapter's address`,
    );
}

const createCluster = defineCommand(
  'nlb.create',
  z.object({ id: str(128), cluster: clusterSchema }),
  (s, p, changes) => {
    if (s.nlbClusters.has(p.id)) throw alreadyExists('NLB cluster id', p.id);
    checkCluster(s, p.id, p.cluster);
    changes.nlbCluster({ id: p.id, ...p.cluster, createdAtMs: changes.timeMs });
    return { clusterId: p.id };
  },
);

const updateCluster = defineCommand(
  'nlb.update',
  z.object({
    id: str(128),
    paths: z.array(z.enum(['port_rules', 'heartbeat_threshold', 'heartbeat_period_ms'])).max(3),
    portRules: z.array(nlbPortRuleSchema).max(32),
    heartbeatThreshold: u32,
    heartbeatPeriodMs: u32,
  }),
  (s, p, changes) => {
    const c = requireNlbCluster(s, p.id);
    const { id: _id, revision: _r, createdAtMs: _c, ...fields } = c;
    const next = { ...fields };
    if (p.paths.includes('port_rules')) next.portRules = p.portRules;
    if (p.paths.includes('heartbeat_threshold')) next.heartbeatThreshold = p.heartbeatThreshold;
    if (p.paths.includes('heartbeat_period_ms')) next.heartbeatPeriodMs = p.heartbeatPeriodMs;
    checkCluster(s, c.id, next as ClusterFields);
    changes.nlbCluster({ ...c, ...next });
    return { clusterId: c.id };
  },
);

const deleteCluster = defineCommand('nlb.delete', z.object({ id: str(128) }), (s, p, changes) => {
  changes.removeNlbCluster(requireNlbCluster(s, p.id));
});

const addMember = defineCommand(
  'nlb.member.add',
  z.object({ clusterId: str(128), member: nlbMemberSchema }),
  (s, p, changes) => {
    const c = requireNlbCluster(s, p.clusterId);
    if (c.members.some((m) => m.vmId === p.member.vmId))
      throw alreadyExists(`member of NLB cluster '${c.name}'`, p.member.vmId);
    const { id: _id, revision: _r, createdAtMs: _c, ...fields } = c;
    const members = [...c.members, p.member];
    try {
      checkCluster(s, c.id, { ...fields, members } as ClusterFields);
    } catch (err) {
      // The new member is the last: name the request's field, not the cluster's.
      if (err instanceof FsmError && err.field?.startsWith(`cluster.members[${members.length - 1}]`))
        throw new FsmError(err.code, err.message, err.field.replace(/^cluster\.members\[\d+\]/, 'member'));
      throw err;
    }
    changes.nlbCluster({ ...c, members });
    return { clusterId: c.id };
  },
);

const removeMember = defineCommand(
  'nlb.member.remove',
  z.object({ clusterId: str(128), vmId: str(128) }),
  (s, p, changes) => {
    const c = requireNlbCluster(s, p.clusterId);
    if (!c.members.some((m) => m.vmId === p.vmId))
      throw notFound(`member of NLB cluster '${c.name}'`, p.vmId);
    changes.nlbCluster({ ...c, members: c.members.filter((m) => m.vmId !== p.vmId) });
    return { clusterId: c.id };
  },
);

/**
 * Drainstop: the member takes no new connections and leaves the cluster once its existing ones
 * have closed. The leader's network loop asks the member's host and ends the operation when the
 * member reports itself stopped.
 */
const drainstop = defineCommand(
  'nlb.drainstop',
  z.object({ clusterId: str(128), vmId: str(128), opId: str(128) }),
  (s, p, changes) => {
    const c = requireNlbCluster(s, p.clusterId);
    if (!c.members.some((m) => m.vmId === p.vmId))
      throw notFound(`member of NLB cluster '${c.name}'`, p.vmId);
    const vm = s.vms.get(p.vmId);
    if (!vm?.hostId) throw failedPrecondition(`member VM '${p.vmId}' is not placed on a host`);
    if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
    startOperation(changes, {
      id: p.opId,
      targetId: c.id,
      params: { kind: 'nlb.drainstop', clusterId: c.id, vmId: p.vmId },
      message: `draining member '${vm.config.name}' on host '${vm.hostId}'`,
    });
    return { opId: p.opId };
  },
);

const drainstopEnded = defineCommand(
  'nlb.drainstop.end',
  z.object({ opId: str(128), error: z.string().max(4096).default('') }),
  (s, p, changes) => {
    const op = requireOperation(s, p.opId);
    if (op.done || op.kind !== 'nlb.drainstop') return { changed: false };
    if (p.error) failOperation(changes, op, { code: 'FAILED_PRECONDITION', message: p.error });
    else finishOperation(changes, op, 'the member drained its connections and stopped');
    return { changed: true };
  },
);

export const networkCommands = [
  createSwitch,
  deleteSwitch,
  createCluster,
  updateCluster,
  deleteCluster,
  addMember,
  removeMember,
  drainstop,
  drainstopEnded,
];
