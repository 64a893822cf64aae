/** Numbers fixed by Microsoft's "Virtual Hard Disk Image Format Specification" (v1.0, 2006). */

export const SECTOR_SIZE = 512;
export const FOOTER_SIZE = 512;
export const DYNAMIC_HEADER_SIZE = 1024;

export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_HEADER_COOKIE = 'cxsparse';

/** Bit 1 ("reserved") must always be set, per the spec. */
export const FEATURES_RESERVED = 0x00000002;
export const FORMAT_VERSION = 0x00010000;
export const DYNAMIC_HEADER_VERSION = 0x00010000;

/** 0xFFFFFFFF_FFFFFFFF: "no next structure" (fixed disks' data offset, the header's data offset). */
export const NO_DATA_OFFSET = 0xffffffffffffffffn;
export const BAT_UNALLOCATED = 0xffffffff;

export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;

/** Seconds between 1970-01-01 and 2000-01-01 UTC: VHD timestamps count from the latter. */
export const VHD_EPOCH_UNIX_SECONDS = 946684800;

/** The spec's largest CHS geometry (65535 cylinders, 16 heads, 255 sectors per track). */
export const MAX_CHS_SECTORS = 65535 * 16 * 255;

/** Disk types (footer field "Disk Type"). */
export enum DiskType {
  Fixed = 2,
  Dynamic = 3,
  Differencing = 4,
}

export type DiskKind = 'fixed' | 'dynamic' | 'differencing';

export function diskKind(type: DiskType): DiskKind {
  switch (type) {
    case DiskType.Fixed:
      return 'fixed';
    case DiskType.Dynamic:
      return 'dynamic';
    case DiskType.Differencing:
      return 'differencing';
  }
}

/** Parent locator platform codes (four ASCII characters read as a big-endian uint32). */
export const PLATFORM_NONE = 0;
export const PLATFORM_W2RU = 0x57327275; // 'W2ru': relative Windows path, UTF-16LE
export const PLATFORM_W2KU = 0x57326b75; // 'W2ku': absolute Windows path, UTF-16LE
export const PLATFORM_MACX = 0x4d616358; // 'MacX': Mac OS X file URL (RFC 2396), UTF-8

/** The largest virtual size we accept: 2040 GiB, the spec's practical VHD limit. */
export const MAX_VIRTUAL_SIZE = 2040 * 1024 * 1024 * 1024;
