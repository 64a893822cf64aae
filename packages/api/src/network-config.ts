import { invalidArgument, quote } from './errors.js';
import type * as pb from './generated/pb.js';
import {
  formatCidr,
  formatIpv4,
  isIpMulticast,
  parseCidr,
  parseIpv4,
  sameNetwork,
  type Cidr,
} from './ipv4.js';

/**
 * Virtual switches and NLB clusters: their shapes and the rules that refuse a bad one with the
 * field and the reason, in one place for the daemon, which refuses a request before it is
 * proposed, and the agents, which act on what the daemon pushes.
 */

export type SwitchTypeName = 'external' | 'internal' | 'private';

/** Hyper-V's default: a learned MAC is forgotten after 5 minutes without traffic. */
export const DEFAULT_MAC_AGING_SECONDS = 300;
/** A day: longer would keep a moved VM's old port for good. */
export const MAX_MAC_AGING_SECONDS = 86_400;

const SWITCH_NAME = /^[A-Za-z0-9._-]{1,63}$/;
export const SWITCH_TYPES: Readonly<Record<string, SwitchTypeName>> = {
  SWITCH_TYPE_EXTERNAL: 'external',
  SWITCH_TYPE_INTERNAL: 'internal',
  SWITCH_TYPE_PRIVATE: 'private',
};

export interface SwitchRules {
  name: string;
  type: SwitchTypeName;
  /** The host of an Internal or Private switch; undefined for an External one. */
  hostId: string | undefined;
  macAgingSeconds: number;
  /** An Internal switch's address for the host's own port. */
  hostIp: Cidr | undefined;
}

/** A switch message checked as Hyper-V has switches, with its defaults filled. */
export function switchRules(
  s: Pick<pb.VirtualSwitch__Output, 'name' | 'type' | 'hostId' | 'macAgingSeconds' | 'hostAddress'>,
  field: string,
): SwitchRules {
  // A request that is the switch itself (CreateSwitch) names its fields with no prefix.
  const at = (name: string) => (field ? `${field}.${name}` : name);
  if (!SWITCH_NAME.test(s.name))
    throw invalidArgument(at('name'), `${quote(s.name)} is not 1 to 63 letters, digits, '-', '_' or '.'`);
  const type = SWITCH_TYPES[s.type];
  if (!type) throw invalidArgument(at('type'), 'must be EXTERNAL, INTERNAL or PRIVATE');
  if (type !== 'external' && !s.hostId)
    throw invalidArgument(at('host_id'), `an ${type} switch lives on one host, which must be named`);
  if (s.macAgingSeconds > MAX_MAC_AGING_SECONDS)
    throw invalidArgument(at('mac_aging_seconds'), `at most ${MAX_MAC_AGING_SECONDS} (a day)`);
  let hostIp: Cidr | undefined;
  if (s.hostAddress) {
    if (type !== 'internal')
      throw invalidArgument(at('host_address'), 'only an Internal switch has a port for the host');
    hostIp = parseCidr(s.hostAddress);
    if (!hostIp)
      throw invalidArgument(at('host_address'), `${quote(s.hostAddress)} is not like 172.20.0.1/24`);
  }
  return {
    name: s.name,
    type,
    hostId: type === 'external' ? undefined : s.hostId,
    macAgingSeconds: s.macAgingSeconds || DEFAULT_MAC_AGING_SECONDS,
    hostIp,
  };
}

/**
 * An NLB cluster's configuration as Windows NLB has it, and the rules that refuse a bad one with
 * the field and the reason: in one place for the daemon, which refuses a request before it is
 * proposed, and the agents, whose members act on what the daemon pushes.
 */

export type NlbMacMode = 'unicast' | 'multicast' | 'igmp';
export type FilteringMode = 'multiple' | 'single' | 'disabled';
export type RuleProtocol = 'tcp' | 'udp' | 'both';
export type NlbAffinityName = 'none' | 'single' | 'network';

export interface PortRule {
  startPort: number;
  endPort: number;
  protocol: RuleProtocol;
  filtering: FilteringMode;
  affinity: NlbAffinityName;
}

/** One member's own settings for one port rule, as each Windows NLB host keeps them. */
export interface MemberRuleSetting {
  /** The rule's start port: what names a rule. */
  startPort: number;
  /** Multiple-host rules: share of the load, 0 to 100 (Windows' "equal load" is 50). */
  loadWeight: number;
  /** Single-host rules: 1 to 32, unique per rule; the lowest number handles the rule's traffic. */
  handlingPriority: number;
}

export interface NlbMemberConfig {
  vmId: string;
  /** Unique in the cluster, 1 to 32; the lowest number is the default host. */
  priority: number;
  /** Settings for the rules this member does not name in `rules`: equal load, handling priority = priority. */
  loadWeight: number;
  rules: MemberRuleSetting[];
}

export interface NlbClusterConfig {
  id: string;
  vip: number;
  mode: NlbMacMode;
  switchName: string;
  rules: PortRule[];
  members: NlbMemberConfig[];
  heartbeatPeriodMs: number;
  /** Heartbeats missed before a member is dropped. */
  heartbeatThreshold: number;
}

