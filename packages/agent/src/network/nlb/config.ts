import type { PortRule } from '@hyperfarm/api';
import type { Protocol } from '../frame.js';

// An NLB cluster's configuration as the members use it. Its shape and the checks that refuse a
// bad one are @hyperfarm/api's, shared with the daemon; what only a member needs is here.

export {
  checkMemberNetworks,
  DEFAULT_HEARTBEAT_PERIOD_MS,
  DEFAULT_HEARTBEAT_THRESHOLD,
  DEFAULT_PORT_RULE,
  EQUAL_LOAD_WEIGHT,
  MAX_MEMBERS,
  MAX_PORT_RULES,
  memberRuleSettings,
  validateNlbCluster,
  type FilteringMode,
  type MemberRuleSetting,
  type NlbClusterConfig,
  type NlbMemberConfig,
  type PortRule,
  type RuleProtocol,
} from '@hyperfarm/api';

export const covers = (r: PortRule, protocol: Protocol): boolean =>
  r.protocol === 'both' || (r.protocol === 'tcp') === (protocol === 'conn');

/** The index of the rule covering a port and protocol, or -1 (the default host's traffic). */
export function ruleIndex(rules: readonly PortRule[], port: number, protocol: Protocol): number {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (port >= r.startPort && port <= r.endPort && covers(r, protocol)) return i;
  }
  return -1;
}
