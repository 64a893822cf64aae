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