/** Windows NLB's defaults: a heartbeat every second, a member lost after five missed. */
export const DEFAULT_HEARTBEAT_PERIOD_MS = 1_000;
export const DEFAULT_HEARTBEAT_THRESHOLD = 5;
export const EQUAL_LOAD_WEIGHT = 50;
export const MAX_MEMBERS = 32;
export const MAX_PORT_RULES = 32;

/** Windows NLB's default port rule: every port, both protocols, multiple hosts, Single affinity. */
export const DEFAULT_PORT_RULE: PortRule = {
  startPort: 0,
  endPort: 65535,
  protocol: 'both',
  filtering: 'multiple',
  affinity: 'single',
};

const hex2 = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

/**
 * The cluster MAC Windows NLB derives from the virtual IP W.X.Y.Z: 02-BF-W-X-Y-Z in unicast
 * mode, 03-BF-W-X-Y-Z in multicast mode, and 01-00-5E-7F-Y-Z (the MAC of IP multicast group
 * 239.255.Y.Z) in IGMP multicast mode.
 */
export function nlbClusterMac(mode: NlbMacMode, vip: number): string {
  const [w, x, y, z] = [vip >>> 24, (vip >>> 16) & 0xff, (vip >>> 8) & 0xff, vip & 0xff];
  if (mode === 'igmp') return ['01', '00', '5E', '7F', hex2(y), hex2(z)].join('-');
  return [mode === 'unicast' ? '02' : '03', 'BF', hex2(w), hex2(x), hex2(y), hex2(z)].join('-');
}

/** A member's effective settings for each rule of the cluster, in rule order. */
export function memberRuleSettings(cluster: NlbClusterConfig, m: NlbMemberConfig): MemberRuleSetting[] {
  return cluster.rules.map((r) => {
    const own = m.rules.find((s) => s.startPort === r.startPort);
    return own ?? { startPort: r.startPort, loadWeight: m.loadWeight, handlingPriority: m.priority };
  });
}

const protocolsMeet = (a: RuleProtocol, b: RuleProtocol): boolean => a === 'both' || b === 'both' || a === b;
const inRange = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi;

/**
 * Refuses what Windows NLB refuses, naming the field: a bad or multicast virtual IP, more than 32
 * members, priorities outside 1 to 32 or held twice, port rules that overlap or are malformed,
 * load weights outside 0 to 100, handling priorities held twice within a rule.
 */
export function validateNlbCluster(c: NlbClusterConfig, field = 'cluster'): void {
  if (c.vip === 0 || c.vip === 0xffffffff || isIpMulticast(c.vip))
    throw invalidArgument(
      `${field}.virtual_ip`,
      `${formatIpv4(c.vip)} cannot be a cluster IP (NLB multicast mode is layer 2: the cluster IP must be a unicast address)`,
    );
  if (!c.switchName)
    throw invalidArgument(`${field}.switch_name`, 'an NLB cluster needs the switch its members are on');
  if (!inRange(c.heartbeatPeriodMs, 10, 60_000))
    throw invalidArgument(`${field}.heartbeat_period_ms`, 'must be 10 to 60000 milliseconds');
  if (!inRange(c.heartbeatThreshold, 1, 100))
    throw invalidArgument(`${field}.heartbeat_threshold`, 'must be 1 to 100 missed heartbeats');
  if (c.rules.length > MAX_PORT_RULES)
    throw invalidArgument(
      `${field}.port_rules`,
      `at most ${MAX_PORT_RULES} port rules, got ${c.rules.length}`,
    );
  c.rules.forEach((r, i) => {
    const f = `${field}.port_rules[${i}]`;
    if (!inRange(r.startPort, 0, 65535)) throw invalidArgument(`${f}.start_port`, 'must be 0 to 65535');
    if (!inRange(r.endPort, r.startPort, 65535))
      throw invalidArgument(`${f}.end_port`, `must be ${r.startPort} (start_port) to 65535`);
    for (let j = 0; j < i; j++) {
      const o = c.rules[j]!;
      if (r.startPort <= o.endPort && o.startPort <= r.endPort && protocolsMeet(r.protocol, o.protocol))
        throw invalidArgument(
          f,
          `ports ${r.startPort}-${r.endPort} (${r.protocol}) overlap port_rules[${j}] (${o.startPort}-${o.endPort} ${o.protocol})`,
        );
    }
  });
  if (c.members.length > MAX_MEMBERS)
    throw invalidArgument(`${field}.members`, `at most ${MAX_MEMBERS} members, got ${c.members.length}`);
  const byPriority = new Map<number, string>();
  const byVm = new Set<string>();
  c.members.forEach((m, i) => {
    const f = `${field}.members[${i}]`;
    if (!m.vmId) throw invalidArgument(`${f}.vm_id`, 'is required');
    if (byVm.has(m.vmId)) throw invalidArgument(`${f}.vm_id`, `VM ${quote(m.vmId)} is already a member`);
    byVm.add(m.vmId);
    if (!inRange(m.priority, 1, MAX_MEMBERS)) throw invalidArgument(`${f}.host_priority`, 'must be 1 to 32');
    const holder = byPriority.get(m.priority);
    if (holder !== undefined)
      throw invalidArgument(
        `${f}.host_priority`,
        `priority ${m.priority} is already held by member ${quote(holder)}; each member needs its own`,
      );
    byPriority.set(m.priority, m.vmId);
    if (!inRange(m.loadWeight, 0, 100)) throw invalidArgument(`${f}.load_weight`, 'must be 0 to 100');
    m.rules.forEach((s, k) => {
      const sf = `${f}.rule_settings[${k}]`;
      if (!c.rules.some((r) => r.startPort === s.startPort))
        throw invalidArgument(`${sf}.start_port`, `no port rule starts at port ${s.startPort}`);
      if (!inRange(s.loadWeight, 0, 100)) throw invalidArgument(`${sf}.load_weight`, 'must be 0 to 100');
      if (!inRange(s.handlingPriority, 1, MAX_MEMBERS))
        throw invalidArgument(`${sf}.handling_priority`, 'must be 1 to 32');
    });
  });
  c.rules.forEach((r, i) => {
    if (r.filtering !== 'single') return;
    const seen = new Map<number, string>();
    for (const m of c.members) {
      const h = memberRuleSettings(c, m)[i]!.handlingPriority;
      const other = seen.get(h);
      if (other !== undefined)
        throw invalidArgument(
          `${field}.port_rules[${i}]`,
          `members ${quote(other)} and ${quote(m.vmId)} both have handling priority ${h} for this single-host rule`,
        );
      seen.set(h, m.vmId);
    }
  });
}

