/**
 * The VHD checksum: the one's complement of the sum of all bytes of the
 * structure, computed with the checksum field itself read as zero.
 */
export function vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum = (sum + (bytes[i] as number)) >>> 0;
  }
  return ~sum >>> 0;
}
