// IPv4 addresses as the API writes them: dotted decimal, and with a prefix length ("10.0.0.11/24").

/** An IPv4 address as an unsigned 32-bit number; undefined when the text is not dotted decimal. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export interface Cidr {
  ip: number;
  prefix: number;
}

/** "10.0.0.11/24" into an address and a prefix length 1 to 32; undefined when malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIpv4(text.slice(0, slash));
  const p = text.slice(slash + 1);
  if (ip === undefined || !/^[0-9]{1,2}$/.test(p)) return undefined;
  const prefix = Number(p);
  return prefix >= 1 && prefix <= 32 ? { ip, prefix } : undefined;
}

export function formatIpv4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

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
