import type { pb } from '@hyperfarm/api';
import { nlbClusterMessage, switchView, type FarmState } from '../fsm/index.js';

/**
 * The network configuration one host's agent gets: the External switches and its own Internal
 * and Private ones (two hosts may have a Private switch of the same name), every NLB cluster
 * whose switch it has (members whose VM no longer exists left out), and the other hosts as
 * tunnel peers. A tunnel is an uplink of the External switches only, so a farm without one gives
 * no peers: each agent would otherwise hold a stream to every other host for nothing (a
 * full mesh, a million streams at 1,000 hosts, which kept bench:placement's hosts from coming
 * Up). Pure: the same state gives the same configuration, without a revision, which the pusher
 * stamps.
 */
export function hostNetworkConfig(
  s: FarmState,
  hostId: string,
  allPeers?: { hostId: string; address: string }[],
): Omit<pb.NetworkConfig__Output, 'revision'> {
  const switches = [...s.switches.values()]
    .filter((w) => w.type === 'SWITCH_TYPE_EXTERNAL' || w.hostId === hostId)
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  const names = new Set(switches.map((w) => w.name));
  const nlbClusters = [...s.nlbClusters.values()]
    .filter((c) => names.has(c.switchName))
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((c) => nlbClusterMessage({ ...c, members: c.members.filter((m) => s.vms.has(m.vmId)) }));
  const peers = (allPeers ?? tunnelPeers(s)).filter((p) => p.hostId !== hostId);
  return { switches: switches.map(switchView), nlbClusters, peers };
}

/**
 * Every host as a tunnel peer, in id order, or none in a farm without an External switch. The
 * pusher computes this once per round for all hosts and passes it to `hostNetworkConfig`.
 */
export function tunnelPeers(s: FarmState): { hostId: string; address: string }[] {
  if (![...s.switches.values()].some((w) => w.type === 'SWITCH_TYPE_EXTERNAL')) return [];
  return [...s.hosts.values()]
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((h) => ({ hostId: h.id, address: h.address }));
}