/**
 * Refuses a member whose VM has no address in the virtual IP's network on the cluster's switch:
 * it could never receive the cluster's traffic. `adaptersOf` gives a VM's adapters, or undefined
 * for a VM the caller does not know (which the caller reports itself).
 */
export function checkMemberNetworks(
  c: NlbClusterConfig,
  adaptersOf: (vmId: string) => { switchName: string; ip?: Cidr | undefined }[] | undefined,
  field = 'cluster',
): void {
  c.members.forEach((m, i) => {
    const adapters = adaptersOf(m.vmId);
    if (!adapters) return;
    const on = adapters.filter((a) => a.switchName === c.switchName);
    const f = `${field}.members[${i}].vm_id`;
    if (on.length === 0)
      throw invalidArgument(f, `VM ${quote(m.vmId)} has no adapter on switch ${quote(c.switchName)}`);
    if (!on.some((a) => a.ip && sameNetwork(a.ip.ip, c.vip, a.ip.prefix))) {
      const have = on.map((a) => (a.ip ? formatCidr(a.ip) : 'no address')).join(', ');
      throw invalidArgument(
        f,
        `VM ${quote(m.vmId)} has no address in the network of the virtual IP ${formatIpv4(c.vip)} on switch ${quote(c.switchName)} (its adapters there: ${have})`,
      );
    }
  });
}

// --- from the API's messages ---

export const NLB_MODES: Readonly<Record<string, NlbMacMode>> = {
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
const AFFINITY: Record<string, NlbAffinityName> = {
  NLB_AFFINITY_UNSPECIFIED: 'single',
  NLB_AFFINITY_NONE: 'none',
  NLB_AFFINITY_SINGLE: 'single',
  NLB_AFFINITY_NETWORK: 'network',
};

function protocolOf(text: string, field: string): RuleProtocol {
  const p = (text || 'both').toLowerCase();
  if (p !== 'tcp' && p !== 'udp' && p !== 'both')
    throw invalidArgument(field, `${quote(text)} is not tcp, udp or both`);
  return p;
}

/** The port rules of a message, Windows' default rule when there are none. */
export function portRulesOf(rules: readonly pb.NlbPortRule__Output[], field: string): PortRule[] {
  if (rules.length === 0) return [DEFAULT_PORT_RULE];
  return rules.map((r, i) => ({
    startPort: r.startPort,
    endPort: r.endPort,
    protocol: protocolOf(r.protocol, `${field}[${i}].protocol`),
    filtering: FILTERING[r.filteringMode] ?? 'multiple',
    affinity: AFFINITY[r.affinity] ?? 'single',
  }));
}

/** An NLB cluster message as the members use it, refused with the field and reason if it is wrong. */
export function nlbClusterConfig(c: pb.NlbCluster__Output, field: string): NlbClusterConfig {
  if (!c.id) throw invalidArgument(`${field}.id`, 'is required');
  const vip = parseIpv4(c.virtualIp);
  if (vip === undefined)
    throw invalidArgument(`${field}.virtual_ip`, `${quote(c.virtualIp)} is not an IPv4 address`);
  const mode = NLB_MODES[c.mode];
  if (!mode) throw invalidArgument(`${field}.mode`, 'must be UNICAST, MULTICAST or IGMP_MULTICAST');
  const config: NlbClusterConfig = {
    id: c.id,
    vip,
    mode,
    switchName: c.switchName,
    rules: portRulesOf(c.portRules, `${field}.port_rules`),
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
