// Link and network addresses: MAC text, IPv4 as 32-bit numbers, and the MACs Windows NLB
// derives from a cluster's virtual IP.
import {
  formatCidr,
  formatIpv4,
  isIpMulticast,
  parseCidr,
  parseIpv4,
  prefixMask,
  sameNetwork,
  type Cidr,
} from '@hyperfarm/api';

export { formatCidr, formatIpv4, isIpMulticast, parseCidr, parseIpv4, prefixMask, sameNetwork, type Cidr };

/** A MAC address as Hyper-V writes it: six upper-case hex octets joined by '-'. */
export type Mac = string;

export const BROADCAST_MAC: Mac = 'FF-FF-FF-FF-FF-FF';

const MAC_TEXT = /^[0-9A-F]{2}(-[0-9A-F]{2}){5}$/;

export function isMac(text: string): boolean {
  return MAC_TEXT.test(text);
}

/** Group addresses (broadcast and multicast) have the I/G bit, the low bit of the first octet. */
export function isGroupMac(mac: Mac): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 1) === 1;
}

export function macFromBytes(bytes: ArrayLike<number>): Mac {
  let out = '';
  for (let i = 0; i < 6; i++) {
    if (i > 0) out += '-';
    out += (bytes[i]! & 0xff).toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export function macToBytes(mac: Mac): number[] {
  return mac.split('-').map((h) => parseInt(h, 16));
}

const octets = (ip: number): number[] => [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];

const hex2 = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

export { nlbClusterMac, type NlbMacMode } from '@hyperfarm/api';

/**
 * In unicast mode every member's adapter carries the cluster MAC, so a switch must never learn
 * it: a member sends with the source MAC 02-h-W-X-Y-Z, h being its host priority.
 */
export function nlbMaskedSourceMac(priority: number, vip: number): Mac {
  const [w, x, y, z] = octets(vip) as [number, number, number, number];
  return ['02', hex2(priority), hex2(w), hex2(x), hex2(y), hex2(z)].join('-');
}
