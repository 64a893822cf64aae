// Link and network addresses: MAC text, IPv4 as 32-bit numbers, and the MACs Windows NLB
// derives from a cluster's virtual IP.
import { parseCidr, parseIpv4, type Cidr } from '@hyperfarm/api';

export { parseCidr, parseIpv4, type Cidr };

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

export function formatIpv4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

const octets = (ip: number): number[] => [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];

/** The network mask of a prefix length, as a number. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function sameNetwork(a: number, b: number, prefix: number): boolean {
  const m = prefixMask(prefix);
  return (a & m) >>> 0 === (b & m) >>> 0;
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4((c.ip & prefixMask(c.prefix)) >>> 0)}/${c.prefix}`;
}

/** 224.0.0.0/4, which a cluster IP must not be (NLB's multicast mode is layer 2, not IP multicast). */
export function isIpMulticast(ip: number): boolean {
  return ip >>> 28 === 0xe;
}

const hex2 = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

export type NlbMacMode = 'unicast' | 'multicast' | 'igmp';

/**
 * The cluster MAC Windows NLB derives from the virtual IP W.X.Y.Z: 02-BF-W-X-Y-Z in unicast
 * mode, 03-BF-W-X-Y-Z in multicast mode, and 01-00-5E-7F-Y-Z (the MAC of IP multicast group
 * 239.255.Y.Z) in IGMP multicast mode.
 */
export function nlbClusterMac(mode: NlbMacMode, vip: number): Mac {
  const [w, x, y, z] = octets(vip) as [number, number, number, number];
  if (mode === 'igmp') return ['01', '00', '5E', '7F', hex2(y), hex2(z)].join('-');
  return [mode === 'unicast' ? '02' : '03', 'BF', hex2(w), hex2(x), hex2(y), hex2(z)].join('-');
}

/**
 * In unicast mode every member's adapter carries the cluster MAC, so a switch must never learn
 * it: a member sends with the source MAC 02-h-W-X-Y-Z, h being its host priority.
 */
export function nlbMaskedSourceMac(priority: number, vip: number): Mac {
  const [w, x, y, z] = octets(vip) as [number, number, number, number];
  return ['02', hex2(priority), hex2(w), hex2(x), hex2(y), hex2(z)].join('-');
}
