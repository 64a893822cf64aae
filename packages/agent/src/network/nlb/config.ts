import { invalidArgument } from '@hyperfarm/api';
import { formatCidr, formatIpv4, isIpMulticast, sameNetwork, type Cidr, type NlbMacMode } from '../addr.js';
import type { Protocol } from '../frame.js';
import type { Affinity } from './buckets.js';

// An NLB cluster's configuration as the members use it, and the checks that refuse a bad one
// with the field and the reason before any member acts on it.

export type FilteringMode = 'multiple' | 'single' | 'disabled';
export type RuleProtocol = 'tcp' | 'udp' | 'both';

export interface PortRule {
  startPort: number;
  endPort: number;
  protocol: RuleProtocol;
  filtering: FilteringMode;
  affinity: Affinity;
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

export const covers = (r: PortRule, protocol: Protocol): boolean =>
  r.protocol === 'both' || (r.protocol === 'tcp') === (protocol === 'conn');

const protocolsMeet = (a: RuleProtocol, b: RuleProtocol): boolean => a === 'both' || b === 'both' || a === b;

/** The index of the rule covering a port and protocol, or -1 (the default host's traffic). */
export function ruleIndex(rules: readonly PortRule[], port: number, protocol: Protocol): number {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (port >= r.startPort && port <= r.endPort && covers(r, protocol)) return i;
  }
  return -1;
}

/** A member's effective settings for each rule of the cluster, in rule order. */
export function memberRuleSettings(cluster: NlbClusterConfig, m: NlbMemberConfig): MemberRuleSetting[] {
  return cluster.rules.map((r) => {
    const own = m.rules.find((s) => s.startPort === r.startPort);
    return (
      own ?? {
        startPort: r.startPort,
        loadWeight: m.loadWeight,
        handlingPriority: m.priority,
      }
    );
  });
}

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
    if (byVm.has(m.vmId)) throw invalidArgument(`${f}.vm_id`, `VM '${m.vmId}' is already a member`);
    byVm.add(m.vmId);
    if (!inRange(m.priority, 1, MAX_MEMBERS)) throw invalidArgument(`${f}.host_priority`, 'must be 1 to 32');
    const holder = byPriority.get(m.priority);
    if (holder !== undefined)
      throw invalidArgument(
        `${f}.host_priority`,
        `priority ${m.priority} is already held by member '${holder}'; each member needs its own`,
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
          `members '${other}' and '${m.vmId}' both have handling priority ${h} for this single-host rule`,
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
      throw invalidArgument(f, `VM '${m.vmId}' has no adapter on switch '${c.switchName}'`);
    if (!on.some((a) => a.ip && sameNetwork(a.ip.ip, c.vip, a.ip.prefix))) {
      const have = on.map((a) => (a.ip ? formatCidr(a.ip) : 'no address')).join(', ');
      throw invalidArgument(
        f,
        `VM '${m.vmId}' has no address in the network of the virtual IP ${formatIpv4(c.vip)} on switch '${c.switchName}' (its adapters there: ${have})`,
      );
    }
  });
}
